"""Builders for the core's inputs: policies and requests as the API would hand them over."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lapse.core.models import AccessPolicy, AccessRequest

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def make_policy(name: str = "payments", **spec: Any) -> AccessPolicy:
    body: dict[str, Any] = {
        "requesters": {"groups": ["payments-devs"]},
        "roles": [{"kind": "ClusterRole", "name": "view"}, {"kind": "ClusterRole", "name": "edit"}],
        "namespaces": ["payments"],
        "defaultDuration": "1h",
        "maxDuration": "4h",
        "approval": {"mode": "Auto"},
    }
    body.update(spec)
    return AccessPolicy.model_validate({"metadata": {"name": name}, "spec": body})


def make_request(
    name: str = "fix",
    namespace: str = "payments",
    role: str = "edit",
    duration: str | None = "2h",
    user: str = "alice",
    groups: tuple[str, ...] = ("payments-devs",),
    **spec: Any,
) -> AccessRequest:
    body: dict[str, Any] = {
        "role": {"kind": "ClusterRole", "name": role},
        "reason": "Restart the worker.",
        "requester": {"username": user, "groups": list(groups)} if user else None,
        **spec,
    }
    if duration is not None:
        body["duration"] = duration
    return AccessRequest.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
            "spec": body,
        }
    )
