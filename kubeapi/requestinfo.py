"""What a request asks for, from its method, path and query alone: the API server's
`RequestInfoFactory`.

Impersonation runs before the request is routed, and constrained impersonation authorizes the
impersonator for the request itself (`impersonate-on:<mode>:<verb>` on its resource), so the
attributes must come from the URL as kube-apiserver parses it, whether or not the resource is
served.
"""

from __future__ import annotations

from collections.abc import Mapping

from .identity import Attributes

API_PREFIXES = ("api", "apis")
# Sub-paths of a namespace that are its own subresources, not resources in it.
NAMESPACE_SUBRESOURCES = ("status", "finalize")
METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


def attributes(method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """The authorizer attributes of a request (without its user)."""
    clean = path.rstrip("/") or "/"
    parts = [p for p in clean.split("/") if p]
    verb = METHOD_VERBS.get(method.upper(), method.lower())
    non_resource = Attributes(verb=method.lower(), path=clean, resource_request=False)
    if len(parts) < 2 or parts[0] not in API_PREFIXES:
        return non_resource
    if parts[0] == "apis":
        if len(parts) < 3:
            return non_resource
        group, rest = parts[1], parts[3:]
    else:
        group, rest = "", parts[2:]
    if not rest:
        return non_resource
    if rest[0] in ("watch", "proxy"):
        verb, rest = rest[0], rest[1:]
    namespace = ""
    if rest and rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if not name and verb == "get":
        verb = "watch" if query.get("watch") in ("true", "1") else "list"
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(
        verb=verb,
        resource=resource,
        api_group=group,
        subresource=subresource,
        namespace=namespace,
        name=name,
        path=clean,
    )
