from __future__ import annotations

from lapse.core.admission import compute_request_refusal, compute_requester, compute_update_refusal
from lapse.core.models import UserInfo

ALICE = UserInfo(username="alice", groups=["devs"])
SPEC = {"role": {"kind": "ClusterRole", "name": "edit"}, "reason": "Fix.", "duration": "1h"}


def test_requester_comes_from_userinfo() -> None:
    requester = compute_requester({"username": "alice", "groups": ["devs"], "uid": "42"})
    assert requester == UserInfo(username="alice", groups=["devs"], uid="42")
    assert compute_requester({"username": "bob"}).uid is None


def test_plain_request_admitted() -> None:
    assert compute_request_refusal(SPEC, ALICE) is None
    yourself = {**SPEC, "subject": {"kind": "User", "name": "alice"}}
    assert compute_request_refusal(yourself, ALICE) is None


def test_someone_else_as_subject_refused() -> None:
    for subject in ({"kind": "User", "name": "bob"}, {"kind": "Group", "name": "devs"}):
        refusal = compute_request_refusal({**SPEC, "subject": subject}, ALICE)
        assert refusal is not None and "only yourself" in refusal


def test_malformed_spec_refused_with_the_field() -> None:
    refusal = compute_request_refusal({**SPEC, "duration": "1d"}, ALICE)
    assert refusal is not None and refusal.startswith("spec.duration")


def test_anonymous_refused() -> None:
    assert compute_request_refusal(SPEC, UserInfo(username="")) is not None


def test_spec_is_immutable() -> None:
    assert compute_update_refusal(SPEC, dict(SPEC)) is None
    refusal = compute_update_refusal(SPEC, {**SPEC, "duration": "4h"})
    assert refusal is not None and "immutable" in refusal
    stolen = {**SPEC, "requester": {"username": "bob"}}
    assert compute_update_refusal({**SPEC, "requester": {"username": "alice"}}, stolen)
