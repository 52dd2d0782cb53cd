"""kill -9 at every step of a grant and of a revocation, then a restart: Lapse converges.

The operator dies on purpose at a named crash point (`LAPSE_CRASH_AT`, see lapse.crashpoints):
before and after the binding is written, before and after the status is written, for a grant
and for a revocation. A restart without the crash point must leave exactly one binding with
the expiry first promised (grant) or no binding and an Expired request (revocation), and the
transition's audit line and Event must be there: at least once, the audit line under one id.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.conftest import Team
from tests.e2e.harness import Operator, parse_time, wait_for
from tests.reliability.conftest import (
    check_audit,
    check_bindings,
    check_events,
    drain,
    managed_bindings,
    requests,
    wait_crashed,
    watch_revocations,
)

STEPS = ("before-binding-write", "after-binding-write", "before-status-write", "after-status-write")
EXPIRES_AT = "lapse.dev/expires-at"


@pytest.mark.parametrize("step", STEPS)
def test_crash_during_grant(team: Team, operator: Operator, step: str) -> None:
    point = f"grant-{step}"
    team.policy()
    operator.extra_env["LAPSE_CRASH_AT"] = point
    operator.start()
    team.ask("crashy", duration="1h")
    assert wait_crashed(operator) == 137, "the operator did not die at its crash point"
    left = managed_bindings(team)
    promised = left[0]["metadata"]["annotations"][EXPIRES_AT] if left else None
    assert len(left) == (0 if step == "before-binding-write" else 1)

    del operator.extra_env["LAPSE_CRASH_AT"]
    operator.start()
    body = team.wait_phase("crashy", "Active", timeout=20)
    check_bindings(team)
    status = body["status"]
    expires = parse_time(status["expiresAt"])
    assert expires - parse_time(status["grantedAt"]) == timedelta(hours=1)
    if promised is not None:
        # The binding written before the crash keeps its expiry: a crash never lengthens access.
        assert expires == parse_time(promised)
    repeats = check_audit(
        operator.audit_lines(), {"crashy": body["metadata"]["uid"]}, {"crashy": ("granted",)}
    )
    event_repeats = check_events(team, "crashy", ("Granted",))
    print(
        f"\n[{point}] granted once; repeated audit lines {repeats}, repeated Events {event_repeats}"
    )
    drain(team)


@pytest.mark.parametrize("step", STEPS)
def test_crash_during_revocation(team: Team, operator: Operator, step: str) -> None:
    point = f"revoke-{step}"
    team.policy()
    operator.extra_env["LAPSE_CRASH_AT"] = point
    operator.start()
    team.ask("lapsing", duration="3s")
    body = team.wait_phase("lapsing", "Active", timeout=20)
    binding = body["status"]["bindings"][0]["name"]
    assert wait_crashed(operator) == 137, "the operator did not die at its crash point"

    del operator.extra_env["LAPSE_CRASH_AT"]
    operator.start(wait=False)
    back = datetime.now(UTC)
    lags = watch_revocations(
        team, {binding: parse_time(body["status"]["expiresAt"])}, back=back, timeout=30
    )
    operator.wait_ready()
    team.wait_phase("lapsing", "Expired", timeout=20)
    check_bindings(team)
    assert not managed_bindings(team)
    uids = {"lapsing": body["metadata"]["uid"]}
    repeats = check_audit(operator.audit_lines(), uids, {"lapsing": ("granted", "expired")})
    event_repeats = check_events(team, "lapsing", ("Granted", "Expired"))
    print(
        f"\n[{point}] revoked {lags[binding]:.2f}s after the restart began; repeated audit lines "
        f"{repeats}, repeated Events {event_repeats}"
    )
    assert [r["metadata"]["name"] for r in requests(team)] == ["lapsing"]
    drain(team)


def test_grant_whose_record_never_landed_is_not_granted_again_after_its_expiry(
    team: Team, operator: Operator
) -> None:
    """The binding was written, the status was not, and the operator stayed down past the
    expiry: on restart the grant has lapsed. It must end as Expired — a retried grant would
    start the clock again and hand out access nobody was promised."""
    team.policy()
    operator.extra_env["LAPSE_CRASH_AT"] = "grant-before-status-write"
    operator.start()
    team.ask("lost-record", duration="3s")
    assert wait_crashed(operator) == 137, "the operator did not die at its crash point"
    (binding,) = managed_bindings(team)
    promised = parse_time(binding["metadata"]["annotations"][EXPIRES_AT])
    time.sleep(max(0.0, (promised - datetime.now(UTC)).total_seconds()) + 1)

    del operator.extra_env["LAPSE_CRASH_AT"]
    operator.start()
    body = team.wait_phase("lost-record", "Expired", timeout=20)
    assert parse_time(body["status"]["expiresAt"]) == promised
    assert "Active" not in [entry["phase"] for entry in body["status"]["history"]]
    time.sleep(2)  # a retried grant, if any, would have made its binding by now
    assert not managed_bindings(team)
    drain(team)


def test_crash_at_the_handover_to_an_extension(team: Team, operator: Operator) -> None:
    """Killed after the extension is bound and before the extended grant's bindings go: the
    restart ends the old grant as Extended and leaves the extension's binding alone."""
    team.policy(maximum="1h")
    operator.extra_env["LAPSE_CRASH_AT"] = "handover-after-successor-bound"
    operator.start()
    team.ask("handing", duration="4s")
    old = team.wait_phase("handing", "Active", timeout=20)
    team.ask("taking", duration="1h", extends="handing")
    team.wait_phase("taking", "Scheduled", timeout=10)
    assert wait_crashed(operator) == 137, "the operator did not die at its crash point"
    assert len(managed_bindings(team)) == 2, "both bindings while the hand-over was cut short"

    del operator.extra_env["LAPSE_CRASH_AT"]
    operator.start()
    ended = team.wait_phase("handing", "Expired", timeout=20)
    assert ended["status"]["reason"] == "Extended"
    body = team.wait_phase("taking", "Active", timeout=20)
    wait_for(lambda: len(managed_bindings(team)) == 1, 20, 0.2, "the old binding gone")
    check_bindings(team)
    promised = parse_time(old["status"]["expiresAt"]) + timedelta(hours=1)
    assert parse_time(body["status"]["expiresAt"]) == promised
    drain(team)


def test_kill_just_before_a_scheduled_start(team: Team, operator: Operator) -> None:
    """Down across the start: the restart binds it at once, with the window first decided."""
    team.policy(maximum="1h")
    operator.start()
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
    team.ask("nightly", duration="1m", startAt=start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    team.wait_phase("nightly", "Scheduled", timeout=20)
    time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds() - 1))
    operator.kill()
    time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds() + 1))
    assert not managed_bindings(team), "nothing is bound while the operator is down"

    operator.start()
    body = team.wait_phase("nightly", "Active", timeout=20)
    assert parse_time(body["status"]["startsAt"]) == start
    assert parse_time(body["status"]["expiresAt"]) == start + timedelta(minutes=1)
    check_bindings(team)
    assert len(managed_bindings(team)) == 1
    drain(team)


def test_kill_between_an_extension_and_the_expiry_it_waits_for(
    team: Team, operator: Operator
) -> None:
    """Down across the old expiry: the restart removes the overdue binding and binds the
    extension, with the window first decided; one binding, no orphan."""
    team.policy(maximum="1h")
    operator.start()
    team.ask("before", duration="4s")
    old = team.wait_phase("before", "Active", timeout=20)
    team.ask("after", duration="10m", extends="before")
    team.wait_phase("after", "Scheduled", timeout=10)
    operator.kill()
    expiry = parse_time(old["status"]["expiresAt"])
    time.sleep(max(0.0, (expiry - datetime.now(UTC)).total_seconds() + 1))

    operator.start()
    team.wait_phase("before", "Expired", timeout=20)
    body = team.wait_phase("after", "Active", timeout=20)
    assert parse_time(body["status"]["expiresAt"]) == expiry + timedelta(minutes=10)
    wait_for(lambda: len(managed_bindings(team)) == 1, 20, 0.2, "one binding")
    check_bindings(team)
    drain(team)
