"""Reliability fixtures: a private local API, operators started on demand, invariant checks.

The reliability suites kill, fault and duplicate the operator, so they get a Kubernetes API of
their own: the end-to-end session's operator never sees their objects, and their faults never
reach it. Operators are the end-to-end harness's `Operator`, run as the operator's
ServiceAccount with the shipped RBAC and started with extra `LAPSE_*` settings (crash points,
leader election); every one is stopped when its test ends.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from tests.cluster import Cluster, LocalServer, faults_client
from tests.e2e.conftest import (  # noqa: F401  (shared)
    Team,
    crds,
    installation,
    leads,
    operator_identity,
    team,
)
from tests.e2e.harness import Identity, Operator, parse_time, wait_for

MANAGED = "app.kubernetes.io/managed-by=lapse"
# Phases a request enters at most once: their audit lines must carry one id each.
ONCE = ("granted", "expired", "revoked")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A private API is what isolates these suites; other backends cannot give one.
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.localonly)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    server = LocalServer(tmp_path_factory.mktemp("reliability-kubeapi"))
    url = server.start()
    try:
        yield Cluster(
            "local",
            server.kubeconfig,
            url,
            tmp_path_factory.mktemp("reliability-kubectl-cache"),
            faults=faults_client(url, server.kubeconfig),
        )
    finally:
        server.stop()


class Operators:
    """Operator processes for one test, each with its own work directory and settings."""

    def __init__(self, cluster: Cluster, workdir: Path, identity: Identity | None = None) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.identity = identity
        self.all: list[Operator] = []

    def new(self, name: str, **env: str) -> Operator:
        directory = self.workdir / name
        directory.mkdir(parents=True, exist_ok=True)
        operator = Operator(self.cluster, directory, extra_env=env, identity=self.identity)
        self.all.append(operator)
        return operator

    def stop_all(self) -> None:
        for operator in self.all:
            operator.stop()
            print(
                f"\n{operator.workdir.name}: log {operator.log_path}, audit {operator.audit_path}"
            )


@pytest.fixture
def operators(
    cluster: Cluster,
    crds: None,  # noqa: F811
    operator_identity: Identity,  # noqa: F811
    tmp_path: Path,
) -> Iterator[Operators]:
    group = Operators(cluster, tmp_path, operator_identity)
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture
def operator(operators: Operators) -> Operator:
    """The test's operator, not yet started: each test starts it with the settings it needs."""
    return operators.new("operator")


@pytest.fixture
def faults(cluster: Cluster) -> Iterator[Any]:
    assert cluster.faults is not None
    cluster.faults.reset()
    try:
        yield cluster.faults
    finally:
        cluster.faults.reset()


# The operator's own requests: kopf's watches and handlers, and Lapse's client. kubectl and
# the test's Python client are left alone, so the test can watch what happens.
OPERATOR_AGENTS = ["kopf/*", "lapse-operator*"]


def wait_crashed(operator: Operator, timeout: float = 30) -> int:
    """Wait for the operator to die at its crash point; its exit status."""
    assert operator.process is not None
    code = operator.process.wait(timeout=timeout)
    operator.process = None
    return code


def rbac(cluster: Cluster) -> kubernetes.client.RbacAuthorizationV1Api:
    return kubernetes.client.RbacAuthorizationV1Api(cluster.api())


def managed_bindings(crew: Team) -> list[dict[str, Any]]:
    listing = rbac(crew.cluster).list_namespaced_role_binding(
        crew.namespace, label_selector=MANAGED
    )
    items = crew.cluster.api().sanitize_for_serialization(listing)["items"]
    return list(items)


def requests(crew: Team) -> list[dict[str, Any]]:
    result = crew.cluster.kubectl("get", "accessrequests", "-n", crew.namespace, "-o", "json")
    return list(json.loads(result.stdout)["items"])


def ask_many(crew: Team, names: Iterable[str], duration: str) -> None:
    """Apply several requests in one kubectl call (one process instead of one each)."""
    manifests = [crew.manifest(name, duration=duration) for name in names]
    crew.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}),
    )


def wait_all_granted(crew: Team, names: Iterable[str], timeout: float) -> dict[str, dict[str, Any]]:
    wanted = set(names)
    # Under faults the grants land at different times, and a short one may have lapsed before
    # the last is granted: remember each as soon as it was granted (Active, or already ended
    # after a grant), with the body that carries its expiry.
    found: dict[str, dict[str, Any]] = {}

    def all_granted() -> dict[str, dict[str, Any]] | None:
        for r in requests(crew):
            name, status = r["metadata"]["name"], r.get("status", {})
            if name in wanted and name not in found and status.get("grantedAt"):
                found[name] = r
        return found if set(found) == wanted else None

    return wait_for(all_granted, timeout, 0.3, f"{sorted(wanted)} to be granted")


def watch_revocations(
    crew: Team, expiries: dict[str, datetime], back: datetime | None = None, timeout: float = 60
) -> dict[str, float]:
    """Poll until every binding in `expiries` (name -> expiresAt) is gone; how late each went,
    in seconds after its expiry or after `back` (the API's return), whichever is later."""
    lags: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(lags) < len(expiries):
        now = datetime.now(UTC)
        alive = {b["metadata"]["name"] for b in managed_bindings(crew)}
        for name, expiry in expiries.items():
            if name not in lags and name not in alive:
                due = max(expiry, back) if back else expiry
                lags[name] = max(0.0, (now - due).total_seconds())
        if time.monotonic() > deadline:
            raise AssertionError(
                f"bindings outlived their expiry: {sorted(set(expiries) - set(lags))}"
            )
        time.sleep(0.1)
    return lags


def expiries_of(bodies: Iterable[dict[str, Any]]) -> dict[str, datetime]:
    return {
        body["status"]["bindings"][0]["name"]: parse_time(body["status"]["expiresAt"])
        for body in bodies
    }


def check_bindings(crew: Team) -> None:
    """No orphan, no duplicate: every managed binding belongs to exactly one live, Active
    request that records it, and every Active request has exactly its bindings."""
    live = {r["metadata"]["uid"]: r for r in requests(crew)}
    owners: Counter[str] = Counter()
    for binding in managed_bindings(crew):
        owner = (binding["metadata"].get("annotations") or {}).get("lapse.dev/request-uid")
        name = binding["metadata"]["name"]
        assert owner in live, f"orphan binding {name}"
        request = live[owner]
        assert request["status"].get("phase") == "Active", f"{name} outlived its request's end"
        recorded = {b.get("uid") for b in request["status"].get("bindings", [])}
        assert binding["metadata"]["uid"] in recorded, f"{name} is not the binding recorded"
        owners[owner] += 1
    assert all(count == 1 for count in owners.values()), f"duplicate bindings: {owners}"
    now = datetime.now(UTC)
    for uid, request in live.items():
        status = request.get("status", {})
        if status.get("phase") != "Active":
            continue
        # Access ends binding first, record second: past its expiry an Active request may
        # already have lost its binding while the Expired status write is still on its way.
        if status.get("expiresAt") and parse_time(status["expiresAt"]) <= now:
            continue
        assert owners[uid] == 1, f"{request['metadata']['name']} is Active without a binding"


def check_audit(
    lines: list[dict[str, Any]], uids: dict[str, str], actions: dict[str, tuple[str, ...]]
) -> int:
    """Every expected transition (request name -> actions) has audit lines that all carry
    one id; nothing else has two ids. Returns how many lines were repeats (at least once)."""
    by_key: defaultdict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        by_key[(line.get("uid", ""), line.get("action", ""))].append(line)
    repeats = 0
    for name, expected in actions.items():
        for action in expected:
            found = by_key.get((uids[name], action), [])
            assert found, f"no {action} audit line for {name}"
            ids = {line.get("id") for line in found}
            assert len(ids) == 1 and None not in ids, f"{name} {action}: ids {ids}"
            repeats += len(found) - 1
    for (uid, action), found in by_key.items():
        if action in ONCE:
            assert len({line.get("id") for line in found}) == 1, f"{uid} {action} twice"
    return repeats


def check_events(crew: Team, name: str, reasons: Iterable[str]) -> int:
    """Each reason's Event is there at least once; how many repeats."""
    counts = Counter(e.get("reason") for e in crew.events(name))
    for reason in reasons:
        assert counts[reason] >= 1, f"no {reason} Event on {name}: {dict(counts)}"
    return sum(counts[r] - 1 for r in reasons)


def drain(crew: Team) -> None:
    """Delete every request while an operator runs, so no later test's operator inherits
    grants from this one."""
    crew.cluster.kubectl("delete", "accessrequests", "--all", "-n", crew.namespace, "--wait=false")
    wait_for(lambda: not requests(crew), 30, 0.3, "the test's requests to be deleted")
