"""What a new user meets in the first hour: each answer reads the same whoever asks, names
what was made, and ends its sentences; the operator's log stays calm about expected refusals.

Each test here failed before its fix, as a newcomer found it.
"""

from __future__ import annotations

import re

from tests.e2e.conftest import Operator, Team, wait_for
from tests.e2e.test_cli import (
    approver_policy,
    approvers,
    breakglass_policy,
    created_name,
    lapse,
    table_row,
)


def test_the_approvals_column_reads_the_same_for_admin_requester_and_approver(
    team: Team,
) -> None:
    team.policy()
    approver_policy(team)
    leads = approvers(team.cluster, team)
    auto = lapse(team, "request", "edit", "-n", team.namespace, "--reason", "x", "--name", "auto")
    assert auto.returncode == 0, auto.stderr
    asked = lapse(team, "request", "admin", "-n", team.namespace, "--reason", "x", "--name", "asks")
    assert asked.returncode == 0, asked.stderr
    lookers = {
        "admin": {"user": None},
        "alice": {},
        "a lead": {"user": "lena", "groups": (leads,)},
    }
    for who, looker in lookers.items():
        listed = lapse(team, "list", "-n", team.namespace, **looker)  # type: ignore[arg-type]
        assert listed.returncode == 0, (who, listed.stderr)
        assert table_row(listed.stdout, "auto")["APPROVALS"] == "auto", who
        assert table_row(listed.stdout, "asks")["APPROVALS"] == "0/1", who


def test_a_pending_request_shows_its_subject_in_kubectl_get(team: Team) -> None:
    approver_policy(team)
    team.ask("waits", role="admin", duration="1h")
    team.wait_phase("waits", "Pending")
    table = team.cluster.kubectl("get", "accessrequests", "-n", team.namespace).stdout
    header, row = (
        table.splitlines()[0],
        next(line for line in table.splitlines() if line.startswith("waits ")),
    )
    column = header.index("SUBJECT")
    assert row[column:].split()[0] == "alice", table


def test_a_denied_request_shows_its_subject_in_kubectl_get(team: Team) -> None:
    team.policy(roles=("view",))
    team.ask("refused", role="edit")
    team.wait_phase("refused", "Denied")
    subject = team.cluster.kubectl(
        "get", "ar", "refused", "-n", team.namespace, "-o", "jsonpath={.status.subject.name}"
    ).stdout
    assert subject == "alice"


def test_the_breakglass_runbook_names_work_as_written(team: Team) -> None:
    """`--incident INC-…` names the break-glass after the incident, so the runbook's
    `revoke bg/inc-…` and `review inc-…` find it; a second one of the incident gets a suffix."""
    _, oncall = breakglass_policy(team)
    incident = f"INC-{team.namespace.rsplit('-', 1)[-1]}"
    name = incident.lower()
    sre = {"user": "sam", "groups": (oncall, "system:masters")}
    made: list[str] = []
    try:
        first = lapse(
            team, "breakglass", "admin", "--incident", incident, "--for", "30m",
            "--reason", "Primary DB failed over", "-n", team.namespace, **sre,
        )  # fmt: skip
        assert first.returncode == 0, first.stderr
        made.append(created_name(first))
        assert made[0] == name
        second = lapse(
            team, "breakglass", "admin", "--incident", incident, "--for", "10m",
            "--reason", "Second pair of hands", "-n", team.namespace, **sre,
        )  # fmt: skip
        assert second.returncode == 0, second.stderr
        made.append(created_name(second))
        assert re.fullmatch(rf"{name}-[a-z0-9]{{5}}", made[1]), made[1]

        revoked = lapse(team, "revoke", f"bg/{name}", "-m", "fixed", **sre)
        assert revoked.returncode == 0, revoked.stderr
        shown = lapse(team, "get", f"bg/{name}", user=None).stdout
        # User text without a final stop does not run into Lapse's next sentence.
        assert "sam revoked this break-glass: fixed. The record stays for the review." in shown
        # Ended early: no expiry still to come, and the binding is shown as gone.
        assert not re.search(r"^Expires:", shown, re.M), shown
        assert "(not reached)" in shown and "Bindings (removed):" in shown

        reviewed = lapse(
            team, "review", name, "--verdict", "justified", "-m", "failover runbook followed",
            user="carol", groups=("system:masters",),
        )  # fmt: skip
        assert reviewed.returncode == 0, reviewed.stderr
    finally:
        for each in made:
            team.cluster.kubectl("delete", "breakglass", each, "--ignore-not-found", check=False)


def test_expected_refusals_are_one_calm_line_in_the_operator_log(
    team: Team, operator: Operator
) -> None:
    approver_policy(team)
    asked = lapse(team, "request", "admin", "-n", team.namespace, "--reason", "x", "--no-wait")
    assert asked.returncode == 0, asked.stderr
    name = created_name(asked)
    team.wait_phase(name, "Pending")
    own = lapse(team, "approve", name, "-n", team.namespace)
    assert own.returncode == 1 and "may not approve their own request" in own.stderr

    def logged() -> str | None:
        text = operator.log_path.read_text()
        return text if "alice may not approve their own request" in text else None

    log = wait_for(logged, timeout=10, interval=0.2, what="the refusal in the operator log")
    refusal = next(line for line in log.splitlines() if "may not approve their own" in line)
    assert " INFO " in refusal and "Refused at admission" in refusal, refusal
    assert "failed permanently" not in log
    assert "aiohttp.access" not in log
    assert "Unclosed client session" not in log
    assert "Traceback" not in log
