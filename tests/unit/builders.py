"""Builders for the core's inputs: policies and requests as the API would hand them over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
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


# Audit events (lapse.core.activity, lapse.activity) ---------------------------------------

START = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)


def audit_time(seconds: float) -> str:
    return (START + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def audit_event(
    verb: str,
    resource: str,
    *,
    at: float = 60,
    user: str = "carol",
    impersonated: str | None = None,
    namespace: str | None = "payments",
    name: str | None = "web-1",
    subresource: str | None = None,
    code: int = 200,
    audit_id: str = "",
    stage: str = "ResponseComplete",
) -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource, "apiVersion": "v1"}
    if namespace:
        ref["namespace"] = namespace
    if name:
        ref["name"] = name
    if subresource:
        ref["subresource"] = subresource
    item: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": audit_id or f"{verb}-{resource}-{at}",
        "stage": stage,
        "verb": verb,
        "user": {"username": user, "groups": ["system:authenticated"]},
        "objectRef": ref,
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": audit_time(at),
        "stageTimestamp": audit_time(at + 0.01),
    }
    if impersonated:
        item["impersonatedUser"] = {"username": impersonated, "groups": ["sre-oncall"]}
    return item
