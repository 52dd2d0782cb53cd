"""OpenAPI through kubectl: explain on a CRD kind, and apply of built-in kinds with kubectl's
default validation (strategic merge from its compiled-in types)."""

from __future__ import annotations

import json

import yaml

from tests.cluster import Cluster
from tests.conformance.test_crd_schema import tickets  # noqa: F401  (fixture)


def test_explain_shows_crd_field_descriptions(cluster: Cluster, tickets: str) -> None:  # noqa: F811
    shown = cluster.kubectl("explain", "tickets.spec").stdout
    assert "KIND:       Ticket" in shown
    assert "What the ticket asks for." in shown
    assert "How long the access lasts, such as 2h or 30m." in shown


def test_explain_built_in_kind(cluster: Cluster) -> None:
    shown = cluster.kubectl("explain", "rolebindings.roleRef").stdout
    assert "RoleRef" in shown or "roleRef" in shown


def test_apply_twice_patches_a_configmap(cluster: Cluster, namespace: str) -> None:
    def configmap(data: dict[str, str]) -> str:
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": namespace},
                "data": data,
            }
        )

    cluster.kubectl("apply", "-f", "-", input=configmap({"a": "1", "b": "2"}))
    cluster.kubectl("apply", "-f", "-", input=configmap({"a": "1", "c": "3"}))
    stored = json.loads(
        cluster.kubectl("get", "configmap", "settings", "-n", namespace, "-o", "json").stdout
    )
    assert stored["data"] == {"a": "1", "c": "3"}
