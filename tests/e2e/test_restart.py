"""Crash-safe: a kill -9 while grants are due, a restart after, and nothing outlives its time.

Runs the session's operator down and up again, so it waits for nothing else to be in flight.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta

from tests.e2e.conftest import (
    InClusterOperator,
    Operator,
    Team,
    binding_name,
    expires_at,
    parse_time,
    wait_for,
)


def test_overdue_grants_revoked_within_seconds_of_restart(team: Team, operator: Operator) -> None:
    team.policy()
    for name in ("due-1", "due-2", "deleted-while-down", "still-running"):
        team.ask(name, duration="1h" if name == "still-running" else "4s")
    bodies = {n: team.wait_phase(n, "Active") for n in ("due-1", "due-2", "deleted-while-down")}
    running = team.wait_phase("still-running", "Active")
    bindings = {n: binding_name(b) for n, b in bodies.items()}
    latest = max(expires_at(b) for b in bodies.values())

    operator.kill()
    try:
        # While Lapse is down, one request is deleted outright (its finalizer removed by force).
        team.cluster.kubectl(
            "patch",
            "accessrequest",
            "deleted-while-down",
            "-n",
            team.namespace,
            "--type=merge",
            "-p",
            json.dumps({"metadata": {"finalizers": None}}),
        )
        team.cluster.kubectl(
            "delete",
            "accessrequest",
            "deleted-while-down",
            "-n",
            team.namespace,
            "--wait=false",
        )
        while datetime.now(UTC) < latest:
            time.sleep(0.2)
        time.sleep(1)
        overdue = [n for n in bindings.values() if team.binding(n) is not None]
        print(f"\n{len(overdue)} overdue binding(s) outlived the outage")
    finally:
        started = time.monotonic()
        log_from = operator.log_path.stat().st_size if operator.log_path.exists() else 0
        operator.start()

    for request, name in bindings.items():
        wait_for(lambda n=name: team.binding(n) is None, timeout=10, what=f"{request} revoked")
    took = time.monotonic() - started
    print(f"all {len(overdue)} overdue binding(s) revoked {took:.2f}s after the restart began")
    assert took < 60
    # They went before kopf listed a single owner: the start-up handler deleted them.
    with operator.log_path.open("rb") as log:
        log.seek(log_from)
        text = log.read().decode(errors="replace")
    if isinstance(operator, InClusterOperator):
        # With leader election the killed leader's Lease must lapse first; the replica that
        # then takes it removes them in its start-up sweep, before any handler acts.
        swept = re.findall(r"Start-up sweep removed ([0-9]+) binding\(s\)", text)
        assert any(int(n) >= len(overdue) for n in swept), text[-3000:]
    else:
        assert f"Removed {len(overdue)} overdue binding(s) before watching." in text
    for request in ("due-1", "due-2"):
        assert team.wait_phase(request, "Expired")["status"]["phase"] == "Expired"
    gone = team.cluster.kubectl(
        "get", "accessrequest", "deleted-while-down", "-n", team.namespace, check=False
    )
    assert gone.returncode != 0
    # The grant that was not due survives the restart untouched and still ends on schedule.
    assert team.binding(binding_name(running)) is not None
    assert team.request("still-running")["status"]["phase"] == "Active"
    assert team.can_i("create", "deployments")


def test_kill_across_a_scheduled_start_and_a_hand_over_converges(
    team: Team, operator: Operator
) -> None:
    """Down across both moments: the restart binds the scheduled request with the window it
    was decided for, ends the extended grant as Extended and binds its extension."""
    team.policy(maximum="1h")
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
    team.ask("at-five", duration="2m", startAt=start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    team.ask("short", duration="4s")
    team.wait_phase("at-five", "Scheduled")
    old = team.wait_phase("short", "Active")
    team.ask("short-more", duration="2m", extends="short")
    team.wait_phase("short-more", "Scheduled")
    latest = max(start, expires_at(old))

    operator.kill()
    try:
        while datetime.now(UTC) < latest + timedelta(seconds=1):
            time.sleep(0.2)
        assert team.request("at-five")["status"]["phase"] == "Scheduled"
    finally:
        operator.start()

    scheduled = team.wait_phase("at-five", "Active", timeout=20)
    assert parse_time(scheduled["status"]["expiresAt"]) == start + timedelta(minutes=2)
    ended = team.wait_phase("short", "Expired", timeout=20)
    assert ended["status"]["reason"] == "Extended"
    extension = team.wait_phase("short-more", "Active", timeout=20)
    assert expires_at(extension) == expires_at(old) + timedelta(minutes=2)
    wait_for(lambda: team.binding(binding_name(old)) is None, 20, 0.2, "the old binding gone")
    assert team.binding(binding_name(extension)) is not None
    assert team.can_i("create", "deployments")


def test_a_grant_held_across_a_restart_is_known_to_the_webhooks_at_once(
    team: Team, operator: Operator
) -> None:
    """The foothold webhook answers from memory: a restarted operator must know the grants
    already active before it serves a single admission review, or a grantee's token request
    in the first moments after a restart would pass unrecorded."""
    team.policy()
    team.cluster.kubectl("create", "serviceaccount", "deployer", "-n", team.namespace)
    team.ask("across", duration="1h")
    team.wait_phase("across", "Active")
    operator.kill()
    log_from = operator.log_path.stat().st_size
    operator.start()  # returns once the webhooks answer
    with operator.log_path.open("rb") as log:
        log.seek(log_from)
        # Loaded by one listing in the start-up handler, before the webhooks serve.
        assert re.search(rb"[1-9][0-9]* active grant\(s\) in memory", log.read())
    token = team.kubectl("create", "token", "deployer", "-n", team.namespace, check=False)
    assert token.returncode != 0
    assert "Lapse refuses TokenRequests made with temporary access" in token.stderr
    assert team.wait_event("across", "FootholdRefused")["type"] == "Warning"
