from __future__ import annotations

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
