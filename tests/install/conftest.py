"""Lapse as users install it: the image in pods on a real node, by each documented route.

These tests need a real cluster with a node where the image built by `make image` was loaded
(`make image-load` puts it on the node of `../shared/realk8s`): `LAPSE_TEST_CLUSTER=kubeconfig`
and `LAPSE_TEST_INSTALL=1`, as `make test-install` sets them. Elsewhere (as in `make test` on
the local API, which runs no pods) they are skipped, saying why.

Every test installs Lapse cluster-wide in `lapse-system`, so the module's routes run one after
the other; a clean slate is made before each install, whatever an earlier run left.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import kubernetes.watch
import pytest
from kubernetes.client.rest import ApiException

from lapse.core.bindings import MANAGED_SELECTOR
from lapse.core.kinds import GROUP, VERSION
from tests.cluster import ROOT, Cluster
from tests.conftest import backend_of
from tests.e2e.harness import parse_time, wait_for

INSTALL_VARIABLE = "LAPSE_TEST_INSTALL"
NAMESPACE = "lapse-system"
DEPLOYMENT = "lapse-operator"
SAMPLES = ROOT / "deploy" / "samples"
SAMPLE_FILES = (
    "namespace",
    "requester-clusterrole",
    "approver-clusterrole",
    "breakglass-clusterrole",
    "policy",
    "policy-approvers",
    "breakglass-policy",
)
# The sample team (README.md): who plays whom.
ALICE = ("alice", "payments-devs")
BOB = ("bob", "payments-leads")
CAROL = ("carol", "sre-oncall")
DAVE = ("dave", "sre-leads")
TEAM_NAMESPACE = "payments"
# Figures of the run, printed at the end (and written to $LAPSE_TEST_FIGURES if set).
FIGURES = pytest.StashKey[dict[str, Any]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mine = [item for item in items if "tests/install/" in item.nodeid]
    if not mine:
        return
    reason = None
    if backend_of(config) != "kubeconfig":
        reason = "needs a real cluster with a node (LAPSE_TEST_CLUSTER=kubeconfig)"
    elif not os.environ.get(INSTALL_VARIABLE):
        reason = (
            f"installs Lapse cluster-wide: set {INSTALL_VARIABLE}=1 with the image on the node "
            "(`make image image-load test-install`)"
        )
    if reason:
        for item in mine:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FIGURES] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    figures = terminalreporter.config.stash.get(FIGURES, {})
    for name, value in figures.items():
        terminalreporter.write_line(f"install {name}: {value}")
    target = os.environ.get("LAPSE_TEST_FIGURES")
    if target and figures:
        Path(target).write_text(json.dumps(figures, indent=2, default=str) + "\n")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.config.stash[FIGURES]


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Install:
    """Lapse installed in `lapse-system`, and the sample team acting on it."""

    cluster: Cluster
    route: str

    def kubectl(self, *args: str, who: tuple[str, str] | None = None, **kw: Any) -> Any:
        if who is None:
            return self.cluster.kubectl(*args, **kw)
        return self.cluster.kubectl(*args, as_user=who[0], groups=(who[1],), **kw)

    def api_as(self, who: tuple[str, str]) -> kubernetes.client.ApiClient:
        """A client that acts as `who` (impersonation), as kubectl --as does."""
        client = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.cluster.kubeconfig)
        )
        client.set_default_header("Impersonate-User", who[0])
        client.set_default_header("Impersonate-Group", who[1])
        return client

    def wait_ready(self, timeout: float = 180) -> None:
        """Rolled out, and the webhooks answer through the Service: a dry-run request gets
        its requester stamped by the mutating webhook."""
        self.kubectl(
            "-n", NAMESPACE, "rollout", "status", f"deployment/{DEPLOYMENT}",
            f"--timeout={int(timeout)}s", timeout=timeout + 10,
        )  # fmt: skip
        wait_for(self.stamps_requests, timeout, 0.5, "the webhooks answering through the Service")

    def stamps_requests(self) -> bool:
        result = self.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-",
            input=json.dumps(request_manifest("probe", "view", "1m")), check=False, who=ALICE,
        )  # fmt: skip
        if result.returncode != 0:
            return False
        return bool(json.loads(result.stdout)["spec"].get("requester", {}).get("username"))

    def apply_samples(self) -> None:
        """The sample team's roles and policies (README.md), once the CRDs are served."""
        self.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s",
            *(f"crd/{plural}.{GROUP}" for plural in ("accesspolicies", "accessrequests",
                                                      "breakglasses")),
        )  # fmt: skip
        for name in SAMPLE_FILES:
            self.kubectl("apply", "-f", str(SAMPLES / f"{name}.yaml"))

    def pods(self) -> list[dict[str, Any]]:
        core = kubernetes.client.CoreV1Api(self.cluster.api())
        listing = core.list_namespaced_pod(
            NAMESPACE, label_selector="app.kubernetes.io/component=operator"
        )
        return [self.cluster.api().sanitize_for_serialization(p) for p in listing.items]  # type: ignore[no-untyped-call]

    def leader(self) -> str:
        coordination = kubernetes.client.CoordinationV1Api(self.cluster.api())
        try:
            lease = coordination.read_namespaced_lease("lapse-leader", NAMESPACE)
        except ApiException:
            return ""
        return str(lease.spec.holder_identity or "")

    def requests(self, namespace: str = TEAM_NAMESPACE) -> list[dict[str, Any]]:
        custom = kubernetes.client.CustomObjectsApi(self.cluster.api())
        listing = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "accessrequests")
        return list(listing["items"])

    def managed_bindings(self) -> list[dict[str, Any]]:
        rbac = kubernetes.client.RbacAuthorizationV1Api(self.cluster.api())
        names = [
            f"{b.metadata.namespace}/{b.metadata.name}"
            for b in rbac.list_role_binding_for_all_namespaces(
                label_selector=MANAGED_SELECTOR
            ).items
        ]
        names += [
            b.metadata.name
            for b in rbac.list_cluster_role_binding(label_selector=MANAGED_SELECTOR).items
        ]
        return [{"name": n} for n in names]


FENCE = re.compile(r"^```sh\n(?P<body>.*?)^```", re.S | re.M)


def doc_blocks(path: Path, heading: str) -> list[str]:
    """The shell blocks of one section (`## heading`) of a Markdown file, as written."""
    text = path.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return [m["body"] for m in FENCE.finditer(text[start : end if end > 0 else None])]


def run_blocks(cluster: Cluster, *blocks: str, timeout: float = 300) -> str:
    """Blocks run as a person pastes them into a shell at the top of a clone: bash, stopping
    at the first failure, kubectl and kubectl lapse from .venv/bin, the cluster's KUBECONFIG."""
    script = "set -euo pipefail\n" + "\n".join(blocks)
    result = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=cluster.env(), capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{script}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def request_manifest(
    name: str, role: str, duration: str, *, generate: bool = False
) -> dict[str, Any]:
    metadata: dict[str, Any] = ({"generateName": f"{name}-"} if generate else {"name": name}) | {
        "namespace": TEAM_NAMESPACE
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AccessRequest",
        "metadata": metadata,
        "spec": {"role": {"kind": "ClusterRole", "name": role}, "duration": duration,
                 "reason": "Installation test of Lapse."},
    }  # fmt: skip


@dataclass
class BindingWatch:
    """When each of Lapse's RoleBindings in the team's namespace was seen deleted: the moment
    the access ended, as the API server tells it."""

    cluster: Cluster
    deleted: dict[str, datetime] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rbac = kubernetes.client.RbacAuthorizationV1Api(self.cluster.api())
        version = rbac.list_namespaced_role_binding(
            TEAM_NAMESPACE, label_selector=MANAGED_SELECTOR
        ).metadata.resource_version
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for event in watch.stream(
                    rbac.list_namespaced_role_binding, TEAM_NAMESPACE,
                    label_selector=MANAGED_SELECTOR, resource_version=version,
                    timeout_seconds=5,
                ):  # fmt: skip
                    version = event["object"].metadata.resource_version
                    if event["type"] == "DELETED":
                        self.deleted[event["object"].metadata.name] = now()
            except ApiException:
                version = rbac.list_namespaced_role_binding(
                    TEAM_NAMESPACE, label_selector=MANAGED_SELECTOR
                ).metadata.resource_version

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def lateness(install: Install, watch: BindingWatch, names: list[str]) -> list[float]:
    """Seconds each named request's binding outlived its expiry."""
    by_name = {r["metadata"]["name"]: r for r in install.requests()}
    late: list[float] = []
    for name in names:
        status = by_name[name].get("status") or {}
        binding = next(iter(status.get("bindings") or ()), {}).get("name")
        assert binding and binding in watch.deleted, f"{name}: binding {binding} never deleted"
        late.append((watch.deleted[binding] - parse_time(status["expiresAt"])).total_seconds())
    return late


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def clean_slate(cluster: Cluster) -> None:
    """No Lapse on the cluster, whatever a killed run left: its operator stopped first (it
    would write its webhooks back), then the webhooks (with nobody behind them they refuse
    every write below), the finalizers nobody will take off, the objects, the namespace."""
    cluster.kubectl(
        "-n", NAMESPACE, "delete", "deployment", DEPLOYMENT, "--ignore-not-found",
        "--timeout=120s", check=False, timeout=130,
    )  # fmt: skip
    cluster.kubectl(
        "-n", NAMESPACE, "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=lapse",
        "--timeout=120s", check=False, timeout=130,
    )  # fmt: skip
    cluster.kubectl(
        "delete", "--ignore-not-found",
        "mutatingwebhookconfiguration/lapse.dev", "validatingwebhookconfiguration/lapse.dev",
    )  # fmt: skip
    custom = kubernetes.client.CustomObjectsApi(cluster.api())
    for plural in ("accessrequests", "breakglasses"):
        try:
            items = custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"]
        except ApiException:
            continue
        for item in items:
            meta = item["metadata"]
            if meta.get("finalizers"):
                where = ("--namespace", meta["namespace"]) if meta.get("namespace") else ()
                cluster.kubectl(
                    "patch", plural, meta["name"], *where, "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}', check=False,
                )  # fmt: skip
        cluster.kubectl("delete", plural, "--all", "-A", "--wait=false", check=False)
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=120s")
    cluster.kubectl(
        "delete", "clusterrole,clusterrolebinding", "lapse-operator", "--ignore-not-found"
    )
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.api())
    for b in rbac.list_role_binding_for_all_namespaces(label_selector=MANAGED_SELECTOR).items:
        cluster.kubectl(
            "delete", "rolebinding", b.metadata.name, "-n", b.metadata.namespace,
            "--ignore-not-found", check=False,
        )  # fmt: skip
    for b in rbac.list_cluster_role_binding(label_selector=MANAGED_SELECTOR).items:
        cluster.kubectl("delete", "clusterrolebinding", b.metadata.name, "--ignore-not-found")


@pytest.fixture(scope="module")
def slate(cluster: Cluster) -> Iterator[None]:
    clean_slate(cluster)
    yield
    clean_slate(cluster)


def wait_phase(install: Install, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        for item in install.requests():
            if (
                item["metadata"]["name"] == name
                and (item.get("status") or {}).get("phase") == phase
            ):
                return item
        return None

    return wait_for(probe, timeout, 0.5, f"{name} {phase}")


def wait_all(
    install: Install, names: list[str], phases: tuple[str, ...], timeout: float, what: str
) -> None:
    """Until every named request is in one of `phases`."""

    def reached() -> bool:
        found = {r["metadata"]["name"]: r for r in install.requests()}
        return all((found.get(n, {}).get("status") or {}).get("phase") in phases for n in names)

    wait_for(reached, timeout, 1, what)


def elapsed(since: float) -> float:
    return round(time.monotonic() - since, 2)
