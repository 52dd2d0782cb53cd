from __future__ import annotations

from datetime import timedelta

import pytest

from lapse.core.lifecycle import (
    FinalPhaseError,
    build_status_patch,
    compute_granted,
    compute_transition,
    is_due,
)
from lapse.core.models import AccessRequestStatus, BindingRef, Phase, Subject, UserInfo
from tests.unit.builders import NOW

ALICE = UserInfo(username="alice", groups=["payments-devs"])


def granted() -> AccessRequestStatus:
    return compute_granted(
        AccessRequestStatus(),
        now=NOW,
        generation=1,
        message="Granted.",
        requester=ALICE,
        subject=Subject(kind="User", name="alice"),
        policy="payments",
        duration=timedelta(seconds=20),
        granted_at=NOW,
        bindings=[BindingRef(kind="RoleBinding", name="b", namespace="payments", uid="u")],
    )


def test_grant_sets_the_clock_from_granted_at() -> None:
    status = granted()
    assert status.phase == Phase.ACTIVE
    assert status.expires_at == NOW + timedelta(seconds=20)
    assert status.duration == "20s"
    assert [c.type for c in status.conditions] == ["Approved", "Active"]
    assert all(c.status == "True" for c in status.conditions)
    assert [h.phase for h in status.history] == [Phase.ACTIVE]


def test_expiry_ends_and_keeps_history() -> None:
    later = NOW + timedelta(seconds=20)
    status = compute_transition(granted(), Phase.EXPIRED, "Expired", "Over.", later, 1)
    assert status.ended_at == later
    assert [h.phase for h in status.history] == [Phase.ACTIVE, Phase.EXPIRED]
    active = next(c for c in status.conditions if c.type == "Active")
    assert (active.status, active.last_transition_time) == ("False", later)
    approved = next(c for c in status.conditions if c.type == "Approved")
    assert approved.status == "True"


@pytest.mark.parametrize("ended", [Phase.EXPIRED, Phase.DENIED, Phase.REVOKED, Phase.INVALID])
def test_ended_is_final(ended: Phase) -> None:
    status = compute_transition(AccessRequestStatus(), ended, "X", "x.", NOW, 1)
    for phase in Phase:
        with pytest.raises(FinalPhaseError):
            compute_transition(status, phase, "Again", "again.", NOW, 1)


def test_denied_sets_approved_false() -> None:
    status = compute_transition(
        AccessRequestStatus(), Phase.DENIED, "NoMatchingPolicy", ".", NOW, 3
    )
    assert {c.type: c.status for c in status.conditions} == {"Approved": "False", "Active": "False"}
    assert status.observed_generation == 3


def test_is_due() -> None:
    status = granted()
    assert not is_due(status, NOW)
    assert is_due(status, NOW + timedelta(seconds=20))
    assert not is_due(AccessRequestStatus(), NOW)


def test_status_patch_is_camel_case_and_complete() -> None:
    patch = build_status_patch(granted())
    assert set(patch) == {"status"}
    assert patch["status"]["expiresAt"].endswith("Z")
    assert patch["status"]["bindings"][0]["uid"] == "u"
    assert "expires_at" not in patch["status"]
