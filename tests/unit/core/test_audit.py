from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from lapse.core.audit import build_audit_record
from lapse.core.grants import GrantKey
from lapse.core.models import AccessRequestStatus, RoleRef, Subject, UserInfo
from tests.unit.builders import NOW

FIELDS = {
    "time",
    "action",
    "kind",
    "namespace",
    "name",
    "uid",
    "requester",
    "subject",
    "role",
    "targetNamespace",
    "expiresAt",
    "policy",
    "reason",
    "message",
    "id",
}


def test_record_has_every_field() -> None:
    status = AccessRequestStatus(
        requester=UserInfo(username="alice"),
        subject=Subject(kind="User", name="alice"),
        expires_at=NOW,
        policy="payments",
    )
    record = build_audit_record(
        action="granted",
        key=GrantKey("AccessRequest", "payments", "fix", "u1"),
        status=status,
        role=RoleRef(kind="ClusterRole", name="edit"),
        target_namespace="payments",
        reason="Granted",
        message="Granted.",
        now=NOW,
    )
    assert set(record) == FIELDS
    assert record["requester"] == "alice"
    assert record["role"] == "ClusterRole/edit"
    assert record["expiresAt"] == "2030-01-02T03:04:05Z"


def test_audit_id_names_a_transition_not_a_write() -> None:
    """A phase written twice (a retried write, a crash before the status landed) keeps its id,
    so consumers can drop the repeat; another owner or another action gets another id."""
    status = AccessRequestStatus(requester=UserInfo(username="alice"), expires_at=NOW)

    def record(action: str, uid: str, now: datetime) -> dict[str, Any]:
        return build_audit_record(
            action=action,
            key=GrantKey("AccessRequest", "payments", "fix", uid),
            status=status,
            role=RoleRef(kind="ClusterRole", name="edit"),
            target_namespace="payments",
            reason="Granted",
            message="Granted.",
            now=now,
        )

    first = record("granted", "u1", NOW)["id"]
    assert record("granted", "u1", NOW + timedelta(seconds=3))["id"] == first
    assert record("granted", "u2", NOW)["id"] != first
    assert record("expired", "u1", NOW)["id"] != first
