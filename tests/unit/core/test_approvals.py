"""What verified decisions add up to: four eyes, one denial, distinct approvers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from lapse.core.actions import Action, ObjectIdentity, build_record
from lapse.core.admission import compute_request_refusal
from lapse.core.approvals import (
    ApprovalOutcome,
    build_request_authority,
    compute_approval_deadline,
    compute_approval_state,
    compute_gitops_ledger_key,
    compute_ledger_prune,
)
from lapse.core.bindings import format_time
from lapse.core.models import AccessPolicy, AccessRequest, Phase, Subject, SubjectKind, UserInfo
from lapse.core.policy import Outcome, compute_decision

KEY = b"k" * 32
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
TARGET = ObjectIdentity("AccessRequest", "payments", "fix", "uid-1")
ALICE = UserInfo(username="alice", groups=["payments-devs"])
SUBJECT = Subject(kind=SubjectKind.USER, name="alice")


def policy(required: int = 2, timeout: str = "3s") -> AccessPolicy:
    return AccessPolicy.model_validate(
        {
            "metadata": {"name": "payments"},
            "spec": {
                "requesters": {"groups": ["payments-devs"]},
                "approval": {
                    "mode": "Approvers",
                    "approvers": {"groups": ["payments-leads"]},
                    "required": required,
                    "timeout": timeout,
                },
            },
        }
    )


def lead(name: str) -> UserInfo:
    return UserInfo(username=name, groups=["payments-leads"])


def record(action: Action, user: UserInfo, minute: int = 0) -> object:
    return build_record(action, user, "", NOW + timedelta(minutes=minute), TARGET, KEY)


def state(*records: object, required: int = 2) -> object:
    return compute_approval_state(records, policy(required), ALICE, SUBJECT)  # type: ignore[arg-type]


def test_two_distinct_approvers_approve() -> None:
    result = state(record(Action.APPROVE, lead("bob")), record(Action.APPROVE, lead("carol")))
    assert result.outcome == ApprovalOutcome.APPROVED  # type: ignore[attr-defined]
    assert result.approved_by == ["bob", "carol"]  # type: ignore[attr-defined]


def test_the_same_approver_twice_counts_once() -> None:
    result = state(record(Action.APPROVE, lead("bob")), record(Action.APPROVE, lead("bob"), 1))
    assert result.outcome == ApprovalOutcome.PENDING  # type: ignore[attr-defined]
    assert result.approved_by == ["bob"]  # type: ignore[attr-defined]
    assert result.ignored == 1  # type: ignore[attr-defined]


def test_the_requester_and_non_approvers_do_not_count() -> None:
    self_approval = UserInfo(username="alice", groups=["payments-leads"])
    result = state(
        record(Action.APPROVE, self_approval), record(Action.APPROVE, UserInfo(username="eve"))
    )
    assert result.outcome == ApprovalOutcome.PENDING  # type: ignore[attr-defined]
    assert result.approvals == ()  # type: ignore[attr-defined]


def test_one_denial_ends_it_and_later_approvals_do_not_matter() -> None:
    result = state(
        record(Action.APPROVE, lead("bob")),
        record(Action.DENY, lead("carol"), 1),
        record(Action.APPROVE, lead("dave"), 2),
    )
    assert result.outcome == ApprovalOutcome.DENIED  # type: ignore[attr-defined]
    assert result.deciding.username == "carol"  # type: ignore[attr-defined]
    assert [a.decision for a in result.approvals] == ["Approve", "Deny"]  # type: ignore[attr-defined]


def test_approval_reached_before_a_denial_stands() -> None:
    result = state(
        record(Action.APPROVE, lead("bob")), record(Action.DENY, lead("carol")), required=1
    )
    assert result.outcome == ApprovalOutcome.APPROVED  # type: ignore[attr-defined]


def test_the_requester_withdraws_a_pending_request() -> None:
    result = state(record(Action.REVOKE, ALICE))
    assert result.outcome == ApprovalOutcome.REVOKED  # type: ignore[attr-defined]


def test_ended_requests_take_no_decisions() -> None:
    authority = build_request_authority(Phase.DENIED, "fix", policy(), ALICE, SUBJECT, frozenset())
    assert set(authority.closed) == {Action.APPROVE, Action.DENY, Action.REVOKE}
    active = build_request_authority(Phase.ACTIVE, "fix", policy(), ALICE, SUBJECT, frozenset())
    assert set(active.closed) == {Action.APPROVE, Action.DENY}


def test_the_deadline_follows_the_policy_timeout() -> None:
    assert compute_approval_deadline(NOW, policy(timeout="3s")) == NOW + timedelta(seconds=3)
    assert compute_approval_deadline(NOW, None) == NOW + timedelta(hours=24)


def test_the_gitops_ledger_key_changes_with_commit_and_spec_only() -> None:
    spec = {"role": {"kind": "ClusterRole", "name": "edit"}}
    base = compute_gitops_ledger_key("payments", "fix", "abc", spec)
    assert base == compute_gitops_ledger_key("payments", "fix", "abc", dict(spec))
    assert base != compute_gitops_ledger_key("payments", "fix", "def", spec)
    assert base != compute_gitops_ledger_key("payments", "fix", "abc", {**spec, "duration": "2h"})
    assert base != compute_gitops_ledger_key("other", "fix", "abc", spec)


def test_ledger_entries_are_pruned_after_retention() -> None:
    entries = {
        "old": '{"consumedAt": "2029-01-01T00:00:00Z"}',
        "new": '{"consumedAt": "2030-01-01T11:00:00Z"}',
        "broken": "nonsense",
    }
    assert sorted(compute_ledger_prune(entries, NOW, timedelta(days=30))) == ["broken", "old"]


def gitops_policy() -> AccessPolicy:
    return AccessPolicy.model_validate(
        {
            "metadata": {"name": "gitops"},
            "spec": {
                "requesters": {"users": ["bob"], "groups": ["payments-devs"]},
                "roles": [{"kind": "ClusterRole", "name": "edit"}],
                "namespaces": ["payments"],
                "approval": {
                    "mode": "Approvers",
                    "trustedAppliers": {"users": [ARGOCD.username]},
                },
            },
        }
    )


ARGOCD = UserInfo(username="system:serviceaccount:argocd:argocd-application-controller")


def gitops_request(requester: UserInfo, subject: str | None) -> AccessRequest:
    spec: dict[str, object] = {
        "role": {"kind": "ClusterRole", "name": "edit"},
        "reason": "r",
        "requester": requester.to_wire(),
    }
    if subject:
        spec["subject"] = {"kind": "User", "name": subject}
    return AccessRequest.model_validate(
        {"metadata": {"name": "fix", "namespace": "payments"}, "spec": spec}
    )


def test_a_trusted_applier_approves_by_creating_for_an_eligible_subject() -> None:
    decision = compute_decision(gitops_request(ARGOCD, "bob"), [gitops_policy()])
    assert decision.outcome == Outcome.GRANT
    assert decision.reason == "GitOpsApproved"


def test_a_trusted_applier_cannot_grant_an_ineligible_subject() -> None:
    decision = compute_decision(gitops_request(ARGOCD, "eve"), [gitops_policy()])
    assert decision.outcome == Outcome.DENY
    assert decision.reason == "NoMatchingPolicy"
    assert "User eve" in decision.message


def test_only_trusted_appliers_name_a_subject() -> None:
    decision = compute_decision(gitops_request(ALICE, "bob"), [gitops_policy()])
    assert decision.reason == "SubjectNotAllowed"
    spec = gitops_request(ALICE, "bob").spec.to_wire()
    assert compute_request_refusal(spec, ALICE) is not None
    assert compute_request_refusal(spec, ARGOCD, trusted_applier=True) is None


def test_the_requester_of_an_approvers_policy_waits() -> None:
    decision = compute_decision(gitops_request(ALICE, None), [gitops_policy()])
    assert decision.outcome == Outcome.PENDING


def test_a_replayed_approval_is_kept_a_whole_retention_after_the_last_replay() -> None:
    """Retention deletes ended requests and a GitOps controller creates them again from Git,
    each time refused: the ledger must not forget the approval while that goes on, or the
    replay after it forgot would be granted."""
    consumed = format_time(NOW - timedelta(days=40))
    entries = {
        "replayed": json.dumps({"consumedAt": consumed, "replayedAt": format_time(NOW)}),
        "forgotten": json.dumps(
            {"consumedAt": consumed, "replayedAt": format_time(NOW - timedelta(days=31))}
        ),
    }
    assert compute_ledger_prune(entries, NOW, timedelta(days=30)) == ["forgotten"]
