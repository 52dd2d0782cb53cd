"""Kubernetes API errors as `Status` objects, shaped like the real API server's.

Every module of the local API raises `ApiError`; the HTTP layer turns it into the JSON `Status`
body with the matching code, so clients (kopf, kubectl, the python client) see the reasons and
messages they would see from a real cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Cause:
    """One entry of `details.causes`: which field is wrong and why."""

    field: str
    message: str
    reason: str = "FieldValueInvalid"

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


@dataclass
class ApiError(Exception):
    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _details(name: str, group: str, kind: str) -> dict[str, Any]:
    details: dict[str, Any] = {"kind": kind}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    return details


def _qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{_qualified(resource, group)} "{name}" not found',
        _details(name, group, resource),
    )


def already_exists(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{_qualified(resource, group)} "{name}" already exists',
        _details(name, group, resource),
    )


def conflict(resource: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(resource, group)} "{name}": {why}',
        _details(name, group, resource),
    )


def stale(resource: str, group: str, name: str) -> ApiError:
    return conflict(
        resource,
        group,
        name,
        "the object has been modified; please apply your changes to the latest version "
        "and try again",
    )


def invalid(kind: str, group: str, name: str, causes: list[Cause]) -> ApiError:
    """422 Invalid, formatted as the API server's field.ErrorList.

    One cause reads `Kind.group "name" is invalid: field: message`; several are listed in
    brackets, as `[a: x, b: y]`.
    """
    parts = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
    listed = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = _details(name, group, kind)
    details["causes"] = [c.to_dict() for c in causes]
    return ApiError(
        422, "Invalid", f'{_qualified(kind, group)} "{name}" is invalid: {listed}', details
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def forbidden(
    username: str, verb: str, resource: str, group: str, name: str, namespace: str, why: str = ""
) -> ApiError:
    """403 in the API server's words, e.g. `User "alice" cannot list resource "pods" in API
    group "" in the namespace "payments"`."""
    target = f'resource "{resource}" in API group "{group}"'
    scope = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    subject = (
        f'{_qualified(resource, group)} "{name}" is forbidden'
        if name
        else (f"{_qualified(resource, group)} is forbidden")
    )
    message = f'{subject}: User "{username}" cannot {verb} {target}{scope}'
    if why:
        message += f": {why}"
    return ApiError(403, "Forbidden", message, _details(name, group, resource))


def forbidden_object(resource: str, group: str, name: str, why: str) -> ApiError:
    """403 for an object, not a user's permission: `configmaps "a" is forbidden: why`."""
    subject = f'{_qualified(resource, group)} "{name}"' if name else _qualified(resource, group)
    return ApiError(
        403, "Forbidden", f"{subject} is forbidden: {why}", _details(name, group, resource)
    )


def gone(message: str = "too old resource version") -> ApiError:
    return ApiError(410, "Expired", message)


def too_many_requests(message: str = "Too many requests, please try again later.") -> ApiError:
    return ApiError(429, "TooManyRequests", message, {"retryAfterSeconds": 1})


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}")


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json, application/json-patch+json, application/merge-patch+json, "
        "application/strategic-merge-patch+json, application/apply-patch+yaml "
        f'(got "{content_type}")',
    )
