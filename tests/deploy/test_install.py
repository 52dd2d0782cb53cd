"""The CRDs and the installation apply to a cluster, and admission refuses bad objects.

These need the `cluster` fixture (the local Kubernetes API by default, or kind, or $KUBECONFIG)
and drive it with the real kubectl, as a user would.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
CRD_NAMES = ("accesspolicies.lapse.dev", "accessrequests.lapse.dev", "breakglasses.lapse.dev")
DURATION_MESSAGE = "duration must be a positive duration such as 30m or 2h"


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> Cluster:
    """The cluster with Lapse's CRDs applied and established (kept: other tests need them)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        *(f"crd/{name}" for name in CRD_NAMES),
    )  # fmt: skip
    return cluster


def request(namespace: str, name: str, **spec: Any) -> str:
    body = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"role": {"kind": "ClusterRole", "name": "view"}, "reason": "debugging", **spec},
    }
    return json.dumps(body)


def refused(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode != 0, result.stdout
    for text in expected:
        assert text in result.stderr, result.stderr


def test_explain_shows_the_model_descriptions(crds: Cluster) -> None:
    out = crds.kubectl("explain", "accessrequest.spec.role").stdout
    assert "The role wanted in this request's namespace." in out
    assert "Name of the ClusterRole or Role to bind." in out
    out = crds.kubectl("explain", "accesspolicy.spec.maxDuration").stdout
    assert "The longest duration allowed." in out


def test_get_lapse_lists_every_kind(crds: Cluster, namespace: str) -> None:
    crds.kubectl("apply", "-f", "-", input=request(namespace, "listed"))
    out = crds.kubectl("get", "lapse", "-A").stdout
    assert "accessrequest.lapse.dev/listed" in out
    by_short = crds.kubectl("get", "ar", "-n", namespace).stdout.splitlines()
    assert by_short[0].split() == ["NAME", "ROLE", "SUBJECT", "PHASE", "STARTS", "EXPIRES", "AGE"]
    assert by_short[1].split()[:2] == ["listed", "view"]
    for short in ("ap", "bg"):
        crds.kubectl("get", short)


def test_spec_is_immutable(crds: Cluster, namespace: str) -> None:
    crds.kubectl("apply", "-f", "-", input=request(namespace, "frozen", duration="1h"))
    result = crds.kubectl(
        "patch", "accessrequest", "frozen", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"duration": "8h"}}', check=False,
    )  # fmt: skip
    refused(result, "spec is immutable: create a new AccessRequest to ask again")
    # Metadata stays editable.
    crds.kubectl("label", "accessrequest", "frozen", "-n", namespace, "team=payments")


def test_breakglass_spec_is_immutable(crds: Cluster, request_name: str) -> None:
    body = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "BreakGlass",
        "metadata": {"name": request_name},
        "spec": {
            "role": {"kind": "ClusterRole", "name": "view"},
            "duration": "30m",
            "reason": "incident",
            "incident": "INC-1",
        },
    }
    crds.kubectl("create", "-f", "-", input=json.dumps(body))
    try:
        result = crds.kubectl(
            "patch", "breakglass", request_name, "--type=merge",
            "-p", '{"spec": {"duration": "2h"}}', check=False,
        )  # fmt: skip
        refused(result, "spec is immutable: create a new BreakGlass to ask again")
    finally:
        crds.kubectl("delete", "breakglass", request_name, "--wait=false")


@pytest.fixture
def request_name(namespace: str) -> str:
    # Cluster-scoped objects borrow the test namespace's unique name.
    return namespace


@pytest.mark.parametrize("duration", ["0s", "0h0m", "00m"])
def test_zero_duration_is_refused(crds: Cluster, namespace: str, duration: str) -> None:
    result = crds.kubectl(
        "create", "-f", "-", input=request(namespace, "zero", duration=duration), check=False
    )
    refused(result, DURATION_MESSAGE)


def test_malformed_duration_is_refused(crds: Cluster, namespace: str) -> None:
    result = crds.kubectl(
        "create", "-f", "-", input=request(namespace, "days", duration="2d"), check=False
    )
    refused(result, "spec.duration")


def test_unknown_role_kind_is_refused(crds: Cluster, namespace: str) -> None:
    body = json.loads(request(namespace, "bogus"))
    body["spec"]["role"]["kind"] = "Group"
    result = crds.kubectl("create", "-f", "-", input=json.dumps(body), check=False)
    refused(result, "spec.role.kind", 'Unsupported value: "Group"')


def test_policy_default_duration_beyond_max_is_refused(crds: Cluster, request_name: str) -> None:
    body = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": request_name},
        "spec": {"defaultDuration": "8h", "maxDuration": "2h"},
    }
    result = crds.kubectl("create", "-f", "-", input=json.dumps(body), check=False)
    refused(result, "defaultDuration must not exceed maxDuration")
    # A policy that only lowers maxDuration is accepted, and the defaults the CRD fills in
    # are the models' defaults.
    body["spec"] = {"maxDuration": "30m", "approval": {}}
    crds.kubectl("create", "-f", "-", input=json.dumps(body))
    try:
        stored = json.loads(crds.kubectl("get", "ap", request_name, "-o", "json").stdout)
        assert stored["spec"]["approval"] == {"mode": "Approvers", "required": 1, "timeout": "24h"}
        assert "defaultDuration" not in stored["spec"]
    finally:
        crds.kubectl("delete", "ap", request_name)


def rendered_installation(namespace: str, suffix: str) -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/`, moved into `namespace` with cluster-wide names suffixed.

    The renaming lets the test create everything for real without touching lapse-system or
    another test's cluster-wide objects.
    """
    kubectl = ROOT / ".venv" / "bin" / "kubectl"
    out = subprocess.run(
        [str(kubectl), "kustomize", str(ROOT / "deploy")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    text = out.replace("lapse-system", namespace)
    docs = [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        if doc["kind"] in CLUSTER_WIDE:
            doc["metadata"]["name"] += suffix
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] += suffix
    return [d for d in docs if d["kind"] not in {"Namespace", "CustomResourceDefinition"}]


# Cluster-wide objects of the installation, renamed per test so that none meets the running
# operator's own (its webhook configurations are `lapse.dev`).
CLUSTER_WIDE = {
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
}


def test_installation_applies(crds: Cluster, namespace: str) -> None:
    base = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "kubectl"), "kustomize", str(ROOT / "deploy")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    # Everything server-side dry-run first, cluster-scoped objects included, under their names.
    namespace_doc = next(d for d in yaml.safe_load_all(base) if d and d["kind"] == "Namespace")
    crds.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(namespace_doc))
    docs = rendered_installation(namespace, f"-{namespace}")
    listing = yaml.safe_dump_all(docs)
    crds.kubectl("apply", "--dry-run=server", "-f", "-", input=listing)
    # Then for real, so that the API server's RBAC checks (bind on the listed roles, no
    # escalation) and defaulting run, and clean up the cluster-wide objects.
    try:
        crds.kubectl("apply", "-f", "-", input=listing)
        role = json.loads(
            crds.kubectl("get", "clusterrole", f"lapse-operator-{namespace}", "-o", "json").stdout
        )
        assert any("bind" in r["verbs"] for r in role["rules"])
    finally:
        crds.kubectl(
            "delete", "--ignore-not-found", "clusterrole,clusterrolebinding",
            f"lapse-operator-{namespace}",
        )  # fmt: skip
        crds.kubectl(
            "delete", "--ignore-not-found",
            "mutatingwebhookconfiguration,validatingwebhookconfiguration", f"lapse.dev-{namespace}",
        )  # fmt: skip


def test_operator_account_may_bind_only_grantable_roles(crds: Cluster, namespace: str) -> None:
    suffix = f"-{namespace}"
    docs = rendered_installation(namespace, suffix)
    rbac = [d for d in docs if d["kind"] in {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}]
    # A role outside the grantable list whose permissions the operator does not hold.
    secret_reader = f"secret-reader{suffix}"
    rbac.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": secret_reader},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
        }
    )
    crds.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac))
    operator = f"system:serviceaccount:{namespace}:lapse-operator"
    as_operator: dict[str, Any] = {"as_user": operator, "groups": ("system:serviceaccounts",)}
    try:
        crds.kubectl(
            "create", "-f", "-", input=binding(namespace, "granted", "view"), **as_operator
        )
        result = crds.kubectl(
            "create", "-f", "-", input=binding(namespace, "refused", secret_reader),
            check=False, **as_operator,
        )  # fmt: skip
        assert result.returncode != 0
        assert "forbidden" in result.stderr.lower(), result.stderr
        secrets = crds.kubectl("get", "secrets", "-n", "default", check=False, **as_operator)
        assert secrets.returncode != 0
        assert "forbidden" in secrets.stderr.lower(), secrets.stderr
    finally:
        crds.kubectl(
            "delete", "--ignore-not-found", "clusterrole,clusterrolebinding",
            f"lapse-operator{suffix}", secret_reader,
        )  # fmt: skip


def binding(namespace: str, name: str, role: str) -> str:
    return json.dumps(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}
            ],
        }
    )
