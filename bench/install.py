"""What a platform team would have installed before the benchmark: the CRDs from `crds/`,
the role to grant, a requester role for the benchmark's group, its namespaces and one policy.

The local API starts empty, so everything is simply created. A real cluster outlives the run:
there the CRDs, the requester role and the policy are server-side applied (an earlier install is
brought up to date), and the role to grant is created only if the cluster lacks it, since a
real cluster's `edit` is a bootstrap role its API server keeps and nothing here may change.
"""

from __future__ import annotations

from typing import Any

import yaml

from bench.cluster import ROOT
from bench.kube import Kube

GROUP = "lapse-bench-devs"
POLICY = "lapse-bench"
ROLE = "edit"
REQUESTER_ROLE = "lapse-bench-requester"
# The longest a request may ask for in the benchmark's policy; phases stay far below it.
MAX_DURATION = "4h"
# On every namespace the benchmark makes: on a shared cluster, what it may delete again.
PART_OF = {"app.kubernetes.io/part-of": "lapse-bench"}


def manifests(namespaces: list[str]) -> list[dict[str, Any]]:
    """What a platform team would have installed: the CRDs, roles, namespaces and a policy."""
    docs: list[dict[str, Any]] = []
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    rbac = "rbac.authorization.k8s.io/v1"
    docs.append(
        {
            "apiVersion": rbac,
            "kind": "ClusterRole",
            "metadata": {"name": ROLE},
            "rules": [
                {
                    "apiGroups": ["", "apps"],
                    "resources": ["pods", "deployments", "configmaps"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                }
            ],
        }
    )
    docs.append(
        {
            "apiVersion": rbac,
            "kind": "ClusterRole",
            "metadata": {"name": REQUESTER_ROLE},
            "rules": [
                {
                    "apiGroups": ["lapse.dev"],
                    "resources": ["accessrequests"],
                    "verbs": ["create", "get", "list", "watch", "delete"],
                }
            ],
        }
    )
    docs.append(
        {
            "apiVersion": rbac,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": REQUESTER_ROLE},
            "subjects": [{"kind": "Group", "name": GROUP, "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": REQUESTER_ROLE,
            },
        }
    )
    docs.extend(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": PART_OF}}
        for ns in namespaces
    )
    docs.append(
        {
            "apiVersion": "lapse.dev/v1alpha1",
            "kind": "AccessPolicy",
            "metadata": {"name": POLICY},
            "spec": {
                "requesters": {"groups": [GROUP]},
                "roles": [{"kind": "ClusterRole", "name": ROLE}],
                "namespaces": namespaces,
                "defaultDuration": "1h",
                "maxDuration": MAX_DURATION,
                "approval": {"mode": "Auto"},
            },
        }
    )
    return docs


async def install(kube: Kube, namespaces: list[str]) -> None:
    """Into the local API, which starts empty: every object is new."""
    for doc in manifests(namespaces):
        await kube.create(doc, exist_ok=True)
        if doc["kind"] == "CustomResourceDefinition":
            await kube.wait_established(doc["metadata"]["name"])


async def install_on_cluster(kube: Kube, namespaces: list[str]) -> None:
    """Into a cluster that may hold an earlier install, and holds its own bootstrap roles."""
    for doc in manifests(namespaces):
        kind, name = doc["kind"], doc["metadata"]["name"]
        if (kind == "ClusterRole" and name == ROLE) or kind == "Namespace":
            await kube.create(doc, exist_ok=True)
        else:
            await kube.apply(doc)
        if kind == "CustomResourceDefinition":
            await kube.wait_established(name)
