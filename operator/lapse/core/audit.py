"""Audit records: one JSON object per transition, built from the grant and its status.

The shape is fixed here, away from logging, so every transition of every kind writes the same
fields and tests can check a record without a running operator.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from lapse.core.bindings import format_time
from lapse.core.grants import GrantKey
from lapse.core.models import GrantStatus, RoleRef


def build_audit_record(
    *,
    action: str,
    key: GrantKey,
    status: GrantStatus,
    role: RoleRef | None,
    target_namespace: str | None,
    reason: str,
    message: str,
    now: datetime,
    **extra: str | None,
) -> dict[str, Any]:
    requester = status.requester
    subject = status.subject
    record: dict[str, Any] = {
        "time": format_time(now),
        "action": action,
        "kind": key.kind,
        "namespace": key.namespace,
        "name": key.name,
        "uid": key.uid,
        "requester": requester.username if requester else None,
        "subject": f"{subject.kind}:{subject.name}" if subject else None,
        "role": f"{role.kind}/{role.name}" if role else None,
        "targetNamespace": target_namespace,
        "expiresAt": format_time(status.expires_at) if status.expires_at else None,
        "policy": status.policy,
        "reason": reason,
        "message": message,
    }
    record.update(extra)
    return record
