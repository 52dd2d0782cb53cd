"""What `kubectl lapse` prints for each state: time left, table rows, explanations, colour."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lapse.cli.explain import explain
from lapse.cli.render import (
    COLUMNS,
    describe,
    row,
    short_duration,
    table,
    time_left,
    use_colour,
)
from lapse.core.models import AccessPolicy, AccessRequest, BreakGlass, GrantStatus, Phase

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def at(**delta: float) -> str:
    return (NOW + timedelta(**delta)).isoformat().replace("+00:00", "Z")


def request(status: dict[str, Any] | None = None, **spec: Any) -> AccessRequest:
    return AccessRequest.model_validate(
        {
            "metadata": {
                "name": "edit-x7k2p",
                "namespace": "payments",
                "creationTimestamp": at(minutes=-5),
            },
            "spec": {
                "role": {"kind": "ClusterRole", "name": "edit"},
                "reason": "Fix stuck retries",
                "duration": "2h",
                "requester": {"username": "alice", "groups": ["payments-devs"]},
                **spec,
            },
            "status": status or {},
        }
    )


def active(expires: str, **extra: Any) -> dict[str, Any]:
    return {
        "phase": "Active",
        "reason": "Granted",
        "policy": "payments",
        "subject": {"kind": "User", "name": "alice"},
        "grantedAt": at(minutes=-5),
        "expiresAt": expires,
        "bindings": [{"kind": "RoleBinding", "name": "lapse-edit-x7k2p", "namespace": "payments"}],
        **extra,
    }


def policy(mode: str = "Approvers", required: int = 2) -> AccessPolicy:
    return AccessPolicy.model_validate(
        {
            "metadata": {"name": "payments"},
            "spec": {
                "approval": {
                    "mode": mode,
                    "approvers": {"groups": ["payments-leads"], "users": ["bob"]},
                    "required": required,
                    "timeout": "24h",
                }
            },
        }
    )


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0s"),
        (42, "42s"),
        (270, "4m30s"),
        (600, "10m"),
        (4320, "1h12m"),
        (7200, "2h"),
        (97200, "1d3h"),
    ],
)
def test_short_duration(seconds: int, shown: str) -> None:
    assert short_duration(timedelta(seconds=seconds)) == shown


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        ({"phase": "Active", "expiresAt": at(hours=1, minutes=12)}, "1h12m"),
        ({"phase": "Active", "expiresAt": at(seconds=42)}, "42s"),
        # The clock passed the expiry before Lapse wrote Expired: the access is over anyway.
        ({"phase": "Active", "expiresAt": at(seconds=-2)}, "expired 2s ago"),
        ({"phase": "Expired", "expiresAt": at(minutes=-3)}, "expired 3m ago"),
        ({"phase": "Pending"}, "-"),
        ({"phase": "Revoked", "expiresAt": at(hours=1)}, "-"),
        ({}, "-"),
    ],
)
def test_time_left(status: dict[str, Any], shown: str) -> None:
    assert time_left(GrantStatus.model_validate(status), NOW) == shown


def test_row_of_an_active_request() -> None:
    line = row(request(active(at(hours=1, minutes=12))), policy(mode="Auto"), NOW)
    assert line.cells == (
        "edit-x7k2p", "AccessRequest", "Active", "alice", "edit", "payments",
        "5m ago", "in 1h12m", "1h12m", "auto", "5m",
    )  # fmt: skip
    assert line.state == "Active"


def test_row_counts_approvals_against_the_policy() -> None:
    approvals = [{"user": {"username": "bob"}, "decision": "Approve", "at": at(minutes=-1)}]
    pending = request({"phase": "Pending", "policy": "payments", "approvals": approvals})
    assert row(pending, policy(required=2), NOW).cells[9] == "1/2"
    # Without the policy (developers may not read it) only the count is known.
    assert row(pending, None, NOW).cells[9] == "1"


def test_row_of_a_role_a_group_and_a_new_request() -> None:
    new = request(role={"kind": "Role", "name": "deployer"})
    cells = row(new, None, NOW).cells
    assert cells[2] == "New" and cells[4] == "Role/deployer" and cells[3] == "alice"
    group = request(active(at(hours=1), subject={"kind": "Group", "name": "oncall"}))
    assert row(group, None, NOW).cells[3] == "group:oncall"


def test_row_of_a_cluster_wide_breakglass() -> None:
    glass = BreakGlass.model_validate(
        {
            "metadata": {"name": "db-down", "creationTimestamp": at(minutes=-1)},
            "spec": {
                "role": {"kind": "ClusterRole", "name": "admin"},
                "duration": "30m",
                "reason": "x",
            },
            "status": {
                "phase": "Active",
                "expiresAt": at(minutes=29),
                "subject": {"kind": "User", "name": "sam"},
            },
        }
    )
    assert row(glass, None, NOW).cells == (
        "db-down", "BreakGlass", "Active", "sam", "admin", "(cluster-wide)",
        "-", "in 29m", "29m", "-", "1m",
    )  # fmt: skip


def test_table_aligns_on_plain_text_and_colours_only_the_state() -> None:
    rows = [
        row(request(active(at(hours=1))), None, NOW),
        row(request({"phase": "Denied"}), None, NOW),
    ]
    plain = table(COLUMNS, rows).splitlines()
    assert plain[0].startswith("NAME         KIND            STATE    SUBJECT")
    assert plain[1].index("alice") == plain[2].index("alice") == plain[0].index("SUBJECT")
    coloured = table(COLUMNS, rows, colour=True).splitlines()
    assert "\033[32mActive\033[0m" in coloured[1] and "\033[31mDenied\033[0m" in coloured[2]
    assert coloured[1].replace("\033[32m", "").replace("\033[0m", "") == plain[1]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color() -> None:
    assert use_colour(Tty(), {"TERM": "xterm"})
    assert not use_colour(io.StringIO(), {"TERM": "xterm"})
    assert not use_colour(Tty(), {"TERM": "xterm", "NO_COLOR": ""})
    assert not use_colour(Tty(), {"TERM": "dumb"})


def test_explain_pending_says_who_how_many_and_until_when() -> None:
    approvals = [{"user": {"username": "bob"}, "decision": "Approve", "at": at(minutes=-1)}]
    history = [{"at": at(hours=-1), "phase": "Pending", "reason": "AwaitingApproval"}]
    pending = request(
        {
            "phase": "Pending",
            "policy": "payments",
            "message": "AccessPolicy payments requires approval.",
            "approvals": approvals,
            "history": history,
        }
    )
    text = explain(pending, policy(required=2), NOW)
    assert text.splitlines() == [
        # The status message is not repeated: the sentences below say it in full.
        "AccessRequest payments/edit-x7k2p is waiting for approval.",
        "It needs 2 approvals from group payments-leads or user bob; it has 1 (from bob), "
        "so 1 more is missing.",
        "alice asked for it and cannot approve it.",
        "If it is not approved, it times out in 23h (at 2025-03-02T11:00:00Z).",
        "An approver runs: kubectl lapse approve edit-x7k2p -n payments",
    ]


def test_explain_pending_without_any_record_of_approvers_points_to_the_platform_team() -> None:
    pending = request({"phase": "Pending", "policy": "payments"})
    assert "AccessPolicy payments says who may approve; your platform team can tell you" in (
        explain(pending, None, NOW)
    )


REQUIREMENT = {
    "mode": "Approvers",
    "required": 1,
    "approvers": {"groups": ["payments-leads"]},
    "deadline": at(hours=23),
}


def test_a_requester_who_cannot_read_the_policy_learns_who_approves_from_the_status() -> None:
    """Item: explain named the approvers, then said the reader could not know them."""
    pending = request(
        {
            "phase": "Pending",
            "policy": "payments",
            "message": "AccessPolicy payments requires approval. Waiting for 1 approval(s) from "
            "group payments-leads.",
            "approval": REQUIREMENT,
        }
    )
    text = explain(pending, None, NOW)
    assert "cannot read" not in text and "platform team" not in text
    assert text.splitlines()[:2] == [
        "AccessRequest payments/edit-x7k2p is waiting for approval.",
        "It needs 1 approval from group payments-leads; it has none, so 1 more is missing.",
    ]
    assert "If it is not approved, it times out in 23h (at 2025-03-02T11:00:00Z)." in text


def test_the_approvals_column_is_the_same_for_whoever_looks() -> None:
    """Item: `auto` for admin and `-` for alice; `0/1` for admin and `-` for the approver."""
    pending = request({"phase": "Pending", "policy": "payments", "approval": REQUIREMENT})
    assert row(pending, policy(required=1), NOW).cells[9] == "0/1"
    assert row(pending, None, NOW).cells[9] == "0/1"
    auto = request({**active(at(hours=1)), "approval": {"mode": "Auto"}})
    assert row(auto, None, NOW).cells[9] == row(auto, policy(mode="Auto"), NOW).cells[9] == "auto"
    gitops = request({**active(at(hours=1)), "approval": {"mode": "GitOps"}})
    assert row(gitops, None, NOW).cells[9] == "gitops"


def test_explain_active_says_what_it_grants_and_until_when() -> None:
    text = explain(request(active(at(hours=1, minutes=12))), policy(mode="Auto"), NOW)
    assert text.splitlines() == [
        "AccessRequest payments/edit-x7k2p is active.",
        "It grants ClusterRole edit in namespace payments to user alice "
        "through RoleBinding lapse-edit-x7k2p.",
        "AccessPolicy payments grants it without approval.",
        "It expires in 1h12m, at 2025-03-01T13:12:00Z.",
    ]


def test_explain_denied_gives_reason_message_and_the_deciding_approver() -> None:
    denial = [{"user": {"username": "bob"}, "decision": "Deny", "at": at(), "comment": "Use view"}]
    denied = request(
        {"phase": "Denied", "reason": "RoleNotAllowed", "message": "No.", "approvals": denial}
    )
    lines = explain(denied, None, NOW).splitlines()
    assert lines[0] == "AccessRequest payments/edit-x7k2p was denied (RoleNotAllowed): No."
    assert lines[1] == "bob denied it: Use view."


def test_explain_of_a_denial_by_an_approver_says_it_once() -> None:
    """Item: the denial's sentence appeared twice."""
    denial = [{"user": {"username": "bob"}, "decision": "Deny", "at": at(), "comment": "use view"}]
    denied = request(
        {
            "phase": "Denied",
            "reason": "DeniedByApprover",
            "message": "Denied by bob: use view.",
            "approvals": denial,
        }
    )
    lines = explain(denied, None, NOW).splitlines()
    assert lines == [
        "AccessRequest payments/edit-x7k2p was denied (DeniedByApprover): Denied by bob: use view.",
        "A denied request stays denied; asking again means a new request.",
    ]


def test_explain_invalid_and_expired() -> None:
    invalid = request({"phase": "Invalid", "reason": "InvalidDuration", "message": "Bad."})
    assert explain(invalid, None, NOW).startswith(
        "AccessRequest payments/edit-x7k2p is invalid (InvalidDuration): Bad."
    )
    expired = request({**active(at(minutes=-3)), "phase": "Expired", "duration": "2h"})
    lines = explain(expired, None, NOW).splitlines()
    assert lines[0].startswith("AccessRequest payments/edit-x7k2p expired 3m ago")
    assert lines[1] == (
        "To ask again: kubectl lapse request edit -n payments --for 2h --reason 'Fix stuck retries'"
    )


def test_explain_breakglass_reports_review_due() -> None:
    glass = BreakGlass.model_validate(
        {
            "metadata": {"name": "db-down"},
            "spec": {
                "role": {"kind": "ClusterRole", "name": "admin"},
                "namespaces": ["payments"],
                "duration": "30m",
                "reason": "x",
                "incident": "INC-1",
            },
            "status": {
                "phase": Phase.ACTIVE.value,
                "subject": {"kind": "User", "name": "sam"},
                "expiresAt": at(minutes=20),
                "reviewDeadline": at(hours=24),
            },
        }
    )
    lines = explain(glass, None, NOW).splitlines()
    assert (
        lines[1]
        == "It grants ClusterRole admin in namespace payments to user sam for incident INC-1."
    )
    assert "Its review is due in 1d (at 2025-03-02T12:00:00Z)." in lines


def test_describe_shows_bindings_approvals_and_history() -> None:
    approvals = [{"user": {"username": "bob"}, "decision": "Approve", "at": at(), "comment": "ok"}]
    history = [{"at": at(minutes=-5), "phase": "Active", "reason": "Granted"}]
    text = describe(
        request(active(at(hours=1), approvals=approvals, history=history)), policy(), NOW
    )
    assert "  RoleBinding payments/lapse-edit-x7k2p" in text
    assert "Approvals:   1/2" in text
    assert '  Approve  bob  2025-03-01T12:00:00Z  "ok"' in text
    assert "Expires:     2025-03-01T13:00:00Z (in 1h)" in text
    assert "History:" in text and "Active   Granted" in text


def test_describe_of_a_breakglass_revoked_early_shows_no_future_expiry_and_no_live_binding() -> (
    None
):
    """Item: a revoked break-glass showed `Expires: … (in 29m)` and its deleted binding."""
    glass = BreakGlass.model_validate(
        {
            "metadata": {"name": "inc-4711"},
            "spec": {
                "role": {"kind": "ClusterRole", "name": "cluster-admin"},
                "duration": "30m",
                "reason": "x",
                "incident": "INC-4711",
            },
            "status": {
                "phase": "Revoked",
                "reason": "Revoked",
                "grantedAt": at(minutes=-1),
                "expiresAt": at(minutes=29),
                "endedAt": at(),
                "bindings": [{"kind": "ClusterRoleBinding", "name": "lapse-inc-4711-0a1b2c3d4e"}],
            },
        }
    )
    text = describe(glass, None, NOW)
    assert "(in 29m)" not in text and "Expires:" not in text
    assert "Planned end: 2025-03-01T12:29:00Z (not reached)" in text
    assert "Bindings (removed):\n  ClusterRoleBinding lapse-inc-4711-0a1b2c3d4e" in text
