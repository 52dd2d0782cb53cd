"""Within policy, deny by default: every refusal names its reason in the phase and an Event."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import Operator, Team


def assert_denied(team: Team, name: str, reason: str, words: str) -> None:
    body = team.wait_phase(name, "Denied")
    assert body["status"]["reason"] == reason
    assert words in body["status"]["message"]
    assert not body["status"].get("bindings")
    event = team.wait_event(name, reason)
    assert event["type"] == "Warning"
    assert words in event["message"]
    assert not team.can_i("create", "deployments")


def test_no_policy_denies(team: Team, operator: Operator) -> None:
    team.ask("nobody-said-yes")
    assert_denied(team, "nobody-said-yes", "NoMatchingPolicy", "No AccessPolicy lets alice")
    operator.wait_for_audit(lambda a: a["action"] == "denied" and a["namespace"] == team.namespace)


def test_role_outside_policy_denied(team: Team) -> None:
    team.policy(roles=("view",))
    team.ask("wants-admin", role="admin")
    assert_denied(team, "wants-admin", "RoleNotAllowed", "ClusterRole admin")


def test_namespace_outside_policy_denied(team: Team) -> None:
    team.policy(namespaces=("somewhere-else",))
    team.ask("wrong-place")
    assert_denied(team, "wrong-place", "NamespaceNotAllowed", f"namespace {team.namespace}")


@pytest.mark.parametrize("duration", ["5h", "4h1s", "300m"])
def test_duration_over_max_denied_not_capped(team: Team, duration: str) -> None:
    team.policy(maximum="4h")
    team.ask("too-long", duration=duration)
    assert_denied(team, "too-long", "DurationExceedsPolicy", f"Duration {duration} exceeds")


def test_duration_at_max_granted(team: Team) -> None:
    team.policy(maximum="4h")
    team.ask("just-right", duration="4h")
    assert team.wait_phase("just-right", "Active")["status"]["duration"] == "4h"


def test_approvers_mode_leaves_request_pending(team: Team) -> None:
    team.policy(mode="Approvers")
    team.ask("needs-a-yes")
    body = team.wait_phase("needs-a-yes", "Pending")
    assert body["status"]["reason"] == "AwaitingApproval"
    assert body["status"]["policy"] == team.namespace
    assert team.wait_event("needs-a-yes", "AwaitingApproval")["type"] == "Normal"
    assert not team.can_i("create", "deployments")


def test_policy_for_another_group_denies(team: Team) -> None:
    team.policy(requesters=("payments-leads",))
    team.ask("not-my-policy")
    assert_denied(team, "not-my-policy", "NoMatchingPolicy", "No AccessPolicy lets alice")


@pytest.mark.faults
def test_request_made_before_the_operator_saw_its_policy_is_judged_by_it(team: Team) -> None:
    """GitOps applies a policy and a request together, and the operator's policy watch lags
    (here: stalled on purpose). Denied is final, so it must never rest on stale policies."""
    faults = team.cluster.faults
    assert faults is not None
    faults.set(
        timeout_rate=1.0,
        timeout_seconds=30,
        match={"verbs": ["watch"], "resources": ["accesspolicies"], "user_agents": ["kopf/*"]},
    )
    try:
        faults.cut_watches()
        time.sleep(1)  # the operator's watches reconnect; the policy watch now hangs
        team.policy()
        team.ask("right-away", duration="1h")
        body = team.wait_phase("right-away", "Active")
        assert body["status"]["policy"] in team.policies
    finally:
        faults.reset()
