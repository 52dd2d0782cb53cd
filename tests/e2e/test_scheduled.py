"""Access approved ahead for a window: nothing before `startAt`, the binding at `startAt`, the
clock from then; a window that passes unapproved times out; a start too far ahead is refused;
and whoever may end a grant early — requester, approver, on-call — may cancel it before it
begins, with the record saying who and why.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from tests.cluster import Cluster
from tests.e2e.conftest import Operator, Team, binding_name, parse_time, wait_for
from tests.e2e.test_approvals import annotate, approvers_policy
from tests.e2e.test_cli import created_name, lapse


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def whole_seconds_from_now(seconds: int) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)


def test_a_scheduled_request_is_bound_at_its_start_and_not_before(
    team: Team, operator: Operator
) -> None:
    team.policy(maximum="1h")
    start = whole_seconds_from_now(5)
    team.ask("window", duration="6s", startAt=rfc3339(start))
    body = team.wait_phase("window", "Scheduled")
    status = body["status"]
    assert parse_time(status["startsAt"]) == start
    assert parse_time(status["expiresAt"]) == start + timedelta(seconds=6)
    assert not status.get("bindings")
    assert not team.can_i("create", "deployments")

    def bound() -> dict[str, object] | None:
        current = team.request("window")
        if current["status"].get("phase") == "Active":
            return current
        assert datetime.now(UTC) < start + timedelta(seconds=5), "not bound in time"
        return None

    # Never before its start: while the clock is short of it, no binding and no access.
    while datetime.now(UTC) < start - timedelta(milliseconds=500):
        assert team.request("window")["status"]["phase"] == "Scheduled"
        time.sleep(0.1)
    active = wait_for(bound, 10, 0.05, "the scheduled binding")
    binding = team.binding(binding_name(active))
    assert binding is not None
    # The API server's own clock on the binding: made in the second of startAt, not before.
    made = parse_time(binding["metadata"]["creationTimestamp"])
    assert start <= made <= start + timedelta(seconds=1), (made, start)
    assert parse_time(active["status"]["expiresAt"]) == start + timedelta(seconds=6)
    assert parse_time(active["status"]["startsAt"]) == start
    assert team.can_i("create", "deployments")
    assert any(e["reason"] == "Scheduled" for e in team.events("window"))
    team.wait_phase("window", "Expired", timeout=15)
    assert not team.can_i("create", "deployments")


def test_a_start_too_far_ahead_is_refused_with_the_limit(team: Team, operator: Operator) -> None:
    team.policy(maximum="1h", extra={"maxLeadTime": "2h"})
    team.ask("far", duration="10m", startAt=rfc3339(whole_seconds_from_now(3 * 3600)))
    body = team.wait_phase("far", "Denied")
    assert body["status"]["reason"] == "LeadTimeExceedsPolicy"
    assert "2h" in body["status"]["message"] and "maxLeadTime" in body["status"]["message"]


def test_an_extension_cannot_also_name_a_start(team: Team, operator: Operator) -> None:
    team.policy(maximum="1h")
    refused = team.ask(
        "both",
        duration="10m",
        extends="something",
        startAt=rfc3339(whole_seconds_from_now(600)),
        check=False,
    )
    assert refused.returncode != 0
    assert "cannot also name startAt" in refused.stderr


def test_a_pending_request_whose_window_passes_times_out(
    team: Team, leads: str, operator: Operator
) -> None:
    approvers_policy(team, leads)
    # Over a second ahead of creation (whose timestamp has whole seconds), or it means "now".
    start = whole_seconds_from_now(3)
    team.ask("missed", duration="3s", startAt=rfc3339(start))
    team.wait_phase("missed", "Pending")
    body = team.wait_phase("missed", "Expired", timeout=15)
    assert body["status"]["reason"] == "WindowPassed"
    assert not body["status"].get("bindings")
    # Approving it now changes nothing: the window is over.
    annotate(team, "missed", "lapse.dev/approve", "late", "bob", (leads,))
    time.sleep(1)
    assert team.request("missed")["status"]["phase"] == "Expired"


def test_approved_ahead_then_bound_at_its_start(team: Team, leads: str, operator: Operator) -> None:
    approvers_policy(team, leads)
    start = whole_seconds_from_now(4)
    team.ask("planned", duration="1m", startAt=rfc3339(start))
    team.wait_phase("planned", "Pending")
    assert annotate(team, "planned", "lapse.dev/approve", "ok", "bob", (leads,)).returncode == 0
    body = team.wait_phase("planned", "Scheduled")
    assert [a["user"]["username"] for a in body["status"]["approvals"]] == ["bob"]
    assert not team.can_i("create", "deployments")
    active = team.wait_phase("planned", "Active", timeout=15)
    assert parse_time(active["status"]["expiresAt"]) == start + timedelta(minutes=1)


def test_kubectl_lapse_request_at(team: Team, operator: Operator) -> None:
    team.policy(maximum="1h")
    result = lapse(
        team, "request", "edit", "-n", team.namespace, "--for", "30m", "--at", "+2h",
        "--reason", "Maintenance window.",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    name = created_name(result)
    body = team.request(name)
    assert body["status"]["phase"] == "Scheduled"
    starts = parse_time(body["status"]["startsAt"])
    assert timedelta(hours=1, minutes=59) < starts - datetime.now(UTC) <= timedelta(hours=2)
    assert "scheduled" in result.stderr + result.stdout


def test_requester_approver_and_on_call_may_each_end_a_grant_early(
    cluster: Cluster, team: Team, leads: str, operator: Operator
) -> None:
    on_call = f"{team.namespace}-oncall"
    approval = {"approvers": {"groups": [leads]}, "required": 1}
    team.policy(
        maximum="1h",
        mode="Approvers",
        approval=approval,
        extra={"breakGlass": {"requesters": {"groups": [on_call]}, "roles": []}},
    )
    # The on-call group may annotate requests here, as approvers may; it approves nothing.
    cluster.kubectl(
        "create", "rolebinding", "lapse-oncall", "-n", team.namespace,
        "--clusterrole", "lapse-approver", f"--group={on_call}",
    )  # fmt: skip
    enders = {"mine": (team.user, team.group), "lead": ("bob", leads), "pager": ("carol", on_call)}
    for name in enders:
        team.ask(name, duration="30m")
        team.wait_phase(name, "Pending")
        assert annotate(team, name, "lapse.dev/approve", "ok", "bob", (leads,)).returncode == 0
        team.wait_phase(name, "Active")
    refused = annotate(team, "mine", "lapse.dev/approve", "ok", "carol", (on_call,))
    assert refused.returncode != 0, "on-call may end a grant, never approve one"
    for name, (user, group) in enders.items():
        ended = annotate(team, name, "lapse.dev/revoke", f"{user} is done", user, (group,))
        assert ended.returncode == 0, ended.stderr
        body = team.wait_phase(name, "Revoked")
        message = body["status"]["message"]
        assert message.startswith(f"Revoked by {user}") and f"{user} is done" in message
