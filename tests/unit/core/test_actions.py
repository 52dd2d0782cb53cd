"""Action annotations and signed decision records: who may act, and what verifies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from lapse.core.actions import (
    DECISIONS_ANNOTATION,
    Action,
    Authority,
    ObjectIdentity,
    build_record,
    compute_action_admission,
    compute_action_refusal,
    compute_annotations_refusal,
    compute_raw_actions,
    compute_verified_decisions,
    format_decisions,
    sign_requester,
    verify_record,
    verify_requester,
)
from lapse.core.models import Identities, Subject, SubjectKind, UserInfo

KEY = b"k" * 32
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
TARGET = ObjectIdentity("AccessRequest", "payments", "fix", "uid-1")
ALICE = UserInfo(username="alice", groups=["payments-devs"])
BOB = UserInfo(username="bob", groups=["payments-leads"])
MALLORY = UserInfo(username="mallory", groups=["others"])
ADMIN = UserInfo(username="root", groups=["lapse-admins"])


def authority(**changes: object) -> Authority:
    base: dict[str, object] = {
        "actions": frozenset({Action.APPROVE, Action.DENY, Action.REVOKE}),
        "requester": ALICE,
        "subject": Subject(kind=SubjectKind.USER, name="alice"),
        "approvers": Identities(groups=["payments-leads"]),
        "approvers_of": "AccessPolicy payments",
        "admin_groups": frozenset({"lapse-admins"}),
    }
    base.update(changes)
    return Authority(**base)  # type: ignore[arg-type]


def test_an_approver_may_approve_and_deny() -> None:
    assert compute_action_refusal(Action.APPROVE, BOB, authority()) is None
    assert compute_action_refusal(Action.DENY, BOB, authority()) is None


def test_the_requester_never_approves_even_as_an_approver() -> None:
    lead_alice = UserInfo(username="alice", groups=["payments-leads"])
    refusal = compute_action_refusal(Action.APPROVE, lead_alice, authority())
    assert refusal == "alice may not approve their own request."


def test_the_subject_never_approves() -> None:
    carol = UserInfo(username="carol", groups=["payments-leads"])
    named = authority(subject=Subject(kind=SubjectKind.USER, name="carol"), requester=ADMIN)
    refusal = compute_action_refusal(Action.APPROVE, carol, named)
    assert refusal == "carol may not approve a request that grants them access."


def test_a_non_approver_is_told_whose_approver_they_are_not() -> None:
    refusal = compute_action_refusal(Action.APPROVE, MALLORY, authority())
    assert refusal == "mallory is not an approver of AccessPolicy payments."
    assert compute_action_refusal(Action.DENY, MALLORY, authority(approvers=None)) is not None


def test_revoke_is_for_requester_subject_approver_and_admins() -> None:
    for user in (ALICE, BOB, ADMIN):
        assert compute_action_refusal(Action.REVOKE, user, authority()) is None
    assert "may not revoke" in str(compute_action_refusal(Action.REVOKE, MALLORY, authority()))


def test_closed_actions_and_foreign_actions_are_refused() -> None:
    closed = authority(closed={Action.APPROVE: "AccessRequest fix is Denied"})
    refusal = compute_action_refusal(Action.APPROVE, BOB, closed)
    assert refusal == "bob may not approve: AccessRequest fix is Denied."
    assert "does not apply" in str(compute_action_refusal(Action.REVIEW, BOB, authority()))


def test_records_verify_only_for_their_object_and_key() -> None:
    record = build_record(Action.APPROVE, BOB, "ok", NOW, TARGET, KEY)
    assert verify_record(record, TARGET, KEY)
    assert not verify_record(record, TARGET, b"x" * 32)
    other = ObjectIdentity("AccessRequest", "payments", "fix", "uid-2")
    assert not verify_record(record, other, KEY)
    renamed = ObjectIdentity("AccessRequest", "payments", "other", "uid-1")
    assert not verify_record(record, renamed, KEY)
    tampered = record.model_copy(update={"username": "carol"})
    assert not verify_record(tampered, TARGET, KEY)
    unsigned = record.model_copy(update={"signature": ""})
    assert not verify_record(unsigned, TARGET, KEY)


def test_verified_decisions_keep_good_records_and_count_the_rest() -> None:
    good = build_record(Action.APPROVE, BOB, "ok", NOW, TARGET, KEY)
    foreign = build_record(Action.APPROVE, BOB, "ok", NOW, TARGET, b"y" * 32)
    text = json.dumps([*json.loads(format_decisions([good, foreign])), {"nonsense": 1}, "x"])
    found = compute_verified_decisions({DECISIONS_ANNOTATION: text}, TARGET, KEY)
    assert found.records == (good,)
    assert found.forged == 3
    empty = compute_verified_decisions({DECISIONS_ANNOTATION: "not json"}, TARGET, KEY)
    assert empty.records == () and empty.forged == 0


def test_admission_turns_an_action_into_a_signed_record() -> None:
    admission = compute_action_admission(
        {}, {"lapse.dev/approve": "looks fine"}, BOB, authority(), TARGET, KEY, NOW
    )
    assert admission.refusal is None
    assert admission.annotations["lapse.dev/approve"] is None
    stored = admission.annotations[DECISIONS_ANNOTATION]
    found = compute_verified_decisions({DECISIONS_ANNOTATION: str(stored)}, TARGET, KEY)
    assert [(r.action, r.username, r.comment) for r in found.records] == [
        (Action.APPROVE, "bob", "looks fine")
    ]
    # A second decision is appended to the first.
    old = {DECISIONS_ANNOTATION: str(stored)}
    later = NOW + timedelta(minutes=1)
    second = compute_action_admission(
        old, {**old, "lapse.dev/deny": "no"}, BOB, authority(), TARGET, KEY, later
    )
    found = compute_verified_decisions(
        {DECISIONS_ANNOTATION: str(second.annotations[DECISIONS_ANNOTATION])}, TARGET, KEY
    )
    assert [r.action for r in found.records] == [Action.APPROVE, Action.DENY]


def test_admission_refuses_refused_actors_and_hand_written_decisions() -> None:
    refused = compute_action_admission(
        {}, {"lapse.dev/approve": "me"}, ALICE, authority(), TARGET, KEY, NOW
    )
    assert refused.refusal == "alice may not approve their own request."
    handmade = compute_action_admission(
        {}, {DECISIONS_ANNOTATION: "[]"}, BOB, authority(), TARGET, KEY, NOW
    )
    assert (
        handmade.refusal == f"{DECISIONS_ANNOTATION} is written by Lapse alone; it cannot be set."
    )
    unrelated = compute_action_admission({}, {"team": "x"}, MALLORY, authority(), TARGET, KEY, NOW)
    assert unrelated.refusal is None and unrelated.annotations == {}


def test_new_objects_carry_no_decisions_and_raw_actions_are_spotted() -> None:
    assert compute_annotations_refusal({"lapse.dev/approve": "x"}) is not None
    assert compute_annotations_refusal({DECISIONS_ANNOTATION: "[]"}) is not None
    assert compute_annotations_refusal({"lapse.dev/pull-request": "x"}) is None
    assert compute_raw_actions({"lapse.dev/approve": "", "other": ""}) == [Action.APPROVE]


def test_the_requester_signature_binds_spec_name_and_time() -> None:
    spec = {"role": {"kind": "ClusterRole", "name": "edit"}, "requester": {"username": "alice"}}
    at = "2030-01-01T12:00:00Z"
    signature = sign_requester("AccessRequest", "payments", "fix", spec, at, KEY)

    def check(**changes: object) -> bool:
        args: dict[str, object] = {
            "kind": "AccessRequest",
            "namespace": "payments",
            "name": "fix",
            "spec": spec,
            "admitted_at": at,
            "created_at": NOW,
            "signature": signature,
            "key": KEY,
        }
        args.update(changes)
        return verify_requester(**args)  # type: ignore[arg-type]

    assert check()
    assert not check(spec={**spec, "requester": {"username": "bob"}})
    assert not check(name="other")
    assert not check(key=b"x" * 32)
    assert not check(signature=None)
    # Replayed onto an object created long after the signature was made.
    assert not check(created_at=NOW + timedelta(hours=1))
