"""Lapse under a bad API: errors, latency, cut watches, forgotten history, a 30 s outage.

Faults hit only the operator's own requests (kopf's and Lapse's user agents), so the test keeps
an honest view of the cluster while the operator struggles. After every scenario the
invariants hold: no binding outlives its expiry by more than 5 s once the API is back, no
orphan or duplicate binding, and every transition's audit line (one id, however often it was
written) and Event are there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.cluster import Cluster
from tests.e2e.conftest import Team
from tests.e2e.harness import Identity, Operator, wait_for
from tests.e2e.test_revocation import STILL_IN_FLIGHT, WAVE, deleted_after_the_first_record
from tests.reliability.conftest import (
    OPERATOR_AGENTS,
    Operators,
    ask_many,
    check_audit,
    check_bindings,
    check_events,
    drain,
    expiries_of,
    wait_all_granted,
    watch_revocations,
)

pytestmark = pytest.mark.faults

# The invariant's bound: once the API is back, no binding lives longer past its expiry.
MAX_LAG = 5.0


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster,
    crds: None,
    operator_identity: Identity,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    group = Operators(cluster, tmp_path_factory.mktemp("faults"), operator_identity)
    process = group.new("operator")
    process.start()
    try:
        yield process
    finally:
        group.stop_all()


def verify(
    team: Team,
    operator: Operator,
    bodies: dict[str, dict[str, Any]],
    scenario: str,
    lags: dict[str, float],
) -> None:
    worst = max(lags.values())
    print(f"\n[{scenario}] worst revocation lag {worst:.2f}s over {len(lags)} grant(s)")
    assert worst <= MAX_LAG, f"{scenario}: a binding outlived its expiry by {worst:.2f}s"
    names = list(bodies)
    for name in names:
        team.wait_phase(name, "Expired", timeout=15)
    check_bindings(team)
    uids = {n: b["metadata"]["uid"] for n, b in bodies.items()}
    repeats = check_audit(operator.audit_lines(), uids, {n: ("granted", "expired") for n in names})
    event_repeats = sum(check_events(team, n, ("Granted", "Expired")) for n in names)
    print(
        f"[{scenario}] repeated audit lines (same id): {repeats}; repeated Events: {event_repeats}"
    )


def run_scenario(
    team: Team, operator: Operator, scenario: str, prefix: str, faults_on: Any = None
) -> None:
    # The policy is set-up, not the scenario: it is in place before the faults begin, or a
    # request could be judged (and denied) before the operator heard of it.
    team.policy()
    if faults_on is not None:
        faults_on()
    names = [f"{prefix}-{i}" for i in range(4)]
    ask_many(team, names, "4s")
    bodies = wait_all_granted(team, names, timeout=45)
    check_bindings(team)
    lags = watch_revocations(team, expiries_of(bodies.values()))
    return verify(team, operator, bodies, scenario, lags)


def test_errors_on_a_share_of_requests(team: Team, operator: Operator, faults: Any) -> None:
    def on() -> None:
        faults.set(
            error_rate=0.3,
            error_codes=[429, 500, 503],
            seed=8,
            match={"user_agents": OPERATOR_AGENTS},
        )

    try:
        run_scenario(team, operator, "30% 429/500/503", "err", on)
        print(f"[30% 429/500/503] injected: {faults.state()['counters']['errors']}")
    finally:
        faults.reset()
    drain(team)


def test_added_latency(team: Team, operator: Operator, faults: Any) -> None:
    def on() -> None:
        faults.set(latency_ms=250, jitter_ms=250, match={"user_agents": OPERATOR_AGENTS})

    try:
        run_scenario(team, operator, "250-500 ms latency", "slow", on)
    finally:
        faults.reset()
    drain(team)


@pytest.mark.parametrize("forget", [False, True], ids=["watches-cut", "history-gone-410"])
def test_watch_streams_cut(team: Team, operator: Operator, faults: Any, forget: bool) -> None:
    stop = threading.Event()

    def cutter() -> None:
        while not stop.wait(0.7):
            if forget:
                faults.forget_history()
            faults.cut_watches()

    thread = threading.Thread(target=cutter, daemon=True)
    thread.start()
    try:
        run_scenario(
            team, operator, "410 Gone" if forget else "watches cut", "gone" if forget else "cut"
        )
    finally:
        stop.set()
        thread.join()
    # After the storm the watches are back: a new request is still granted.
    team.ask("after-storm", duration="1h")
    team.wait_phase("after-storm", "Active", timeout=20)
    drain(team)


def test_outage_while_grants_fall_due(team: Team, operator: Operator, faults: Any) -> None:
    team.policy()
    names = [f"due-{i}" for i in range(4)]
    ask_many(team, names, "8s")
    bodies = wait_all_granted(team, names, timeout=30)
    outage = 30.0
    faults.outage(outage, mode="hang")
    started = time.monotonic()
    try:
        # Asked while the operator cannot reach the API: granted once it is back.
        team.ask("during-outage", duration="1h")
        time.sleep(max(0.0, outage - (time.monotonic() - started)))
    finally:
        faults.end_outage()
    back = datetime.now(UTC)
    expiries = expiries_of(bodies.values())
    assert all(e < back for e in expiries.values()), (
        "the grants were meant to fall due inside the outage"
    )
    lags = watch_revocations(team, expiries, back=back)
    verify(team, operator, bodies, "30 s outage", lags)
    team.wait_phase("during-outage", "Active", timeout=20)
    check_bindings(team)
    drain(team)


def refuse_policy_watch(faults: Any) -> None:
    """The operator's watch of AccessPolicies ended and answered 429 from now on, as a
    restarted kube-apiserver answers while its caches fill; everything else is served."""
    faults.set(
        error_rate=1.0,
        error_codes=[429],
        match={
            "user_agents": OPERATOR_AGENTS,
            "verbs": ["watch"],
            "resources": ["accesspolicies"],
        },
    )
    faults.cut_watches()


def test_an_approver_is_heard_while_the_operators_policy_watch_is_refused(
    team: Team, leads: str, operator: Operator, faults: Any
) -> None:
    """Restarted, kube-apiserver answers watches 429 "storage is (re)initializing" for a while:
    a policy created then is in the API but not yet in the operator's policy index. A request
    it leaves pending names it; the approver's approval must be admitted and counted by it, not
    refused for the index's lag."""
    refuse_policy_watch(faults)
    try:
        team.policy(
            roles=("edit",),
            mode="Approvers",
            suffix="-lagging",
            approval={"approvers": {"groups": [leads]}, "required": 1},
        )
        team.ask("lagging", duration="1m")
        team.wait_phase("lagging", "Pending", timeout=20)
        approved = team.cluster.kubectl(
            "annotate", "accessrequest", "lagging", "-n", team.namespace,
            "lapse.dev/approve=looks right", as_user="bob", groups=(leads,), check=False,
        )  # fmt: skip
        assert approved.returncode == 0, approved.stderr
        team.wait_phase("lagging", "Active", timeout=20)
        refused = faults.state()["counters"]["errors"]
        assert sum(refused.values()) > 0, "the policy watch was never refused"
    finally:
        faults.reset()
    drain(team)


def indexed(operator: Operator, policy: str) -> bool:
    """Whether the operator's policy index holds `policy` (its `lapse_policy_info` metric)."""
    return operator.metrics().get(f'lapse_policy_info{{policy="{policy}"}}') == 1.0


def test_a_policy_deleted_while_the_operator_could_not_watch_grants_nothing_after(
    team: Team, operator: Operator, faults: Any
) -> None:
    """A policy is deleted while the operator's policy watch is refused, and the history it
    would resume from is gone (410): the operator lists again. What that listing no longer
    holds must leave its index; a request the deleted policy would have granted is denied."""
    policy = team.policy(roles=("edit",), suffix="-doomed")
    wait_for(lambda: indexed(operator, policy), 20, 0.2, "the operator to index the policy")
    refuse_policy_watch(faults)
    try:
        team.cluster.kubectl("delete", "accesspolicy", policy)
        faults.forget_history()
    finally:
        faults.reset()
    wait_for(
        lambda: not indexed(operator, policy), 30, 0.3, "the operator to drop the deleted policy"
    )
    team.ask("after-delete", duration="10m")
    team.wait_phase("after-delete", "Denied", timeout=20)
    assert not team.can_i("create", "deployments")
    drain(team)


def test_a_wave_of_ends_on_a_slow_api_server_deletes_before_it_records(
    team: Team, operator: Operator, faults: Any
) -> None:
    """Every binding delete takes 0.4 s, so a wave of more grants than the reaper has
    connections takes two rounds of deletes: the records of the first round's ends wait for
    the second round (without the wait, they are written while it is under way)."""
    faults.set(latency_ms=400, match={"verbs": ["delete"], "resources": ["rolebindings"]})
    try:
        after = deleted_after_the_first_record(team)
    finally:
        faults.reset()
    assert len(after) <= STILL_IN_FLIGHT, (
        f"{len(after)} of {WAVE} bindings were deleted after the first end was recorded"
    )
