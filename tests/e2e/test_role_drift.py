"""A role that changes under a grant: reported within seconds, and ended where policy says so.

The grant binds an aggregated ClusterRole of the test's own; adding a labelled piece makes the
API server (its aggregation controller) widen the role's rules while the grant is active.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import Cluster
from tests.e2e.conftest import Team, wait_for
from tests.e2e.harness import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE


def clusterrole(name: str, rules: list[dict[str, Any]], **extra: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, **extra.pop("metadata", {})},
            "rules": rules,
            **extra,
        }
    )


@pytest.fixture
def growing_role(cluster: Cluster, team: Team) -> Iterator[tuple[str, str]]:
    """An aggregated ClusterRole Lapse may bind, and the label that adds pieces to it."""
    name = f"{team.namespace}-agg"
    label = f"lapse.dev/t-{team.namespace.rsplit('-', 1)[-1]}"
    aggregation = {"clusterRoleSelectors": [{"matchLabels": {label: "true"}}]}
    cluster.kubectl("apply", "-f", "-", input=clusterrole(name, [], aggregationRule=aggregation))
    reading = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
    piece = {"metadata": {"labels": {label: "true"}}}
    cluster.kubectl("apply", "-f", "-", input=clusterrole(f"{name}-read", reading, **piece))
    # Lapse binds only roles it may `bind`: as a platform team would add one to grant.
    binder = [
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["clusterroles"],
            "verbs": ["bind"],
            "resourceNames": [name],
        }
    ]
    cluster.kubectl("apply", "-f", "-", input=clusterrole(f"{name}-bind", binder))
    cluster.kubectl(
        "create", "clusterrolebinding", f"{name}-bind", f"--clusterrole={name}-bind",
        f"--serviceaccount={OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}",
    )  # fmt: skip

    def aggregated() -> bool | None:
        role = json.loads(cluster.kubectl("get", "clusterrole", name, "-o", "json").stdout)
        return bool(role.get("rules")) or None

    wait_for(aggregated, timeout=20, what="the aggregated ClusterRole to have rules")
    try:
        yield name, label
    finally:
        cluster.kubectl(
            "delete", "clusterrole", name, f"{name}-read", f"{name}-secrets", f"{name}-pods",
            f"{name}-bind", "--ignore-not-found", check=False,
        )  # fmt: skip
        cluster.kubectl(
            "delete", "clusterrolebinding", f"{name}-bind", "--ignore-not-found", check=False
        )


def test_a_role_that_grows_is_reported_then_revoked_by_policy(
    team: Team, growing_role: tuple[str, str]
) -> None:
    name, label = growing_role
    policy = team.policy(roles=(name,))
    team.ask("drifting", role=name, duration="1h")
    body = team.wait_phase("drifting", "Active")
    assert "read configmaps" in body["status"]["risk"]["summary"]
    piece = {"metadata": {"labels": {label: "true"}}}
    secrets = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    team.cluster.kubectl("apply", "-f", "-", input=clusterrole(f"{name}-secrets", secrets, **piece))
    event = team.wait_event("drifting", "RoleChanged", timeout=20)
    assert event["type"] == "Warning"
    assert f"ClusterRole {name} changed during the grant" in event["message"]
    assert "newly, it can read Secrets" in event["message"]
    body = team.request("drifting")
    assert body["status"]["phase"] == "Active"
    assert "ReadSecrets" in body["status"]["risk"]["capabilities"]

    team.cluster.kubectl(
        "patch", "accesspolicy", policy, "--type=merge", "-p", '{"spec":{"onRoleChange":"Revoke"}}'
    )
    pods = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]
    team.cluster.kubectl("apply", "-f", "-", input=clusterrole(f"{name}-pods", pods, **piece))
    revoked = team.wait_phase("drifting", "Revoked", timeout=20)
    assert revoked["status"]["reason"] == "RoleChanged"
    assert "revokes a grant whose role changes" in revoked["status"]["message"]
    assert not team.can_i("get", "configmaps")
