"""The operator under test runs as its ServiceAccount, and its shipped RBAC is the last line of
defence.

Every other end-to-end test proves the shipped RBAC is sufficient, because the session's operator
holds nothing else. These prove that it really does (so nobody can quietly switch it back to an
admin kubeconfig), and that it is also the limit: a policy naming a role outside the operator's
`bind` list cannot make Lapse grant it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import pytest

from tests.cluster import Cluster
from tests.e2e.conftest import Identity, InClusterOperator, Operator, Team
from tests.e2e.harness import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, OPERATOR_USER

MANAGED = "app.kubernetes.io/managed-by=lapse"


def as_operator(cluster: Cluster, identity: Identity, *args: str) -> str:
    result = cluster.kubectl(*args, "--kubeconfig", str(identity.kubeconfig), check=False)
    return result.stdout.strip()


def test_the_operator_kubeconfig_is_the_service_account(
    cluster: Cluster, operator_identity: Identity
) -> None:
    whoami = json.loads(as_operator(cluster, operator_identity, "auth", "whoami", "-o", "json"))
    user = whoami["status"]["userInfo"]
    assert user["username"] == OPERATOR_USER
    assert "system:masters" not in user.get("groups", [])
    assert f"system:serviceaccounts:{OPERATOR_NAMESPACE}" in user.get("groups", [])


def test_the_session_operator_uses_it(operator: Operator, operator_identity: Identity) -> None:
    assert operator.identity == operator_identity
    assert operator.namespace == OPERATOR_NAMESPACE
    if isinstance(operator, InClusterOperator):
        # In pods: the ServiceAccount's own token, mounted by the kubelet, and nothing else.
        pods = operator.pods()
        assert pods
        for pod in pods:
            spec = pod["spec"]
            assert spec["serviceAccountName"] == OPERATOR_ACCOUNT
            assert spec.get("automountServiceAccountToken", True)
            (container,) = spec["containers"]
            names = {entry["name"] for entry in container.get("env") or ()}
            assert "KUBECONFIG" not in names
            assert "LAPSE_NAMESPACE" in names
        return
    assert operator.process is not None
    environ = Path(f"/proc/{operator.process.pid}/environ")
    if not environ.exists():
        pytest.skip("no /proc to read the operator's environment from")
    variables = dict(
        entry.split("=", 1) for entry in environ.read_text().split("\0") if "=" in entry
    )
    assert variables["KUBECONFIG"] == str(operator_identity.kubeconfig)
    assert variables["LAPSE_NAMESPACE"] == OPERATOR_NAMESPACE


@pytest.mark.parametrize(
    ("verb", "resource", "where", "allowed"),
    [
        ("create", "rolebindings", "the team", True),
        ("bind", "clusterroles/edit", None, True),
        ("bind", "clusterroles/lapse-requester", None, False),
        ("escalate", "clusterroles", None, False),
        ("get", "secrets", OPERATOR_NAMESPACE, True),
        ("get", "secrets", "the team", False),
        ("*", "*", None, False),
    ],
)
def test_it_holds_the_shipped_rules_and_no_more(
    team: Team,
    operator_identity: Identity,
    verb: str,
    resource: str,
    where: str | None,
    allowed: bool,
) -> None:
    namespace = team.namespace if where == "the team" else where
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    answer = as_operator(team.cluster, operator_identity, "auth", "can-i", verb, resource, *scope)
    assert answer == ("yes" if allowed else "no")


@pytest.fixture
def unlisted_role(cluster: Cluster) -> Iterator[str]:
    """A harmless ClusterRole that is not in the operator's `bind` list."""
    name = f"lapse-e2e-unlisted-{secrets.token_hex(3)}"
    cluster.kubectl("create", "clusterrole", name, "--verb=get", "--resource=configmaps")
    try:
        yield name
    finally:
        cluster.kubectl("delete", "clusterrole", name, "--ignore-not-found", check=False)


def test_a_role_outside_the_bind_list_is_refused_whatever_the_policy_says(
    team: Team, operator: Operator, unlisted_role: str
) -> None:
    team.policy(roles=(unlisted_role,))
    team.ask("unlisted", role=unlisted_role, duration="1m")
    body = team.wait_phase("unlisted", "Invalid")
    status = body["status"]
    assert status["reason"] == "BindingRefused"
    assert "Nothing was granted" in status["message"]
    assert not status.get("bindings")
    rbac = kubernetes.client.RbacAuthorizationV1Api(team.cluster.api())
    assert not rbac.list_namespaced_role_binding(team.namespace, label_selector=MANAGED).items
    assert not team.can_i("get", "configmaps")
    assert team.wait_event("unlisted", "BindingRefused")["type"] == "Warning"
    line = operator.wait_for_audit(
        lambda a: a.get("name") == "unlisted" and a.get("namespace") == team.namespace
    )
    assert line["reason"] == "BindingRefused"
