from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lapse.core.models import LabelSelector
from lapse.core.policy import Outcome, compute_decision, matches_selector
from tests.unit.builders import make_policy, make_request


def test_auto_policy_grants_requested_duration() -> None:
    decision = compute_decision(make_request(duration="2h"), [make_policy()])
    assert decision.outcome == Outcome.GRANT
    assert decision.reason == "AutoApproved"
    assert decision.policy == "payments"
    assert decision.duration == timedelta(hours=2)


def test_default_duration_when_none_asked() -> None:
    decision = compute_decision(make_request(duration=None), [make_policy(defaultDuration="30m")])
    assert decision.duration == timedelta(minutes=30)


def test_no_policy_denies() -> None:
    decision = compute_decision(make_request(), [])
    assert (decision.outcome, decision.reason) == (Outcome.DENY, "NoMatchingPolicy")


def test_user_listed_by_name_matches() -> None:
    policy = make_policy(requesters={"users": ["alice"]})
    assert compute_decision(make_request(groups=()), [policy]).outcome == Outcome.GRANT


@pytest.mark.parametrize(
    ("request_kwargs", "reason"),
    [
        ({"groups": ("other",)}, "NoMatchingPolicy"),
        ({"role": "admin"}, "RoleNotAllowed"),
        ({"namespace": "ledger"}, "NamespaceNotAllowed"),
        ({"duration": "4h1s"}, "DurationExceedsPolicy"),
        ({"subject": {"kind": "User", "name": "bob"}}, "SubjectNotAllowed"),
        ({"subject": {"kind": "Group", "name": "alice"}}, "SubjectNotAllowed"),
    ],
)
def test_denials_name_their_reason(request_kwargs: dict[str, object], reason: str) -> None:
    decision = compute_decision(make_request(**request_kwargs), [make_policy()])  # type: ignore[arg-type]
    assert decision.outcome == Outcome.DENY
    assert decision.reason == reason
    assert decision.message.endswith(".")


def test_over_max_is_refused_never_capped() -> None:
    decision = compute_decision(make_request(duration="5h"), [make_policy(maxDuration="4h")])
    assert decision.reason == "DurationExceedsPolicy"
    assert "5h" in decision.message and "4h" in decision.message
    assert decision.duration is None


def test_missing_requester_is_invalid() -> None:
    decision = compute_decision(make_request(user=""), [make_policy()])
    assert (decision.outcome, decision.reason) == (Outcome.INVALID, "MissingRequester")


def test_malformed_duration_is_invalid() -> None:
    decision = compute_decision(make_request(duration="0s"), [make_policy()])
    assert (decision.outcome, decision.reason) == (Outcome.INVALID, "InvalidDuration")


def test_approvers_mode_is_pending() -> None:
    decision = compute_decision(make_request(), [make_policy(approval={"mode": "Approvers"})])
    assert (decision.outcome, decision.reason) == (Outcome.PENDING, "AwaitingApproval")


def test_auto_wins_over_approvers() -> None:
    policies = [make_policy("a", approval={"mode": "Approvers"}), make_policy("b")]
    decision = compute_decision(make_request(), policies)
    assert (decision.outcome, decision.policy) == (Outcome.GRANT, "b")


def test_broken_policy_matches_nothing() -> None:
    broken = make_policy(defaultDuration="1h", maxDuration="0s")
    assert compute_decision(make_request(), [broken]).outcome == Outcome.DENY


def test_namespace_selector() -> None:
    policy = make_policy(namespaces=[], namespaceSelector={"matchLabels": {"team": "payments"}})
    request = make_request(namespace="pay-2")
    assert compute_decision(request, [policy], {"team": "payments"}).outcome == Outcome.GRANT
    assert compute_decision(request, [policy], {"team": "ledger"}).outcome == Outcome.DENY
    assert compute_decision(request, [policy], None).outcome == Outcome.DENY


@pytest.mark.parametrize(
    ("operator", "values", "labels", "matches"),
    [
        ("In", ["a"], {"k": "a"}, True),
        ("In", ["a"], {}, False),
        ("NotIn", ["a"], {"k": "a"}, False),
        ("NotIn", ["a"], {}, True),
        ("Exists", [], {"k": "x"}, True),
        ("Exists", [], {}, False),
        ("DoesNotExist", [], {}, True),
        ("DoesNotExist", [], {"k": "x"}, False),
    ],
)
def test_selector_expressions(
    operator: str, values: list[str], labels: dict[str, str], matches: bool
) -> None:
    selector = LabelSelector.model_validate(
        {"matchExpressions": [{"key": "k", "operator": operator, "values": values}]}
    )
    assert matches_selector(selector, labels) is matches


hours = st.integers(min_value=1, max_value=48)


@given(asked=hours, longest=hours)
def test_never_grants_more_than_max(asked: int, longest: int) -> None:
    policy = make_policy(maxDuration=f"{longest}h", defaultDuration="1h")
    decision = compute_decision(make_request(duration=f"{asked}h"), [policy])
    if asked <= longest:
        assert decision.outcome == Outcome.GRANT
        assert decision.duration == timedelta(hours=asked)
    else:
        assert decision.reason == "DurationExceedsPolicy"


@given(
    groups=st.lists(st.sampled_from(["a", "b", "c", "payments-devs"]), max_size=3),
    role=st.sampled_from(["view", "edit", "admin"]),
    namespace=st.sampled_from(["payments", "ledger"]),
)
def test_grant_only_within_policy(groups: list[str], role: str, namespace: str) -> None:
    request = make_request(groups=tuple(groups), role=role, namespace=namespace)
    decision = compute_decision(request, [make_policy()])
    within = "payments-devs" in groups and role in ("view", "edit") and namespace == "payments"
    assert (decision.outcome == Outcome.GRANT) is within
