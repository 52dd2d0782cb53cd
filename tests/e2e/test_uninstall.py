"""Uninstalling Lapse ends every grant it made; restarting it ends none.

A stopping replica tells the two apart by its Deployment (LAPSE_DEPLOYMENT in LAPSE_NAMESPACE):
gone or being deleted means uninstalled. Here the operator runs from this test, in url mode,
with LAPSE_DEPLOYMENT set explicitly and a Deployment object of that name in the test's own
namespace (no pods: the API server only stores it), so the same shutdown path a pod takes is
exercised by deleting that object and sending SIGTERM.

The session's operator, if an earlier test started it, is stopped for the duration: two
operators would act on the same objects, and the session's would put back the finalizers this
one takes off. An uninstall ends every grant in the cluster, so on a cluster holding someone
else's grants (or running someone else's Lapse) these tests skip rather than end them.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lapse.core.kinds import FINALIZER
from tests.cluster import Cluster
from tests.conftest import TEST_PREFIX
from tests.e2e.conftest import SAMPLES, Operator, Team, wait_for

# The installed Lapse's webhook configurations (lapse.dev) stay while its pods are scaled down,
# failing closed, so this test's own operator could not be asked anything beside them.
pytestmark = pytest.mark.process_only(
    reason="runs an operator process of its own, which the installed Lapse's webhooks would "
    "stand in front of; the installed Lapse's uninstall is `make test-install`'s"
)

RBAC = "rbac.authorization.k8s.io"
DEPLOYMENT = "lapse-operator"
ENDED = {"Expired", "Denied", "Revoked", "Invalid"}
CRDS = ("accessrequests.lapse.dev", "breakglasses.lapse.dev", "accesspolicies.lapse.dev")


@dataclass
class Installed:
    """This test's Lapse: its operator, the Deployment it runs under, a team and an on-call."""

    cluster: Cluster
    operator: Operator
    team: Team
    oncall: str
    glasses: list[str]

    def break_glass(self, name: str) -> dict[str, Any]:
        manifest = {
            "apiVersion": "lapse.dev/v1alpha1",
            "kind": "BreakGlass",
            "metadata": {"name": name},
            "spec": {
                "role": {"kind": "ClusterRole", "name": "view"},
                "duration": "30m",
                "reason": "The database failed over and needs a manual restart.",
                "incident": "INC-4711",
            },
        }
        self.glasses.append(name)
        self.cluster.kubectl(
            "create", "-f", "-", as_user="sre", groups=(self.oncall,), input=json.dumps(manifest)
        )
        return wait_for(
            lambda: _phase(self.get("breakglass", name), "Active"), 10, 0.1, f"{name} Active"
        )

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        where = ["-n", namespace] if namespace else []
        result = self.cluster.kubectl("get", kind, name, *where, "-o", "json", check=False)
        return dict(json.loads(result.stdout)) if result.returncode == 0 else None

    def binding(self, ref: dict[str, Any]) -> dict[str, Any] | None:
        kind = "clusterrolebinding" if ref["kind"] == "ClusterRoleBinding" else "rolebinding"
        return self.get(kind, ref["name"], ref.get("namespace"))


def _phase(body: dict[str, Any] | None, phase: str) -> dict[str, Any] | None:
    return body if body and (body.get("status") or {}).get("phase") == phase else None


def _session_operator(request: pytest.FixtureRequest) -> Operator | None:
    """The session's operator if an earlier test started it (never starting it here: on a
    real cluster it would install its identity into lapse-system)."""
    definitions = request._fixturemanager.getfixturedefs("operator", request.node) or ()
    for definition in definitions:
        cached = definition.cached_result
        if cached is not None and isinstance(cached[0], Operator):
            return cached[0]
    return None


def _someone_elses(cluster: Cluster, namespace: str) -> str | None:
    """Why running an uninstall here would touch what is not this test's, or None."""
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        found = cluster.kubectl("get", kind, "lapse.dev", "-o", "json", check=False)
        if found.returncode == 0 and json.loads(found.stdout).get("webhooks"):
            return f"a Lapse is running on this cluster ({kind} lapse.dev serves)"
    for kind in ("accessrequests", "breakglasses"):
        listed = json.loads(cluster.kubectl("get", kind, "-A", "-o", "json").stdout)["items"]
        live = [
            o
            for o in listed
            if (o.get("status") or {}).get("phase") not in ENDED
            and not (o["metadata"].get("namespace") or o["metadata"]["name"]).startswith(namespace)
        ]
        if live:
            return f"{len(live)} {kind} of someone else have not ended"
    return None


@pytest.fixture
def installed(
    cluster: Cluster, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Installed]:
    # Not the shared `namespace` fixture: on a cluster that outlives the run it first clears
    # what it takes for an earlier run's leftovers, and here that may be someone else's.
    namespace = f"{TEST_PREFIX}uninstall-{secrets.token_hex(3)}"
    if cluster.backend == "local":
        request.getfixturevalue("crds")
    elif cluster.kubectl("get", "crd", *CRDS, check=False).returncode != 0:
        pytest.skip("Lapse's CRDs are not installed on this cluster")
    session = _session_operator(request)
    if session is not None:
        session.stop()
    try:
        reason = _someone_elses(cluster, namespace)
        if reason:
            pytest.skip(f"an uninstall would end grants that are not this test's: {reason}")
        cluster.kubectl("create", "namespace", namespace)
        try:
            yield from _install(cluster, namespace, tmp_path)
        finally:
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    finally:
        if session is not None:
            session.start()


def _install(cluster: Cluster, namespace: str, workdir: Path) -> Iterator[Installed]:
    for sample in ("requester-clusterrole.yaml", "breakglass-clusterrole.yaml"):
        cluster.kubectl("apply", "-f", str(SAMPLES / sample))
    group, oncall = f"{namespace}-devs", f"{namespace}-oncall"
    bindings = [
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "lapse-requesters", "namespace": namespace},
            "subjects": [{"kind": "Group", "name": group, "apiGroup": RBAC}],
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "lapse-requester"},
        },
        {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": oncall},
            "subjects": [{"kind": "Group", "name": oncall, "apiGroup": RBAC}],
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "lapse-breakglass"},
        },
        # The Deployment this operator runs under: stored, never scheduled (no replicas).
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": DEPLOYMENT, "namespace": namespace},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": namespace}},
                "template": {
                    "metadata": {"labels": {"app": namespace}},
                    "spec": {"containers": [{"name": "operator", "image": "lapse:test"}]},
                },
            },
        },
    ]
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": bindings}),
    )
    operator = Operator(
        cluster,
        workdir,
        extra_env={
            "LAPSE_NAMESPACE": namespace,
            "LAPSE_DEPLOYMENT": DEPLOYMENT,
            # Its own webhook configurations, never the lapse.dev ones an install uses.
            "LAPSE_WEBHOOK_CONFIGURATION": f"{namespace}.lapse.dev",
        },
    )
    operator.start()
    team = Team(cluster, namespace, group=group)
    lapse = Installed(cluster, operator, team, oncall, [])
    policy = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": f"{namespace}-bg"},
        "spec": {
            "breakGlass": {
                "requesters": {"groups": [oncall]},
                "roles": [{"kind": "ClusterRole", "name": "view"}],
                "maxDuration": "1h",
                "requireIncident": True,
            }
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(policy))
    team.policies.append(f"{namespace}-bg")
    try:
        yield lapse
    finally:
        if operator.process is None:
            operator.start()
        # Deleted while the operator runs, so nothing is left waiting on its finalizer.
        for name in lapse.glasses:
            cluster.kubectl("delete", "breakglass", name, "--ignore-not-found", check=False)
        cluster.kubectl("delete", "accessrequests", "--all", "-n", namespace, check=False)
        operator.stop()
        for name in team.policies:
            cluster.kubectl("delete", "accesspolicy", name, "--ignore-not-found", check=False)
        cluster.kubectl("delete", "clusterrolebinding", oncall, "--ignore-not-found", check=False)
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            cluster.kubectl(
                "delete", kind, f"{namespace}.lapse.dev", "--ignore-not-found", check=False
            )
        print(f"\noperator log: {operator.log_path}\naudit trail: {operator.audit_path}")


def _grant_both(lapse: Installed) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """An active AccessRequest (a RoleBinding) and break-glass (a ClusterRoleBinding)."""
    team = lapse.team
    team.policy(roles=("view",))
    team.ask("granted", role="view", duration="1h")
    request = team.wait_phase("granted", "Active")
    glass = f"{team.namespace}-glass"
    lapse.break_glass(glass)
    return glass, request, lapse.get("breakglass", glass) or {}


def test_uninstall_ends_every_grant_and_leaves_nothing_stuck(installed: Installed) -> None:
    lapse, team = installed, installed.team
    glass, request, broken = _grant_both(lapse)
    refs = [*request["status"]["bindings"], *broken["status"]["bindings"]]
    assert all(lapse.binding(ref) for ref in refs)

    lapse.cluster.kubectl("delete", "deployment", DEPLOYMENT, "-n", team.namespace)
    lapse.operator.stop()

    log = lapse.operator.log_path.read_text()
    assert "Uninstalled: ended 2 grant(s)" in log, log[-3000:]
    for ref in refs:
        assert lapse.binding(ref) is None, f"{ref} outlived the uninstall"
    for kind, name, namespace in (
        ("accessrequest", "granted", team.namespace),
        ("breakglass", glass, None),
    ):
        body = lapse.get(kind, name, namespace)
        assert body is not None
        assert body["status"]["phase"] == "Revoked"
        assert body["status"]["reason"] == "Uninstalled"
        assert "uninstalled" in body["status"]["message"]
        assert FINALIZER not in (body["metadata"].get("finalizers") or [])
    assert team.wait_event("granted", "Uninstalled")["type"] == "Normal"
    ended = {
        (line["kind"], line["name"])
        for line in lapse.operator.audit_lines()
        if line.get("action") == "revoked" and line.get("reason") == "Uninstalled"
    }
    assert ended == {("AccessRequest", "granted"), ("BreakGlass", glass)}
    # With no operator left, deleting them (as deleting the CRDs would) leaves nothing behind.
    lapse.cluster.kubectl("delete", "breakglass", glass, "--wait=false")
    lapse.cluster.kubectl("delete", "accessrequest", "granted", "-n", team.namespace)
    wait_for(lambda: lapse.get("breakglass", glass) is None, 10, 0.2, f"{glass} gone")
    assert lapse.get("accessrequest", "granted", team.namespace) is None


def test_a_restart_ends_nothing(installed: Installed) -> None:
    lapse, team = installed, installed.team
    glass, request, broken = _grant_both(lapse)
    refs = [*request["status"]["bindings"], *broken["status"]["bindings"]]

    lapse.operator.stop()

    assert "Uninstall" not in lapse.operator.log_path.read_text()
    for ref in refs:
        assert lapse.binding(ref) is not None
    for kind, name, namespace in (
        ("accessrequest", "granted", team.namespace),
        ("breakglass", glass, None),
    ):
        body = lapse.get(kind, name, namespace)
        assert body is not None and body["status"]["phase"] == "Active"
        assert FINALIZER in body["metadata"]["finalizers"]
    assert team.can_i("get", "pods")
