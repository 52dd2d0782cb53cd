"""Audit records: one JSON object per transition, built from the grant and its status.

The shape is fixed here, away from logging, so every transition of every kind writes the same
fields and tests can check a record without a running operator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from lapse.core.bindings import format_time
from lapse.core.grants import GrantKey
from lapse.core.models import AccessRequestStatus, GrantStatus, RoleRef


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
    if isinstance(status, AccessRequestStatus):
        if status.pull_request or status.commit:
            record["pullRequest"] = status.pull_request
            record["commit"] = status.commit
        approvers = [a.user.username for a in status.approvals if a.decision == "Approve"]
        if approvers:
            record["approvedBy"] = approvers
    record.update(extra)
    record["id"] = compute_audit_id(record)
    return record


# Actions that happen at most once in an owner's life: the phases it enters (phases only move
# forward; an ended owner never comes back). Their id leaves out the time, so the same
# transition written again after a crash or a retried write carries the same id.
ONCE_PER_OWNER = frozenset(
    {"pending", "approved", "granted", "active", "denied", "invalid", "expired", "revoked"}
)


def compute_audit_id(record: Mapping[str, Any]) -> str:
    """A stable id for an audit record, so a consumer can drop the repeats that at-least-once
    delivery brings (see docs/ha.md): owner UID, action and the grant's expiry for a phase;
    the time and message as well for an action that may recur (a restored binding)."""
    parts = [str(record.get("uid") or ""), str(record.get("action")), str(record.get("expiresAt"))]
    if record.get("action") not in ONCE_PER_OWNER:
        parts += [str(record.get("time")), str(record.get("message"))]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]
