"""Server-side printing through kubectl: CRD printer columns and built-in kinds' columns."""

from __future__ import annotations

import yaml

from tests.cluster import Cluster
from tests.conformance.test_crd_schema import manifest, tickets  # noqa: F401  (fixture)


def test_printer_columns_in_kubectl_get(cluster: Cluster, tickets: str, namespace: str) -> None:  # noqa: F811
    cluster.kubectl("apply", "-f", "-", input=manifest("printed", namespace, duration="30m"))
    lines = cluster.kubectl("get", "tickets", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "DURATION", "PHASE", "AGE"]
    row = lines[1].split()
    assert row[:3] == ["printed", "edit", "30m"]
    # Phase is empty until the status says otherwise: kubectl shows the age next.
    assert row[-1].endswith("s")


def test_rolebinding_columns(cluster: Cluster, namespace: str) -> None:
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "shown", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    }
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(binding))
    lines = cluster.kubectl("get", "rolebindings", "shown", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "AGE"]
    assert lines[1].split()[:2] == ["shown", "ClusterRole/view"]
    wide = cluster.kubectl("get", "rolebindings", "shown", "-n", namespace, "-o", "wide").stdout
    assert "alice" in wide


def test_namespace_columns(cluster: Cluster, namespace: str) -> None:
    lines = cluster.kubectl("get", "namespace", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "AGE"]
    assert lines[1].split()[:2] == [namespace, "Active"]
