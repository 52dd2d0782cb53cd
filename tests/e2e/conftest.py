"""End-to-end fixtures: the CRDs, the real operator, and a team per test.

The operator runs once per session, chosen by `LAPSE_TEST_OPERATOR`:

- `process` (default): `python -m lapse.main` against the test cluster, as its own
  ServiceAccount holding exactly the RBAC that `deploy/` ships (never as admin, so a missing
  rule fails here); its stdout (the audit trail) and stderr (logs) go to files the tests read.
- `in-cluster`: Lapse as users install it, `kubectl apply -k` of an overlay of `deploy/`, its
  image in pods on the cluster's node (`make image image-load`); its pods' logs are followed
  into the same two files. Uninstalled at the end as deploy/README.md says. Tests marked
  `process_only` need what only a local process offers, and say why when skipped.

Every test gets its own namespace, requester group and AccessPolicy, and acts through kubectl
impersonation holding only the sample `lapse-requester` ClusterRole — never as admin.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml
from kubernetes.client.rest import ApiException

from demo.harness import requesters_binding
from demo.pods import node_address
from tests.cluster import AuditWebhook, Cluster, write_token_kubeconfig
from tests.conftest import backend_of
from tests.e2e.harness import (
    ROOT,
    Identity,
    InClusterOperator,
    Operator,
    parse_time,
    pod_identity,
    service_account_identity,
    wait_for,
)
from tests.sinks.https.collector import TOKEN, HecServer, build_pki

__all__ = ["Identity", "InClusterOperator", "Operator", "Team", "parse_time", "wait_for"]

SAMPLES = ROOT / "deploy" / "samples"
OPERATOR_BACKENDS = ("process", "in-cluster")
OPERATOR_VARIABLE = "LAPSE_TEST_OPERATOR"


def operator_backend() -> str:
    chosen = os.environ.get(OPERATOR_VARIABLE) or "process"
    if chosen not in OPERATOR_BACKENDS:
        raise pytest.UsageError(
            f"unknown {OPERATOR_VARIABLE} {chosen!r}; one of {OPERATOR_BACKENDS}"
        )
    return chosen


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "process_only(reason): needs the operator as a local process; skipped, with the reason, "
        f"under {OPERATOR_VARIABLE}=in-cluster",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if operator_backend() != "in-cluster":
        return
    if backend_of(config) == "local":
        raise pytest.UsageError(
            f"{OPERATOR_VARIABLE}=in-cluster needs a cluster with a node: the local API runs no "
            "pods (LAPSE_TEST_CLUSTER=kubeconfig)"
        )
    for item in items:
        marker = item.get_closest_marker("process_only")
        if marker is not None and "tests/e2e/" in item.nodeid:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            item.add_marker(pytest.mark.skip(reason=f"in-cluster operator: {reason}"))


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/accessrequests.lapse.dev",
        "crd/accesspolicies.lapse.dev",
    )
    cluster.kubectl("apply", "-f", str(SAMPLES / "requester-clusterrole.yaml"))


# The session's operator, however it runs: ended owners go RETENTION after they end (long
# enough for every test to read what it ended; tests/e2e/test_retention.py waits for it).
RETENTION = 30.0
SESSION_ENV = {"LAPSE_RETENTION": f"{RETENTION:g}s", "LAPSE_RETENTION_INTERVAL": "2s"}


@pytest.fixture(scope="session")
def trail_collector(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HecServer]:
    """The audit trail's sink for the session's operator: a real HTTPS collector on this host
    (tests/sinks/https), its authority trusted by the operator; reached on the node's address
    by the operator's pods."""
    root = tmp_path_factory.mktemp("trail")
    (root / "pki").mkdir()
    listen = address = "127.0.0.1"
    if operator_backend() == "in-cluster":
        listen, address = "0.0.0.0", node_address(request.getfixturevalue("cluster"))
    pki = build_pki(root / "pki", hosts=("localhost", address))
    server = HecServer(pki=pki, state=root, listen=listen, address=address)
    (root / "token").write_text(TOKEN)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# Where the operator's pods find the collector's authority and token (Secrets the test's
# overlay generates, mounted read-only).
POD_TRAIL_CA = "/etc/lapse/trail/https-ca"
POD_TRAIL_TOKEN = "/etc/lapse/trail/https-token"


def trail_env(collector: HecServer, *, in_pods: bool = False) -> dict[str, str]:
    ca = f"{POD_TRAIL_CA}/ca.crt" if in_pods else str(collector.pki.ca)
    token = f"{POD_TRAIL_TOKEN}/token" if in_pods else str(collector.state / "token")
    return {
        "LAPSE_TRAIL_HTTPS_URL": collector.url,
        "LAPSE_TRAIL_HTTPS_CA_FILE": ca,
        "LAPSE_TRAIL_HTTPS_TOKEN_FILE": token,
        "LAPSE_TRAIL_RETRY_MAX": "2s",
    }


def trail_secrets(collector: HecServer) -> dict[str, tuple[str, dict[str, Path]]]:
    return {
        "trail-https-ca": (POD_TRAIL_CA, {"ca.crt": collector.pki.ca}),
        "trail-https-token": (POD_TRAIL_TOKEN, {"token": collector.state / "token"}),
    }


@pytest.fixture(scope="session")
def installation(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InClusterOperator | None]:
    """Lapse installed in pods for the session (in-cluster only; None otherwise), after what
    an earlier run left was cleared: `leftovers_removed` deletes the webhook configurations,
    which the install then brings back and its leader fills."""
    if operator_backend() != "in-cluster":
        yield None
        return
    cluster: Cluster = request.getfixturevalue("cluster")
    request.getfixturevalue("leftovers_removed")
    request.getfixturevalue("crds")
    collector: HecServer = request.getfixturevalue("trail_collector")
    pods = InClusterOperator(
        cluster,
        tmp_path_factory.mktemp("operator"),
        extra_env={**SESSION_ENV, **trail_env(collector, in_pods=True)},
        secrets=trail_secrets(collector),
    )
    try:
        pods.start()
        yield pods
    finally:
        pods.uninstall()
        print(f"\noperator log: {pods.log_path}\naudit trail: {pods.audit_path}")


@pytest.fixture(scope="session")
def operator_identity(
    cluster: Cluster,
    installation: InClusterOperator | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Identity:
    """The operator's ServiceAccount with the shipped RBAC, and a kubeconfig holding its token:
    installed here for the process, by the installation in pods."""
    workdir = tmp_path_factory.mktemp("operator-identity")
    if installation is not None:
        return pod_identity(cluster, workdir)
    return service_account_identity(cluster, workdir)


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster,
    leftovers_removed: None,
    crds: None,
    installation: InClusterOperator | None,
    operator_identity: Identity,
    tmp_path_factory: pytest.TempPathFactory,
    audit_webhook: AuditWebhook | None,
    trail_collector: HecServer,
) -> Iterator[Operator | InClusterOperator]:
    if installation is not None:
        installation.identity = operator_identity
        if not installation.running:
            installation.start()
        yield installation
        return
    process = Operator(
        cluster,
        tmp_path_factory.mktemp("operator"),
        identity=operator_identity,
        # The API server's audit events come to this operator's /audit (lapse.activity).
        extra_env={
            **SESSION_ENV,
            **trail_env(trail_collector),
            **(audit_webhook.operator_env() if audit_webhook else {}),
        },
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()
        print(f"\noperator log: {process.log_path}\naudit trail: {process.audit_path}")


@dataclass(frozen=True)
class Account:
    """A ServiceAccount acting with its own token."""

    cluster: Cluster
    username: str
    kubeconfig: Path
    token: str

    def kubectl(self, *args: str, as_user: str | None = None, input: str | None = None) -> Any:
        """kubectl with this account's token (and, given `as_user`, impersonating)."""
        return self.cluster.kubectl(
            f"--kubeconfig={self.kubeconfig}", *args, as_user=as_user, input=input, check=False
        )


@dataclass
class Team:
    """One test's people and policy: a requester group, its user, and its namespace."""

    cluster: Cluster
    namespace: str
    user: str = "alice"
    group: str = ""
    policies: list[str] = field(default_factory=list)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        """kubectl as the team's user: impersonated, holding only `lapse-requester`."""
        return self.cluster.kubectl(
            *args, as_user=self.user, groups=(self.group,), input=input, check=check
        )

    def policy(
        self,
        roles: tuple[str, ...] = ("view", "edit"),
        namespaces: tuple[str, ...] | None = None,
        default: str = "1h",
        maximum: str = "4h",
        mode: str = "Auto",
        suffix: str = "",
        requesters: tuple[str, ...] | None = None,
        approval: Mapping[str, Any] | None = None,
        footholds: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Apply an AccessPolicy for this team; `approval` adds to its approval block
        (approvers, required, timeout, trustedAppliers)."""
        name = f"{self.namespace}{suffix}"
        policy = {
            "apiVersion": "lapse.dev/v1alpha1",
            "kind": "AccessPolicy",
            "metadata": {"name": name},
            "spec": {
                "requesters": {"groups": list(requesters or (self.group,))},
                "roles": [{"kind": "ClusterRole", "name": r} for r in roles],
                "namespaces": list(namespaces if namespaces is not None else (self.namespace,)),
                "defaultDuration": default,
                "maxDuration": maximum,
                "approval": {"mode": mode, **(approval or {})},
                **({"footholds": dict(footholds)} if footholds else {}),
                **(extra or {}),
            },
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(policy))
        self.policies.append(name)
        return name

    def manifest(
        self,
        name: str,
        role: str = "edit",
        duration: str | None = "20s",
        namespace: str | None = None,
        **spec: Any,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "role": {"kind": "ClusterRole", "name": role},
            "reason": "End-to-end test of Lapse.",
            **spec,
        }
        if duration is not None:
            body["duration"] = duration
        return {
            "apiVersion": "lapse.dev/v1alpha1",
            "kind": "AccessRequest",
            "metadata": {"name": name, "namespace": namespace or self.namespace},
            "spec": body,
        }

    def ask(
        self,
        name: str,
        role: str = "edit",
        duration: str | None = "20s",
        check: bool = True,
        **spec: Any,
    ) -> Any:
        """Apply an AccessRequest as the team's user."""
        manifest = self.manifest(name, role, duration, **spec)
        return self.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=check)

    def request(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        result = self.cluster.kubectl(
            "get", "accessrequest", name, "-n", namespace or self.namespace, "-o", "json"
        )
        return dict(json.loads(result.stdout))

    def wait_phase(self, name: str, phase: str, timeout: float = 10) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            body = self.request(name)
            return body if body.get("status", {}).get("phase") == phase else None

        return wait_for(reached, timeout, 0.1, f"{name} to become {phase}")

    def can_i(self, verb: str, resource: str, user: str | None = None) -> bool:
        result = self.cluster.kubectl(
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            self.namespace,
            as_user=user or self.user,
            groups=(self.group,),
            check=False,
        )
        answer = result.stdout.strip()
        assert answer in ("yes", "no"), f"kubectl auth can-i said {result}"
        return answer == "yes"

    def events(self, name: str) -> list[dict[str, Any]]:
        result = self.cluster.kubectl("get", "events", "-n", self.namespace, "-o", "json")
        items = json.loads(result.stdout)["items"]
        return [e for e in items if e.get("involvedObject", {}).get("name") == name]

    def wait_event(self, name: str, reason: str, timeout: float = 10) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((e for e in self.events(name) if e.get("reason") == reason), None)

        return wait_for(find, timeout, 0.2, f"Event {reason} on {name}")

    def account(self, name: str, namespace: str | None = None) -> Account:
        """A ServiceAccount here and a kubeconfig holding a token the API server minted for it
        (TokenRequest): requests made with it carry the account's own credential, as a
        controller's in its pod do — unlike impersonation."""
        where = namespace or self.namespace
        manifest = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": where},
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
        token = self.cluster.kubectl(
            "create", "token", name, "-n", where, "--duration", "1h"
        ).stdout.strip()
        path = self.cluster.kubeconfig.parent / f"{where}-{name}.kubeconfig"
        write_token_kubeconfig(path, self.cluster.kubeconfig, token, name, where)
        return Account(self.cluster, f"system:serviceaccount:{where}:{name}", path, token)

    def account_with_token(self, username: str, token: str) -> Account:
        """Whoever holds `token`: a kubeconfig with it and nothing else."""
        name = username.rsplit(":", 1)[-1]
        path = self.cluster.kubeconfig.parent / f"{self.namespace}-{name}-{len(token)}.kubeconfig"
        write_token_kubeconfig(path, self.cluster.kubeconfig, token, name, self.namespace)
        return Account(self.cluster, username, path, token)

    def binding_count(self) -> int:
        """The bindings Lapse made in this namespace."""
        listing = self.cluster.kubectl(
            "get",
            "rolebindings",
            "-n",
            self.namespace,
            "-l",
            "app.kubernetes.io/managed-by=lapse",
            "-o",
            "json",
        )
        return len(json.loads(listing.stdout)["items"])

    def binding(self, name: str) -> dict[str, Any] | None:
        rbac = kubernetes.client.RbacAuthorizationV1Api(self.cluster.api())
        try:
            found = rbac.read_namespaced_role_binding(name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(self.cluster.api().sanitize_for_serialization(found))


@pytest.fixture
def team(cluster: Cluster, namespace: str, operator: Operator) -> Iterator[Team]:
    group = f"{namespace}-devs"
    members = requesters_binding(namespace, group)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(members))
    crew = Team(cluster, namespace, group=group)
    try:
        yield crew
    finally:
        for policy in crew.policies:
            cluster.kubectl("delete", "accesspolicy", policy, "--ignore-not-found", check=False)


@pytest.fixture
def leads(cluster: Cluster, team: Team) -> str:
    """The team's approver group, bound to the sample lapse-approver ClusterRole."""
    cluster.kubectl("apply", "-f", str(SAMPLES / "approver-clusterrole.yaml"))
    group = f"{team.namespace}-leads"
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "lapse-approvers", "namespace": team.namespace},
        "subjects": [{"kind": "Group", "name": group, "apiGroup": "rbac.authorization.k8s.io"}],
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "lapse-approver",
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(binding))
    return group


def expires_at(body: dict[str, Any]) -> datetime:
    return parse_time(body["status"]["expiresAt"])


def binding_name(body: dict[str, Any]) -> str:
    return str(body["status"]["bindings"][0]["name"])


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
