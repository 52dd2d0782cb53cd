"""The HTTP face of the local API: routing, REST verbs, watch streams and discovery.

It follows the real API server's request path: authenticate, impersonate, authorize, decode,
mutating admission, validation, escalation checks, validating admission, store; watch events
go out from the store. Schema validation, Table printing, OpenAPI, authentication, RBAC,
admission webhooks and fault injection live in their own modules and are called from here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import yaml
from aiohttp import web

from . import (
    admission,
    audit,
    auth,
    errors,
    events,
    faults,
    known_fields,
    openapi,
    patch,
    protobuf,
    rbac,
    requestinfo,
    schema,
    selectors,
    serviceaccounts,
    table,
    tokenrequest,
    validation,
)
from .builtins import VIRTUAL
from .gc import Controllers
from .identity import ADMIN_GROUP, Attributes, UserInfo
from .objects import CRD_GROUP, Objects, is_events_v1, key_of, now
from .registry import Registry
from .resources import KUBERNETES_VERSION, ResourceInfo
from .store import Event, Store, TooOld
from .tokens import Issuer, LegacyUse
from .tokensecrets import TokensController

log = logging.getLogger(__name__)

VERSION_INFO = {
    "major": "1",
    "minor": KUBERNETES_VERSION.split(".")[1],
    "gitVersion": KUBERNETES_VERSION,
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}
RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_KINDS = {"roles", "clusterroles", "rolebindings", "clusterrolebindings"}
JSON = "application/json"
BOOKMARK_INTERVAL = 10.0
# Per request (each runs in its own task): warnings for `Warning` headers, fieldValidation.
_WARNINGS: contextvars.ContextVar[list[str]] = contextvars.ContextVar("warnings")
_FIELD_VALIDATION: contextvars.ContextVar[str] = contextvars.ContextVar(
    "field_validation", default="Warn"
)
# Per request, for its audit event: how it ended (the error's Status) and whether the
# authorizer refused it.
_OUTCOME: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("outcome")


def _created_name(response: web.StreamResponse) -> str:
    body = getattr(response, "body", None)
    if not isinstance(body, bytes):
        return ""
    try:
        made = json.loads(body)
    except ValueError:
        return ""
    return (
        str(((made or {}).get("metadata") or {}).get("name") or "")
        if isinstance(made, dict)
        else ""
    )


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def respond(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(obj), status=status, content_type=JSON)


# The pod subresources that connect to a container, and the options kind each is admitted as.
CONNECT_OPTIONS = {
    "exec": "PodExecOptions",
    "attach": "PodAttachOptions",
    "portforward": "PodPortForwardOptions",
}


@dataclass
class Target:
    """What a resource URL names."""

    info: ResourceInfo
    namespace: str
    name: str
    subresource: str
    watch_path: bool


class Server:
    def __init__(
        self,
        *,
        admin_token: str,
        tokens: Mapping[str, UserInfo] | None = None,
        history: int = 100_000,
        root_ca: str = "",
        audit_policy: audit.Policy | None = None,
        audit_backend: audit.Backend | None = None,
    ) -> None:
        self.audit_policy = audit_policy
        self.audit_backend = audit_backend
        self.store = Store(history)
        self.registry = Registry()
        self.objects = Objects(self.store, self.registry)
        self.controllers = Controllers(self.objects, root_ca=root_ca)
        self.store.listeners.append(self._track_crds)
        self.store.listeners.append(self._track_rbac)
        self.address = ""
        users = {admin_token: UserInfo("admin", (ADMIN_GROUP,))}
        users.update(tokens or {})
        # Service account tokens: signed here, checked against the store when they come back;
        # a legacy token's use is marked on its Secret by the tokens controller.
        self.issuer = Issuer(self.store.get, legacy_used=lambda use: self._token_used(use))
        self.token_secrets = TokensController(self.objects, self.issuer, root_ca)
        self.token_requests = tokenrequest.TokenRequests(self.store, self.issuer)
        self.authenticator = auth.Authenticator(users, [self.issuer.authenticate])
        self._impersonation_modes = auth.ModeMemory()
        self._rbac_revision = 0
        self.authorizer = rbac.Authorizer(self._list_rbac, lambda: self._rbac_revision)
        self._aggregation_pending = False
        self.admission = admission.Admission(
            self._webhook_configurations, self._namespace_labels, self.store
        )
        self.faults = faults.Faults(self.store, self._headers_are_admin)
        # Server-side apply: the last configuration each (object uid, field manager) applied.
        self._applied: dict[str, dict[str, dict[str, Any]]] = {}
        self.store.listeners.append(self._forget_applied)
        self._bootstrap()

    # -- start-up ---------------------------------------------------------------------------

    def _bootstrap(self) -> None:
        ns_info = self.registry.lookup("", "v1", "namespaces")
        assert ns_info is not None
        for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.objects.create(
                ns_info,
                self.objects.prepare_create(ns_info, {"metadata": {"name": name}}, ""),
                dry_run=False,
            )
        sa = self.registry.lookup("", "v1", "serviceaccounts")
        assert sa is not None
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            body = {"metadata": {"name": "default"}}
            self.objects.create(sa, self.objects.prepare_create(sa, body, ns), dry_run=False)
        for obj in rbac.bootstrap_objects():
            group = obj["apiVersion"].rpartition("/")[0]
            info = self.registry.by_kind(group, obj["kind"])
            if info is None:
                continue
            prepared = self.objects.prepare_create(info, obj, obj["metadata"].get("namespace", ""))
            with contextlib.suppress(errors.ApiError):
                self.objects.create(info, prepared, dry_run=False)

    def _track_crds(self, event: Event) -> None:
        if event.key != (CRD_GROUP, "customresourcedefinitions"):
            return
        if event.type == "DELETED":
            self.registry.unserve_crd(event.obj["metadata"]["name"])
            spec = event.obj.get("spec") or {}
            self.store.drop_resource(
                (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
            )
        elif not event.obj["metadata"].get("deletionTimestamp"):
            self.registry.serve_crd(event.obj)

    def _track_rbac(self, event: Event) -> None:
        if event.key[0] != RBAC_GROUP:
            return
        if event.key[1] in ("roles", "rolebindings"):
            obj = None if event.type == "DELETED" else event.obj
            name = event.obj["metadata"]["name"]
            self.authorizer.observe(event.key[1], event.namespace, name, obj)
            return
        self._rbac_revision += 1
        if event.key[1] == "clusterroles" and not self._aggregation_pending:
            self._aggregation_pending = True
            try:
                asyncio.get_running_loop().call_soon(self._aggregate_clusterroles)
            except RuntimeError:  # start-up, before the loop runs: aggregate at once
                self._aggregate_clusterroles()

    def _aggregate_clusterroles(self) -> None:
        """Write aggregated rules into ClusterRoles, as kube-controller-manager does."""
        self._aggregation_pending = False
        info = self.registry.lookup(RBAC_GROUP, "v1", "clusterroles")
        assert info is not None
        roles = list(self.store.iter((RBAC_GROUP, "clusterroles")))
        for name, rules in rbac.aggregate(roles).items():
            current = self.store.get((RBAC_GROUP, "clusterroles"), "", name)
            if current is not None and (current.get("rules") or []) != rules:
                self.objects.update(info, current, {**current, "rules": rules}, dry_run=False)

    def _forget_applied(self, event: Event) -> None:
        if event.type == "DELETED" and self._applied:
            self._applied.pop(event.obj["metadata"]["uid"], None)

    def _list_rbac(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        return list(self.store.iter((RBAC_GROUP, plural), namespace))

    def _webhook_configurations(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        group = "admissionregistration.k8s.io"
        return (
            list(self.store.iter((group, "mutatingwebhookconfigurations"))),
            list(self.store.iter((group, "validatingwebhookconfigurations"))),
        )

    def _namespace_labels(self, namespace: str) -> dict[str, str] | None:
        ns = self.store.get(("", "namespaces"), "", namespace)
        return None if ns is None else dict(ns["metadata"].get("labels") or {})

    # -- application ------------------------------------------------------------------------

    def app(self) -> web.Application:
        # Faults act outermost, before anything else sees the request.
        middlewares: list[Any] = [self.faults.middleware, self._errors_middleware]
        if self.audit_policy is not None and self.audit_backend is not None:
            # Audited as kube-apiserver does: after authentication, around everything else.
            middlewares.insert(1, self._audit_middleware)
        app = web.Application(middlewares=middlewares, client_max_size=64 * 1024 * 1024)
        self.faults.add_routes(app)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self.controllers.start()
        self.token_secrets.start()
        if self.audit_backend is not None:
            self.audit_backend.start()

    async def _on_shutdown(self, app: web.Application) -> None:
        if self.audit_backend is not None:
            await self.audit_backend.stop()
        self.store.cut_watches()
        await self.controllers.stop()
        await self.token_secrets.stop()
        # Admission keeps connections to webhooks open between calls.
        await self.admission.close()

    @web.middleware
    async def _errors_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        warnings: list[str] = []
        _WARNINGS.set(warnings)
        _FIELD_VALIDATION.set(request.query.get("fieldValidation") or "Warn")
        try:
            response = await handler(request)
            if warnings and not response.prepared:
                for warning in dict.fromkeys(warnings):
                    escaped = warning.replace("\\", "\\\\").replace('"', '\\"')
                    response.headers.add("Warning", f'299 - "{escaped}"')
            return response
        except errors.ApiError as exc:
            outcome = _OUTCOME.get(None)
            if outcome is not None:
                outcome["failure"] = exc.status()
            return respond(exc.status(), exc.code)
        except web.HTTPException:
            raise
        except Exception as exc:
            log.exception("internal error on %s %s", request.method, request.path)
            err = errors.internal(repr(exc))
            return respond(err.status(), err.code)

    @web.middleware
    async def _audit_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        received = datetime.now(UTC)
        try:
            user = self.authenticator.authenticate(request.headers)
        except errors.ApiError:
            # Refused at authentication: never reaches the audit filter of a real server.
            return await handler(request)
        outcome: dict[str, Any] = {}
        _OUTCOME.set(outcome)
        response = await handler(request)
        assert self.audit_policy is not None and self.audit_backend is not None
        described = self._audit_request(request, user)
        if described.verb == "create" and not described.name and response.status < 300:
            # A real server names the object made (from the request's object) in objectRef.
            described = dataclasses.replace(described, name=_created_name(response))
        level = self.audit_policy.level(described)
        if level == "None":
            return response
        self.audit_backend.process(
            audit.build_event(
                described,
                level=level,
                uri=request.path_qs,
                source_ip=request.remote or "",
                user_agent=request.headers.get("User-Agent", ""),
                received=received,
                completed=datetime.now(UTC),
                code=response.status,
                failure=outcome.get("failure"),
                allowed=not outcome.get("forbidden"),
            )
        )
        return response

    def _audit_request(self, request: web.Request, user: UserInfo) -> audit.Request:
        """The request as the audit policy judges it and its event records it."""
        impersonated: UserInfo | None = None
        try:
            acting = self._authenticate(request)
            if acting != user:
                impersonated = acting
        except errors.ApiError:
            pass
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        method_verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
        if not parts or parts[0] not in ("api", "apis") or self._is_discovery(parts):
            return audit.Request(
                user, impersonated, request.method.lower(), path, resource_request=False
            )
        try:
            target = self._target(parts)
        except errors.ApiError:
            return audit.Request(
                user, impersonated, method_verb.get(request.method, "get"), path, resource=""
            )
        if target.info.group == "" and target.subresource in CONNECT_OPTIONS:
            verb = "create" if request.method == "POST" else "get"
        else:
            try:
                verb = self._verb(request.method, target, request.query)
            except errors.ApiError:
                verb = request.method.lower()
        return audit.Request(
            user,
            impersonated,
            verb,
            path,
            resource=target.info.plural,
            subresource=target.subresource,
            api_group=target.info.group,
            api_version=parts[1] if parts[0] == "api" else parts[2],
            namespace=target.namespace,
            name=target.name,
        )

    # -- identity ---------------------------------------------------------------------------

    def _authenticate(self, request: web.Request) -> UserInfo:
        asked = requestinfo.attributes(request.method, request.path, request.query)
        return self._authenticate_headers(request.headers, asked)

    def _authenticate_headers(
        self, headers: Mapping[str, str], asked: Attributes | None = None
    ) -> UserInfo:
        """The caller, then whom it impersonates for the request `asked` (constrained
        impersonation authorizes the impersonator for the request itself)."""
        user = self.authenticator.authenticate(headers)
        return auth.impersonate(
            user, headers, self._authorize_raw, asked, self._impersonation_modes
        )

    def _token_used(self, use: LegacyUse) -> None:
        self.token_secrets.used(use)

    def _headers_are_admin(self, headers: Mapping[str, str]) -> bool:
        """Whether a request's caller (after impersonation) is a cluster admin."""
        try:
            user = self._authenticate_headers(
                headers, Attributes("get", path="/_faults", resource_request=False)
            )
        except errors.ApiError:
            return False
        return user.is_admin

    def _authorize_raw(self, user: UserInfo, attrs: Attributes) -> tuple[bool, str]:
        return self.authorizer.authorize(user, attrs)

    def _authorize(self, user: UserInfo, attrs: Attributes) -> None:
        allowed, why = self._authorize_raw(user, attrs)
        if not allowed:
            outcome = _OUTCOME.get(None)
            if outcome is not None:
                outcome["forbidden"] = True
            if not attrs.resource_request:
                raise errors.ApiError(
                    403,
                    "Forbidden",
                    f'forbidden: User "{user.username}" cannot {attrs.verb} path "{attrs.path}"',
                )
            raise errors.forbidden(
                user.username,
                attrs.verb,
                attrs.resource,
                attrs.api_group,
                attrs.name,
                attrs.namespace,
                why,
            )

    # -- routing ----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        user = self._authenticate(request)
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] not in ("api", "apis") or self._is_discovery(parts):
            self._authorize(
                user, Attributes(verb=request.method.lower(), path=path, resource_request=False)
            )
            return await self._non_resource(request, path, parts)
        target = self._target(parts)
        method = request.method
        if target.info.group == "" and target.subresource in CONNECT_OPTIONS:
            return await self._connect(request, target, user, path)
        verb = self._verb(method, target, request.query)
        self._authorize(
            user,
            Attributes(
                verb=verb,
                resource=target.info.plural,
                api_group=target.info.group,
                subresource=target.subresource,
                namespace=target.namespace
                or (
                    target.name
                    if target.info.plural == "namespaces" and target.info.group == ""
                    else ""
                ),
                name=target.name,
                path=path,
            ),
        )
        if verb not in target.info.verbs and not target.subresource:
            raise errors.method_not_allowed()
        if target.subresource == "scale":
            return await self._scale(request, target, user, verb)
        handler = {
            "get": self._get,
            "list": self._list,
            "watch": self._watch,
            "create": self._create,
            "update": self._update,
            "patch": self._patch,
            "delete": self._delete,
            "deletecollection": self._delete_collection,
        }[verb]
        return await handler(request, target, user)

    async def _connect(
        self, request: web.Request, t: Target, user: UserInfo, path: str
    ) -> web.StreamResponse:
        """exec, attach and portforward: authorised as `create` on the subresource (for the
        websocket GET too, as kube-apiserver does since 1.31), admitted as CONNECT with the
        options object, then refused as on a cluster whose pods never get a node."""
        if request.method not in ("GET", "POST"):
            raise errors.method_not_allowed()
        self._authorize(
            user,
            Attributes(
                verb="create",
                resource="pods",
                api_group="",
                subresource=t.subresource,
                namespace=t.namespace,
                name=t.name,
                path=path,
            ),
        )
        pod = self.objects.get(t.info, t.namespace, t.name)
        query = request.query
        options: dict[str, Any] = {"kind": CONNECT_OPTIONS[t.subresource], "apiVersion": "v1"}
        if t.subresource == "portforward":
            options["ports"] = [int(p) for p in query.getall("ports", []) if p.isdigit()]
        else:
            options.update(
                {
                    flag: query.get(flag) in ("true", "1")
                    for flag in ("stdin", "stdout", "stderr", "tty")
                }
            )
            if query.get("container"):
                options["container"] = query["container"]
            if t.subresource == "exec":
                options["command"] = list(query.getall("command", []))
        attributes = self._admission_attributes("CONNECT", t, user, None, None, False, None, t.name)
        attributes.kind = {"group": "", "version": "v1", "kind": CONNECT_OPTIONS[t.subresource]}
        attributes.object = options
        try:
            await self.admission.validate(attributes)
        finally:
            _WARNINGS.get([]).extend(attributes.warnings)
        if not (pod.get("spec") or {}).get("nodeName"):
            raise errors.bad_request(f"pod {t.name} does not have a host assigned")
        raise errors.bad_request("the local Kubernetes API runs no containers")

    @staticmethod
    def _is_discovery(parts: list[str]) -> bool:
        if parts[0] == "api":
            return len(parts) <= 2
        return len(parts) <= 3

    def _target(self, parts: list[str]) -> Target:
        if parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        else:
            group, version, rest = parts[1], parts[2], parts[3:]
        watch_path = False
        if rest and rest[0] == "watch":
            watch_path, rest = True, rest[1:]
        namespace = ""
        if (
            len(rest) >= 3
            and rest[0] == "namespaces"
            and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        if not rest:
            raise errors.ApiError(
                404, "NotFound", "the server could not find the requested resource"
            )
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        info = self.registry.lookup(group, version, plural)
        if info is None or len(rest) > 3:
            raise errors.ApiError(
                404, "NotFound", "the server could not find the requested resource", {}
            )
        if sub and sub not in info.subresources:
            raise errors.ApiError(
                404, "NotFound", "the server could not find the requested resource"
            )
        if info.namespaced and name and not namespace and not watch_path:
            raise errors.ApiError(
                404, "NotFound", "the server could not find the requested resource"
            )
        return Target(info, namespace if info.namespaced else "", name, sub, watch_path)

    @staticmethod
    def _verb(method: str, target: Target, query: Mapping[str, str]) -> str:
        watching = target.watch_path or query.get("watch") in ("true", "1")
        if method == "GET":
            if target.name and not watching:
                return "get"
            return "watch" if watching else "list"
        if method == "POST" and (not target.name or target.subresource == "token"):
            return "create"
        if method == "PUT" and target.name:
            return "update"
        if method == "PATCH" and target.name:
            return "patch"
        if method == "DELETE":
            return "delete" if target.name else "deletecollection"
        raise errors.method_not_allowed()

    # -- non-resource paths: discovery, OpenAPI, health ---------------------------------------

    async def _non_resource(
        self, request: web.Request, path: str, parts: list[str]
    ) -> web.StreamResponse:
        if path == "/version":
            return respond(VERSION_INFO)
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if path == "/api":
            return respond(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": self.address}
                    ],
                }
            )
        if path == "/api/v1":
            return respond(self._resource_list("", "v1"))
        if path == "/apis":
            return respond(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        self._group(n, v) for n, v in sorted(self.registry.groups().items())
                    ],
                }
            )
        if parts and parts[0] == "apis" and len(parts) == 2:
            versions = self.registry.groups().get(parts[1])
            if not versions:
                raise errors.ApiError(
                    404, "NotFound", "the server could not find the requested resource"
                )
            return respond(
                {"kind": "APIGroup", "apiVersion": "v1", **self._group(parts[1], versions)}
            )
        if parts and parts[0] == "apis" and len(parts) == 3:
            if parts[2] not in self.registry.groups().get(parts[1], []):
                raise errors.ApiError(
                    404, "NotFound", "the server could not find the requested resource"
                )
            return respond(self._resource_list(parts[1], parts[2]))
        if parts and parts[0] == "openapi":
            return self._openapi(request, parts)
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")

    @staticmethod
    def _group(name: str, versions: list[str]) -> dict[str, Any]:
        listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {"name": name, "versions": listed, "preferredVersion": listed[0]}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources = []
        for info in sorted(self.registry.in_group_version(group, version), key=lambda i: i.plural):
            entry: dict[str, Any] = {
                "name": info.plural,
                "singularName": info.singular,
                "namespaced": info.namespaced,
                "kind": info.kind,
                "verbs": list(info.verbs),
            }
            if info.short_names:
                entry["shortNames"] = list(info.short_names)
            if info.categories:
                entry["categories"] = list(info.categories)
            resources.append(entry)
            for sub in info.subresources:
                entry = {
                    "name": f"{info.plural}/{sub}",
                    "singularName": "",
                    "namespaced": info.namespaced,
                    "kind": "Scale" if sub == "scale" else info.kind,
                    "verbs": ["update"] if sub == "finalize" else ["get", "patch", "update"],
                }
                if sub == "token":
                    entry.update(
                        kind="TokenRequest",
                        verbs=["create"],
                        group="authentication.k8s.io",
                        version="v1",
                    )
                if sub == "scale":
                    entry.update(group="autoscaling", version="v1")
                resources.append(entry)
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def _openapi(self, request: web.Request, parts: list[str]) -> web.StreamResponse:
        resources = self.registry.all()
        if parts[1:] == ["v2"]:
            accept = request.headers.get("Accept", "")
            if "protobuf" in accept and "json" not in accept:
                return web.Response(
                    body=protobuf.openapi_v2_stub("Kubernetes", VERSION_INFO["gitVersion"]),
                    content_type=protobuf.OPENAPI_V2_CONTENT_TYPE,
                )
            return respond(openapi.v2(resources))
        if parts[1:] == ["v3"]:
            return respond(openapi.v3_index(resources))
        if len(parts) >= 3 and parts[1] == "v3":
            rest = parts[2:]
            if rest == ["api", "v1"]:
                group, version = "", "v1"
            elif len(rest) == 3 and rest[0] == "apis":
                group, version = rest[1], rest[2]
            else:
                raise errors.ApiError(
                    404, "NotFound", "the server could not find the requested resource"
                )
            document = openapi.v3_document(resources, group, version)
            if document is None:
                raise errors.ApiError(
                    404, "NotFound", "the server could not find the requested resource"
                )
            return respond(document)
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")

    # -- output shapes: full objects, Tables, metadata only ---------------------------------

    def _shape(
        self,
        request: web.Request,
        info: ResourceInfo,
        objs: list[dict[str, Any]],
        single: bool,
        list_meta: dict[str, Any],
    ) -> dict[str, Any]:
        accept = request.headers.get("Accept", "")
        if "as=Table" in accept:
            include = request.query.get("includeObject", "Metadata")
            shown = table.to_table(info, objs, include)
            shown.setdefault("metadata", {}).update(list_meta)
            return shown
        presented = [self.objects.present(info, o) for o in objs]
        if "as=PartialObjectMetadata" in accept:
            partial = [
                {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                }
                for o in presented
            ]
            if single:
                return partial[0]
            return {
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": list_meta,
                # kube-apiserver serialises an empty metadata list as null, not [].
                "items": partial or None,
            }
        if single:
            return presented[0]
        return {
            "kind": info.list_kind,
            "apiVersion": info.group_version,
            "metadata": list_meta,
            "items": presented,
        }

    # -- reads ------------------------------------------------------------------------------

    async def _get(self, request: web.Request, t: Target, user: UserInfo) -> web.StreamResponse:
        obj = self.objects.get(t.info, t.namespace, t.name)
        return respond(self._shape(request, t.info, [obj], True, {}))

    def _predicate(
        self, query: Mapping[str, str], info: ResourceInfo | None = None
    ) -> selectors.Predicate | None:
        supported = None
        if info is not None:
            crd_version = next(
                (
                    v
                    for v in ((info.crd or {}).get("spec") or {}).get("versions") or ()
                    if v.get("name") == info.version
                ),
                None,
            )
            fields = selectors.supported_fields(info.group, info.plural, crd_version)

            def supported(label: str) -> None:
                if label not in fields:
                    known = ", ".join(f'"{f}"' for f in sorted(fields))
                    raise errors.bad_request(
                        f'Unable to find "{info.group_version}, Resource={info.plural}" that '
                        f'match label selector "{query.get("labelSelector", "")}", field '
                        f'selector "{query.get("fieldSelector", "")}": "{label}" is not a known '
                        f"field selector: only {known}"
                    )

        predicate = selectors.combine(
            selectors.label_selector(query.get("labelSelector")),
            selectors.field_selector(query.get("fieldSelector"), supported),
        )
        if predicate is not None and info is not None and is_events_v1(info):
            # Selectors name the fields of the shape the client asked for.
            shown, present = predicate, self.objects.present
            return lambda obj: shown(present(info, obj))
        return predicate

    async def _list(self, request: web.Request, t: Target, user: UserInfo) -> web.StreamResponse:
        query = request.query
        predicate = self._predicate(query, t.info)
        ns = t.namespace or None
        list_rv = self.store.rv
        start: tuple[str, ...] | None = None
        token = query.get("continue")
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                list_rv, start = int(state["rv"]), tuple(state["start"])
            except (ValueError, KeyError, TypeError):
                raise errors.bad_request("continue key is not valid") from None
            if list_rv < self.store.compacted_rv:
                raise errors.gone(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter, or use "
                    "the continue token in this response to retrieve the remainder of the "
                    "results. Continuing with the provided token results in an inconsistent "
                    "list - objects that were created, modified, or deleted between the time "
                    "the first chunk was returned and now may show up in the list."
                )
        # A listing in pages reads one page of objects each time, in order, not the whole kind:
        # sorting ten thousand bindings for every page stalled every other request.
        found = self.store.iter_after(key_of(t.info), ns, start)
        if predicate is not None:
            found = filter(predicate, found)
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        limit = int(query.get("limit") or 0)
        items = list(itertools.islice(found, limit + 1) if limit > 0 else found)
        if limit > 0 and len(items) > limit:
            items = items[:limit]
            last = items[-1]["metadata"]
            after = (last.get("namespace", ""), last["name"])
            meta["continue"] = base64.urlsafe_b64encode(
                dumps({"rv": list_rv, "start": list(after)})
            ).decode()
            if predicate is None:
                # kube-apiserver counts what is left only when no selector filters it.
                meta["remainingItemCount"] = self.store.count_after(key_of(t.info), ns, after)
        return respond(self._shape(request, t.info, items, False, meta))

    async def _watch(self, request: web.Request, t: Target, user: UserInfo) -> web.StreamResponse:
        query = request.query
        predicate = self._predicate(query, t.info)
        if t.name:
            by_name = selectors.field_selector(f"metadata.name={t.name}")
            predicate = selectors.combine(predicate, by_name)
        info = t.info
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        initial_events = query.get("sendInitialEvents") == "true"
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        deadline = time.monotonic() + timeout if timeout else None
        as_table = "as=Table" in request.headers.get("Accept", "")

        response = web.StreamResponse(status=200, headers={"Content-Type": JSON})
        response.enable_chunked_encoding()
        await response.prepare(request)

        def render(kind: str, obj: dict[str, Any]) -> bytes:
            if as_table:
                shaped: Any = table.to_table(
                    info, [obj], request.query.get("includeObject", "Metadata")
                )
            else:
                shaped = self.objects.present(info, obj)
            return dumps({"type": kind, "object": shaped}) + b"\n"

        def bookmark(extra: dict[str, str] | None = None) -> bytes:
            meta: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
            if extra:
                meta["annotations"] = extra
            return (
                dumps(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": info.kind,
                            "apiVersion": info.group_version,
                            "metadata": meta,
                        },
                    }
                )
                + b"\n"
            )

        cache_key = None if as_table else info.group_version
        key = key_of(info)
        ns = t.namespace or None
        rv_param = query.get("resourceVersion", "")
        chunks: list[bytes] = []
        # Register and snapshot in one step (no await between): no event is lost or doubled.
        watcher = self.store.watch(key, ns)
        try:
            if rv_param in ("", "0") or initial_events:
                for obj in list(self.store.iter(key, ns)):
                    if predicate is None or predicate(obj):
                        chunks.append(render("ADDED", obj))
                if initial_events and bookmarks:
                    chunks.append(bookmark({"k8s.io/initial-events-end": "true"}))
            else:
                try:
                    replay = list(self.store.events_since(int(rv_param), key, ns))
                except ValueError:
                    raise errors.bad_request(f"invalid resource version: {rv_param}") from None
                except TooOld:
                    status = errors.gone(
                        f"too old resource version: {rv_param} ({self.store.compacted_rv + 1})"
                    ).status()
                    await response.write(dumps({"type": "ERROR", "object": status}) + b"\n")
                    return response
                for past in replay:
                    chunks.extend(self._event_lines(past, predicate, render, cache_key))
            if chunks:
                await response.write(b"".join(chunks))
            last_bookmark = time.monotonic()
            while True:
                wait = BOOKMARK_INTERVAL if bookmarks else None
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    wait = min(wait, left) if wait is not None else left
                try:
                    event: Event | None = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    if bookmarks and time.monotonic() - last_bookmark >= BOOKMARK_INTERVAL:
                        await response.write(bookmark())
                        last_bookmark = time.monotonic()
                    continue
                if event is None:
                    break
                batch: list[bytes] = []
                closed = False
                while event is not None:
                    batch.extend(self._event_lines(event, predicate, render, cache_key))
                    if watcher.queue.empty():
                        break
                    event = watcher.queue.get_nowait()
                    if event is None:
                        closed = True
                if batch:
                    await response.write(b"".join(batch))
                if closed:
                    break
        except ConnectionResetError:
            pass  # the client went away
        finally:
            self.store.unwatch(watcher)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response

    @staticmethod
    def _event_lines(
        event: Event,
        predicate: selectors.Predicate | None,
        render: Callable[[str, dict[str, Any]], bytes],
        cache_key: str | None,
    ) -> list[bytes]:
        def line(kind: str) -> bytes:
            # Every watcher of the same shape sends the same bytes: serialise once per event.
            if cache_key is None:
                return render(kind, event.obj)
            cached = event.rendered.get((kind, cache_key))
            if cached is None:
                cached = event.rendered[(kind, cache_key)] = render(kind, event.obj)
            return cached

        if predicate is None:
            return [line(event.type)]
        now_matches = predicate(event.obj)
        if event.type == "MODIFIED":
            before = event.old is not None and predicate(event.old)
            if now_matches and before:
                return [line("MODIFIED")]
            if now_matches:
                return [line("ADDED")]
            if before:
                return [line("DELETED")]
            return []
        return [line(event.type)] if now_matches else []

    # -- writes -----------------------------------------------------------------------------

    @staticmethod
    async def _body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        ctype = request.content_type
        if ctype == protobuf.CONTENT_TYPE:
            return protobuf.decode(raw)
        try:
            if "yaml" in ctype:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise errors.bad_request(
                f"the body of the request could not be decoded: {exc}"
            ) from None

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        values = request.query.getall("dryRun", [])
        if any(v != "All" for v in values):
            raise errors.bad_request(f"unsupported dryRun value: {values}")
        return bool(values)

    async def _admit(
        self,
        operation: str,
        t: Target,
        user: UserInfo,
        obj: dict[str, Any] | None,
        old: dict[str, Any] | None,
        dry_run: bool,
        options: dict[str, Any] | None = None,
        name: str = "",
        mutate: bool = True,
    ) -> dict[str, Any] | None:
        """Webhook admission: the mutating webhooks (returning the object to go on with), or
        with `mutate=False` the validating ones."""
        req = self._admission_attributes(operation, t, user, obj, old, dry_run, options, name)
        try:
            if mutate:
                mutated = await self.admission.mutate(req)
                if mutated is None or obj is None:
                    return obj
                # Webhooks saw the client's shape; store the stored one.
                if is_events_v1(t.info):
                    return events.to_core(mutated)
                return {**mutated, "apiVersion": obj["apiVersion"], "kind": obj["kind"]}
            await self.admission.validate(req)
            return obj
        finally:
            _WARNINGS.get([]).extend(req.warnings)

    def _admission_attributes(
        self,
        operation: str,
        t: Target,
        user: UserInfo,
        obj: dict[str, Any] | None,
        old: dict[str, Any] | None,
        dry_run: bool,
        options: dict[str, Any] | None,
        name: str,
    ) -> admission.AdmissionAttributes:
        info = t.info
        namespace = t.namespace
        if info.group == "" and info.plural == "namespaces":
            namespace = name or t.name
        # A CONNECT carries its options as the object and no request options.
        option_kind = {
            "CREATE": "CreateOptions",
            "UPDATE": "UpdateOptions",
            "DELETE": "DeleteOptions",
        }.get(operation)
        return admission.AdmissionAttributes(
            kind={"group": info.group, "version": info.version, "kind": info.kind},
            resource={"group": info.group, "version": info.version, "resource": info.plural},
            operation=operation,
            user_info=user,
            name=name or t.name,
            namespace=namespace,
            object=self.objects.present(info, obj) if obj is not None else None,
            old_object=self.objects.present(info, old) if old is not None else None,
            sub_resource=t.subresource,
            dry_run=dry_run,
            options=(
                {"kind": option_kind, "apiVersion": "meta.k8s.io/v1", **(options or {})}
                if option_kind
                else None
            ),
        )

    def _validate(
        self, t: Target, obj: dict[str, Any], old: dict[str, Any] | None, user: UserInfo, verb: str
    ) -> dict[str, Any]:
        info = t.info
        validation.check_metadata(info, obj)
        if info.crd is not None:
            obj = schema.admit(
                info,
                obj,
                old,
                t.subresource,
                field_validation=_FIELD_VALIDATION.get(),
                warnings=_WARNINGS.get([]),
            )
        else:
            known_fields.check(info, obj, _FIELD_VALIDATION.get(), _WARNINGS.get([]))
            known_fields.check_micro_times(info, obj)
            validation.check_builtin(info, obj, old)
            if info.group == CRD_GROUP and t.subresource != "status":
                schema.validate_crd(obj)
        if info.group == RBAC_GROUP and info.plural in RBAC_KINDS:
            self.authorizer.check_escalation(user, verb, info.plural, obj)
        return obj

    async def _create(self, request: web.Request, t: Target, user: UserInfo) -> web.StreamResponse:
        body = await self._body(request)
        if t.subresource == "token":
            return respond(await self._token_request(t, body, user, self._dry_run(request)), 201)
        if (t.info.group, t.info.plural) in VIRTUAL:
            return respond(self._review(t, body, user), 201)
        dry_run = self._dry_run(request)
        self._refuse_if_crd_terminating(t.info)
        obj = self.objects.prepare_create(t.info, body, t.namespace)
        obj = await self._admit_builtin(t, obj, body)
        obj = (
            await self._admit("CREATE", t, user, obj, None, dry_run, name=obj["metadata"]["name"])
            or obj
        )
        obj = self._validate(t, obj, None, user, "create")
        await self._admit(
            "CREATE", t, user, obj, None, dry_run, name=obj["metadata"]["name"], mutate=False
        )
        created = self.objects.create(t.info, obj, dry_run)
        return respond(self._shape(request, t.info, [created], True, {}), 201)

    async def _admit_builtin(self, t: Target, obj: dict[str, Any], body: Any) -> dict[str, Any]:
        """The built-in admission plugins that change what is created, before any webhook:
        NamespaceLifecycle (a missing namespace is 404 first), then ServiceAccount for pods."""
        if t.info.group != "" or t.info.plural != "pods":
            return obj
        self.objects.check_namespace(t.info, t.namespace, obj["metadata"]["name"])
        given = ((body or {}).get("metadata") or {}).get("name") or ""
        return await serviceaccounts.admit_pod(self.store, t.namespace, obj, given)

    async def _token_request(
        self, t: Target, body: Any, user: UserInfo, dry_run: bool
    ) -> dict[str, Any]:
        """TokenRequest (tokenrequest.py): mutating admission on the defaulted request, the
        token REST's checks, validating admission, then the bound object and the token. It
        passes admission as kind TokenRequest, subresource `token` of serviceaccounts."""
        review = tokenrequest.initial(t.namespace, t.name, body)
        account: dict[str, Any] = {}
        for mutate in (True, False):
            if not mutate:
                review, account = self.token_requests.check(t.namespace, t.name, review)
            attributes = self._admission_attributes(
                "CREATE", t, user, None, None, dry_run, None, t.name
            )
            attributes.kind = {"group": tokenrequest.GROUP, "version": "v1", "kind": "TokenRequest"}
            attributes.object = review
            try:
                if mutate:
                    review = await self.admission.mutate(attributes) or review
                else:
                    await self.admission.validate(attributes)
            finally:
                _WARNINGS.get([]).extend(attributes.warnings)
        return self.token_requests.issue(review, account)

    def _refuse_if_crd_terminating(self, info: ResourceInfo) -> None:
        if info.crd is None:
            return
        crd = self.store.get(
            (CRD_GROUP, "customresourcedefinitions"), "", info.crd["metadata"]["name"]
        )
        if crd is not None and crd["metadata"].get("deletionTimestamp"):
            raise errors.method_not_allowed(
                "create not allowed while custom resource definition is terminating"
            )

    def _review(self, t: Target, body: Any, user: UserInfo) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        if t.info.plural == "selfsubjectreviews":
            return {
                "kind": "SelfSubjectReview",
                "apiVersion": t.info.group_version,
                "metadata": {"creationTimestamp": now()},
                "status": {"userInfo": user.to_review()},
            }
        if t.info.namespaced:
            body.setdefault("metadata", {})["namespace"] = t.namespace
        return self.authorizer.review(t.info.kind, body, user)

    async def _write(
        self,
        request: web.Request,
        t: Target,
        user: UserInfo,
        new_body: Callable[[dict[str, Any]], Any],
        verb: str,
    ) -> web.StreamResponse:
        """Update from `new_body(current object)`, again from the fresh object when another
        write lands while admission webhooks run (as the API server's GuaranteedUpdate)."""
        dry_run = self._dry_run(request)
        for _ in range(8):
            old = self.objects.get(t.info, t.namespace, t.name)
            new = self.objects.prepare_update(t.info, old, new_body(old), t.subresource, t.name)
            new = await self._admit("UPDATE", t, user, new, old, dry_run) or new
            new = self._validate(t, new, old, user, verb)
            await self._admit("UPDATE", t, user, new, old, dry_run, mutate=False)
            if self.store.get(key_of(t.info), t.namespace, t.name) is not old:
                continue
            stored = self.objects.update(t.info, old, new, dry_run)
            return respond(self._shape(request, t.info, [stored], True, {}))
        raise errors.stale(t.info.plural, t.info.group, t.name)

    @staticmethod
    def _scale_of(obj: dict[str, Any]) -> dict[str, Any]:
        """A Deployment's `scale` subresource: an `autoscaling/v1` Scale."""
        metadata = obj.get("metadata") or {}
        labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: metadata[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in metadata
            },
            "spec": {"replicas": int((obj.get("spec") or {}).get("replicas", 1))},
            "status": {
                "replicas": int((obj.get("status") or {}).get("replicas", 0)),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            },
        }

    async def _scale(
        self, request: web.Request, t: Target, user: UserInfo, verb: str
    ) -> web.StreamResponse:
        """`deployments/scale`: read, or change `spec.replicas` through a Scale (put or
        patched); the change is admitted as an update of the Deployment."""
        current = self._scale_of(self.objects.get(t.info, t.namespace, t.name))
        if verb == "get":
            return respond(current)
        if verb not in ("update", "patch"):
            raise errors.method_not_allowed()
        body = await self._body(request)
        if verb == "update":
            wanted = body
        elif request.content_type == "application/json-patch+json":
            wanted = patch.json_patch(current, body)
        elif request.content_type in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ):
            wanted = patch.merge_patch(current, body)
        else:
            raise errors.unsupported_media_type(request.content_type)
        replicas = ((wanted or {}).get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.bad_request("spec.replicas must be a non-negative integer")

        def scaled(old: dict[str, Any]) -> dict[str, Any]:
            new = json.loads(json.dumps(self.objects.present(t.info, old)))
            new.setdefault("spec", {})["replicas"] = replicas
            return dict(new)

        whole = Target(t.info, t.namespace, t.name, "", False)
        await self._write(request, whole, user, scaled, "update")
        return respond(self._scale_of(self.objects.get(t.info, t.namespace, t.name)))

    async def _update(self, request: web.Request, t: Target, user: UserInfo) -> web.StreamResponse:
        body = await self._body(request)
        # A body without a resourceVersion updates whatever is current; with one, a change in
        # between is a conflict (prepare_update compares them).
        return await self._write(request, t, user, lambda _old: body, "update")

    async def _patch(self, request: web.Request, t: Target, user: UserInfo) -> web.StreamResponse:
        ctype = request.content_type
        body = await self._body(request)
        if ctype == "application/apply-patch+yaml":
            return await self._apply(request, t, user, body)
        apply: Callable[[Any, Any], Any]
        if ctype == "application/json-patch+json":
            apply = patch.json_patch
        elif ctype == "application/merge-patch+json":
            if not isinstance(body, dict):
                raise errors.bad_request("a merge patch must be a JSON object")
            apply = patch.merge_patch
        elif ctype == "application/strategic-merge-patch+json":
            if t.info.crd is not None:
                raise errors.unsupported_media_type(ctype)
            apply = patch.strategic_merge_patch
        else:
            raise errors.unsupported_media_type(ctype)
        # Patches apply to the shape the client sees.
        return await self._write(
            request, t, user, lambda old: apply(self.objects.present(t.info, old), body), "patch"
        )

    async def _apply(
        self, request: web.Request, t: Target, user: UserInfo, body: Any
    ) -> web.StreamResponse:
        """Server-side apply, approximated: the applied fields are merged into the object."""
        manager = request.query.get("fieldManager", "")
        if not manager:
            raise errors.bad_request("PATCH with apply requires a fieldManager")
        if not isinstance(body, dict):
            raise errors.bad_request("an apply patch must be an object")
        current = self.store.get(key_of(t.info), t.namespace, t.name)
        if current is None:
            if t.subresource:
                raise errors.not_found(t.info.plural, t.info.group, t.name)
            body.setdefault("metadata", {})["name"] = t.name
            dry_run = self._dry_run(request)
            obj = self.objects.prepare_create(t.info, body, t.namespace)
            obj = await self._admit_builtin(t, obj, body)
            obj = await self._admit("CREATE", t, user, obj, None, dry_run, name=t.name) or obj
            obj = self._validate(t, obj, None, user, "create")
            await self._admit("CREATE", t, user, obj, None, dry_run, name=t.name, mutate=False)
            created = self.objects.create(t.info, obj, dry_run)
            if not dry_run:
                self._applied.setdefault(created["metadata"]["uid"], {})[manager] = body
            return respond(self._shape(request, t.info, [created], True, {}), 201)
        body.get("metadata", {}).pop("resourceVersion", None)
        # Fields this manager applied before and applies no more are removed, as their owner
        # gives them up (a three-way merge, as client-side apply does).
        previous = self._applied.get(current["metadata"]["uid"], {}).get(manager, {})
        merged = patch.merge_patch(_removals(previous, body), body)
        merge = patch.strategic_merge_patch if t.info.crd is None else patch.merge_patch
        response = await self._write(
            request, t, user, lambda old: merge(self.objects.present(t.info, old), merged), "patch"
        )
        if not self._dry_run(request):
            self._applied.setdefault(current["metadata"]["uid"], {})[manager] = body
        return response

    # -- deletes ----------------------------------------------------------------------------

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        body = await self._body(request)
        options: dict[str, Any] = dict(body) if isinstance(body, dict) else {}
        query = request.query
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if "orphanDependents" in query:
            options["orphanDependents"] = query["orphanDependents"] == "true"
        if "gracePeriodSeconds" in query:
            options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
        if query.getall("dryRun", []):
            options["dryRun"] = query.getall("dryRun")
        return options

    def _deleted_status(self, info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
        details: dict[str, Any] = {
            "name": obj["metadata"]["name"],
            "kind": info.plural,
            "uid": obj["metadata"]["uid"],
        }
        if info.group:
            details["group"] = info.group
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }

    async def _delete(self, request: web.Request, t: Target, user: UserInfo) -> web.StreamResponse:
        options = await self._delete_options(request)
        dry_run = self._dry_run(request) or options.get("dryRun") == ["All"]
        obj = self.objects.get(t.info, t.namespace, t.name)
        await self._admit("DELETE", t, user, None, obj, dry_run, options, mutate=False)
        # Preconditions and finalizers are judged on the object as it is after admission.
        obj = self.objects.get(t.info, t.namespace, t.name)
        result, removed = self.objects.delete(t.info, obj, options, dry_run)
        if removed and t.info.crd is None and t.info.plural != "namespaces":
            return respond(self._deleted_status(t.info, result))
        status = 202 if not removed and options.get("propagationPolicy") == "Foreground" else 200
        return respond(self._shape(request, t.info, [result], True, {}), status)

    async def _delete_collection(
        self, request: web.Request, t: Target, user: UserInfo
    ) -> web.StreamResponse:
        options = await self._delete_options(request)
        dry_run = self._dry_run(request) or options.get("dryRun") == ["All"]
        predicate = self._predicate(request.query, t.info)
        victims = [
            o
            for o in self.store.iter(key_of(t.info), t.namespace or None)
            if predicate is None or predicate(o)
        ]
        deleted = []
        for obj in victims:
            one = Target(
                t.info, obj["metadata"].get("namespace", ""), obj["metadata"]["name"], "", False
            )
            await self._admit("DELETE", one, user, None, obj, dry_run, options, mutate=False)
            result, _ = self.objects.delete(t.info, obj, options, dry_run)
            deleted.append(result)
        return respond(
            self._shape(request, t.info, deleted, False, {"resourceVersion": str(self.store.rv)})
        )


def _removals(previous: Any, applied: Any) -> dict[str, Any]:
    """A merge patch nulling what `previous` set and `applied` no longer mentions."""
    if not isinstance(previous, dict) or not isinstance(applied, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in previous.items():
        if key not in applied:
            out[key] = None
        elif isinstance(value, dict) and isinstance(applied[key], dict):
            nested = _removals(value, applied[key])
            if nested:
                out[key] = nested
    return out
