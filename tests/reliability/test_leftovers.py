"""What a killed run leaves is cleared before the next one, and nothing else is touched.

On a cluster that outlives a run (kind, kubeconfig) the `leftovers_removed` fixture clears what
a run killed mid-way left: above all Lapse's webhook configurations, which fail closed and
point at the dead operator. Here the leftovers of such a run are laid out by hand on a private
local API, beside objects of the same kinds that are not the suites', and cleared the same way.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo.harness import free_port
from kubeapi import tls
from lapse.core.kinds import FINALIZER
from tests.cluster import ROOT, Cluster, LocalServer
from tests.conftest import Leftovers

RBAC = "rbac.authorization.k8s.io"
LAPSE = "app.kubernetes.io/managed-by"


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Cluster]:
    """A local API of this test's own: what it clears must not be another test's."""
    server = LocalServer(tmp_path / "kubeapi")
    url = server.start()
    try:
        cluster = Cluster("local", server.kubeconfig, url, tmp_path / "cache")
        cluster.kubectl("apply", "-f", str(ROOT / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "-f", str(ROOT / "crds"))
        yield cluster
    finally:
        server.stop()


def apply(cluster: Cluster, *objects: dict[str, Any]) -> dict[str, str]:
    """Create the objects; their uids by name."""
    uids = {}
    for body in objects:
        out = cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(body)).stdout
        created = json.loads(out)
        uids[created["metadata"]["name"]] = created["metadata"]["uid"]
    return uids


def request(namespace: str, name: str, requester: str) -> dict[str, Any]:
    return {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {"name": name, "namespace": namespace, "finalizers": [FINALIZER]},
        "spec": {
            "role": {"kind": "ClusterRole", "name": "edit"},
            "reason": "Left by a killed run.",
            "requester": {"username": requester, "groups": ["system:authenticated"]},
        },
    }


def glass(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "BreakGlass",
        "metadata": {"name": name, "finalizers": [FINALIZER]},
        "spec": {
            "role": {"kind": "ClusterRole", "name": "admin"},
            "duration": "30m",
            "reason": "Left by a killed run.",
            "incident": "INC-1",
            "requester": {"username": "sre", "groups": ["system:authenticated"]},
        },
    }


def policy(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": name},
        "spec": {
            "requesters": {"users": ["alice"]},
            "roles": [{"kind": "ClusterRole", "name": "view"}],
            "namespaces": ["payments"],
        },
    }


def binding(
    kind: str, name: str, owner_kind: str, owner: str, uid: str, namespace: str | None = None
) -> dict[str, Any]:
    """A binding as Lapse makes one for `owner` (its label, owner reference and annotation)."""
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {LAPSE: "lapse"},
        "annotations": {"lapse.dev/request-uid": uid},
        "ownerReferences": [
            {
                "apiVersion": "lapse.dev/v1alpha1",
                "kind": owner_kind,
                "name": owner,
                "uid": uid,
                "controller": True,
            }
        ],
    }
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "name": "alice", "apiGroup": RBAC}],
    }


def plain_binding(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "Group", "name": name, "apiGroup": RBAC}],
    }


def webhooks(kind: str, name: str, selected: str | None = None) -> dict[str, Any]:
    """A configuration whose webhook fails closed and points at a port nobody serves, as a
    killed operator leaves it; with `selected`, for that namespace only."""
    # A webhook's name needs three labels, as kube-apiserver checks.
    hook: dict[str, Any] = {
        "name": f"dead.{name}" if "." in name else f"dead.{name}.example.com",
        "clientConfig": {
            "url": f"https://127.0.0.1:{free_port()}/dead",
            "caBundle": base64.b64encode(tls.generate().ca_pem).decode(),
        },
        "rules": [
            {
                "operations": ["CREATE", "UPDATE"],
                "apiGroups": ["lapse.dev"] if selected is None else [""],
                "apiVersions": ["*"],
                "resources": ["*"] if selected is None else ["configmaps"],
            }
        ],
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    }
    if selected:
        hook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": selected}}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": [hook],
    }


def names(cluster: Cluster, *kind: str) -> set[str]:
    out = cluster.kubectl("get", *kind, "-o", "json").stdout
    return {
        o["metadata"]["name"]
        for o in json.loads(out)["items"]
        if not o["metadata"].get("deletionTimestamp")
    }


def test_a_killed_runs_leftovers_go_and_nothing_else(fresh: Cluster) -> None:
    namespaces = ("t-killed-1a2b3c", "payments", "team-a")
    apply(
        fresh,
        *({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in namespaces),
    )
    owners = apply(
        fresh,
        request("t-killed-1a2b3c", "stuck", "alice"),
        request("payments", "fix-payment-retries", "alice"),
        request("payments", "bobs", "bob"),
        glass("t-db-failover-1a2b3c"),
        glass("inc-42"),
        policy("t-killed-1a2b3c"),
        policy("payments-self-service"),
        policy("platform"),
    )
    apply(
        fresh,
        binding("RoleBinding", "lapse-stuck-1", "AccessRequest", "stuck", owners["stuck"],
                "t-killed-1a2b3c"),
        binding("RoleBinding", "lapse-fix-1", "AccessRequest", "fix-payment-retries",
                owners["fix-payment-retries"], "payments"),
        binding("RoleBinding", "lapse-bobs-1", "AccessRequest", "bobs", owners["bobs"],
                "payments"),
        binding("ClusterRoleBinding", "lapse-t-db-failover-1", "BreakGlass",
                "t-db-failover-1a2b3c", owners["t-db-failover-1a2b3c"]),
        binding("ClusterRoleBinding", "lapse-inc-42-1", "BreakGlass", "inc-42", owners["inc-42"]),
        plain_binding("t-killed-1a2b3c-oncall"),
        plain_binding("ops"),
    )  # fmt: skip
    apply(
        fresh,
        webhooks("MutatingWebhookConfiguration", "lapse.dev"),
        webhooks("ValidatingWebhookConfiguration", "lapse.dev"),
        webhooks("ValidatingWebhookConfiguration", "guard-t-killed-1a2b3c", "t-killed-1a2b3c"),
        webhooks("ValidatingWebhookConfiguration", "guard-team-a", "team-a"),
    )
    # As after a kill: nothing of Lapse's can be created while its dead webhooks stand.
    refused = fresh.kubectl("create", "-f", "-", input=json.dumps(glass("t-next-run")), check=False)
    assert refused.returncode != 0 and "dead.lapse.dev" in refused.stderr

    Leftovers(fresh.api()).remove()

    assert names(fresh, "mutatingwebhookconfigurations") == set()
    assert names(fresh, "validatingwebhookconfigurations") == {"guard-team-a"}
    assert names(fresh, "breakglasses") == {"inc-42"}
    assert names(fresh, "accesspolicies") == {"platform"}
    assert names(fresh, "accessrequests", "-A") == {"bobs"}
    assert names(fresh, "rolebindings", "-A", "-l", LAPSE) == {"lapse-bobs-1"}
    crbs = names(fresh, "clusterrolebindings")
    assert {"lapse-inc-42-1", "ops"} <= crbs
    assert not {"lapse-t-db-failover-1", "t-killed-1a2b3c-oncall"} & crbs
    assert names(fresh, "namespaces") >= {"payments", "team-a"}
    assert "t-killed-1a2b3c" not in names(fresh, "namespaces")
    # Lapse's kinds can be created again; the finalizers of others' objects are theirs.
    fresh.kubectl("create", "-f", "-", input=json.dumps(glass("t-next-run")))
    kept = json.loads(fresh.kubectl("get", "breakglass", "inc-42", "-o", "json").stdout)
    assert kept["metadata"]["finalizers"] == [FINALIZER]
