"""A minimal kopf operator, kopf's own example shape, run against the local API in tests.

On a Widget's creation it creates a child ConfigMap owned by the Widget and records the child
in status; on deletion (through kopf's finalizer) it records the deletion in a ConfigMap.
"""

from __future__ import annotations

from typing import Any

import kopf
import kubernetes.client

GROUP = "conformance.lapse.dev"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = 0
    settings.watching.server_timeout = 60


@kopf.on.create(GROUP, "v1", "widgets")
def create_fn(
    spec: dict[str, Any], name: str, namespace: str, body: Any, **_: Any
) -> dict[str, Any]:
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-child"},
        "data": {"size": str(spec.get("size", ""))},
    }
    kopf.adopt(child, owner=body)
    kubernetes.client.CoreV1Api().create_namespaced_config_map(namespace, child)
    return {"child": f"{name}-child"}


@kopf.on.update(GROUP, "v1", "widgets", field="spec.size")
def update_fn(new: Any, name: str, namespace: str, **_: Any) -> None:
    kubernetes.client.CoreV1Api().patch_namespaced_config_map(
        f"{name}-child", namespace, {"data": {"size": str(new)}}
    )


@kopf.on.delete(GROUP, "v1", "widgets")
def delete_fn(name: str, namespace: str, **_: Any) -> None:
    kubernetes.client.CoreV1Api().create_namespaced_config_map(
        namespace, {"metadata": {"name": f"{name}-deleted"}, "data": {"by": "kopf"}}
    )
