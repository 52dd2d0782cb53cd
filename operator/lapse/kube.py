"""Kubernetes I/O: the one module that talks to the API server.

A small async client over one shared aiohttp session, because each transition is a handful of
calls and the benchmark drives thousands of them: no thread pool, no redundant reads.
Credentials come from the kubeconfig or the in-cluster service account via the `kubernetes`
package's loaders, so `KUBECONFIG` and pod tokens both work.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import aiohttp
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from lapse.core.bindings import RBAC_GROUP, format_time
from lapse.core.grants import GrantKey
from lapse.core.kinds import GROUP, VERSION, kind_named
from lapse.core.models import BindingRef
from lapse.core.naming import compute_event_name

BINDING_PLURALS = {"RoleBinding": "rolebindings", "ClusterRoleBinding": "clusterrolebindings"}
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# Answers worth another try: throttled, or the server (or what stands before it) is unwell.
TRANSIENT = frozenset({429, 500, 502, 503, 504})
RETRY_FOR = 20.0
RETRY_MAX_DELAY = 2.0
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
WEBHOOK_CONFIGURATIONS = {
    "MutatingWebhookConfiguration": f"{ADMISSION}/mutatingwebhookconfigurations",
    "ValidatingWebhookConfiguration": f"{ADMISSION}/validatingwebhookconfigurations",
}
CONNECTIONS = 64
REVOCATION_CONNECTIONS = 16
REAPER_CONNECTIONS = 64
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
# Lists come in pages of this many objects, so no single answer holds every grant.
PAGE_SIZE = 500
# How long the API server keeps one watch open before the client starts the next.
WATCH_SECONDS = 300
# Asks for the objects' metadata alone: the sweep reads labels, annotations and owners.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


class ApiError(Exception):
    """An answer of the API server other than success. Callers catch the subclass that names
    what happened; only this module looks at status codes."""

    def __init__(self, status: int, reason: str, message: str, retry_after: float = 0.0) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        # Seconds the server asked to wait before trying again (Retry-After), 0 if it did not.
        self.retry_after = retry_after


class NotFoundError(ApiError):
    """404: the object, or its namespace, or the resource type, is not there."""


class ConflictError(ApiError):
    """409: the name is taken, or a precondition (UID, resourceVersion) no longer holds."""


class RefusedError(ApiError):
    """400, 403, 422: the API server will not do this, however often asked."""


class ForbiddenError(RefusedError):
    """403: RBAC (or an admission webhook) forbids it."""


class GoneError(ApiError):
    """410: a watch asked to resume from a resourceVersion too old to be kept; list again."""


class TransientError(ApiError):
    """429 or 5xx: throttled, or the server is unwell; worth another try."""


def api_error(status: int, reason: str, message: str, retry_after: float = 0.0) -> ApiError:
    """The typed error for an answer with `status`."""
    kinds: dict[int, type[ApiError]] = {
        400: RefusedError,
        403: ForbiddenError,
        404: NotFoundError,
        409: ConflictError,
        410: GoneError,
        422: RefusedError,
    }
    kind = kinds.get(status) or (TransientError if status in TRANSIENT else ApiError)
    return kind(status, reason, message, retry_after)


def load_configuration() -> Any:
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return configuration


def _ssl_context(configuration: Any) -> ssl.SSLContext | bool:
    if not configuration.host.startswith("https"):
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def owner_path(kind: str, namespace: str | None, name: str | None = None) -> str:
    base = f"/apis/{GROUP}/{VERSION}"
    if namespace:
        base += f"/namespaces/{namespace}"
    path = f"{base}/{kind_named(kind).plural}"
    return f"{path}/{name}" if name else path


def binding_path(ref: BindingRef) -> str:
    base = f"/apis/{RBAC_GROUP}/v1"
    if ref.kind == "RoleBinding":
        base += f"/namespaces/{ref.namespace}"
    return f"{base}/{BINDING_PLURALS[ref.kind]}/{ref.name}"


class KubeApi(Protocol):
    """What the operator asks of the API server: everything above this module is written
    against this, which `KubeClient` implements over HTTP and the keepers' unit tests
    implement in memory."""

    async def close(self) -> None: ...
    async def create_binding(self, manifest: Mapping[str, Any]) -> dict[str, Any]: ...
    async def role_exists(self, kind: str, name: str, namespace: str | None) -> bool | None: ...
    async def get_binding(self, ref: BindingRef) -> dict[str, Any] | None: ...
    async def delete_binding(self, ref: BindingRef) -> bool: ...
    async def warm_revocations(self, connections: int) -> int: ...
    async def patch_binding(self, ref: BindingRef, patch: Mapping[str, Any]) -> dict[str, Any]: ...
    async def list_bindings(self, selector: str) -> list[dict[str, Any]]: ...
    def binding_metadata_pages(self, selector: str) -> AsyncIterator[list[dict[str, Any]]]: ...
    def owner_pages(
        self, kind: str, versions: list[str] | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]: ...
    def watch_owners(
        self, kind: str, version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]: ...
    def pages(
        self, path: str, versions: list[str] | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]: ...
    def watch(self, path: str, version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]: ...
    async def get_owner(
        self, key: GrantKey, *, revoking: bool = False
    ) -> dict[str, Any] | None: ...
    async def list_owners(self, kind: str) -> list[dict[str, Any]] | None: ...
    async def get_policy(self, name: str) -> dict[str, Any] | None: ...
    async def patch_status(self, key: GrantKey, patch: Mapping[str, Any]) -> dict[str, Any]: ...
    async def json_patch_status(
        self, key: GrantKey, operations: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]: ...
    async def delete_object(
        self, path: str, *, uid: str, grace_seconds: int | None = None
    ) -> None: ...
    async def json_patch_owner(
        self, key: GrantKey, operations: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]: ...
    async def delete_events_about(self, namespace: str, uid: str) -> None: ...
    async def get_namespace(self, name: str) -> dict[str, Any] | None: ...
    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def create_access_review(self, review: Mapping[str, Any]) -> dict[str, Any]: ...
    async def get_role_rules(
        self, kind: str, name: str, namespace: str | None
    ) -> list[dict[str, Any]] | None: ...
    async def get_namespace_labels(self, name: str) -> dict[str, str]: ...
    async def existing_namespaces(self, names: list[str]) -> set[str]: ...
    async def post_event(
        self,
        involved: Mapping[str, Any],
        namespace: str,
        type_: str,
        reason: str,
        message: str,
        now: datetime,
    ) -> None: ...
    async def get_namespaced(
        self, plural: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...
    async def create_namespaced(
        self, plural: str, namespace: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any]: ...
    async def replace_namespaced(
        self, plural: str, namespace: str, name: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any]: ...
    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def get_webhook_configuration(self, kind: str, name: str) -> dict[str, Any] | None: ...
    async def create_webhook_configuration(
        self, kind: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any]: ...
    async def replace_webhook_configuration(
        self, kind: str, name: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any]: ...
    async def create_lease(self, namespace: str, manifest: Mapping[str, Any]) -> dict[str, Any]: ...
    async def replace_lease(
        self, namespace: str, name: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any]: ...
    async def get_path(self, path: str) -> dict[str, Any] | None: ...


class KubeClient:
    def __init__(
        self, configuration: Any, *, revocation_connections: int = REVOCATION_CONNECTIONS
    ) -> None:
        self._configuration = configuration
        self._host = configuration.host.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "lapse-operator"}
        token = configuration.get_api_key_with_prefix("authorization") or (
            configuration.api_key.get("BearerToken") if configuration.api_key else None
        )
        if token:
            headers["Authorization"] = token if " " in token else f"Bearer {token}"
        context = _ssl_context(configuration)
        # Time spent waiting for a free connection is not the server being slow: under a
        # backlog a total timeout would fail calls that never left the pool, and their retries
        # would add to the backlog. Only connecting and reading are bounded.
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT
        )
        self._session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=context, limit=CONNECTIONS),
            timeout=timeout,
        )
        # Deletes of bindings end access: they get connections of their own, so a backlog of
        # grants never delays a revocation.
        self._revocations = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=context, limit=revocation_connections),
            timeout=timeout,
        )

    @classmethod
    def connect(cls) -> KubeClient:
        return cls(load_configuration())

    def twin(self) -> KubeClient:
        """A client of the same API server and credentials with connections of its own, for
        another event loop (lapse.reaper): its deletes may all be in flight at once."""
        return KubeClient(self._configuration, revocation_connections=REAPER_CONNECTIONS)

    async def close(self) -> None:
        await self._session.close()
        await self._revocations.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | Sequence[Any] | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        retry: bool = True,
        accept: str | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> dict[str, Any]:
        """One API call; a transient failure (429, 5xx, a dropped connection, a timeout) is
        retried with backoff for up to `RETRY_FOR` seconds, so a flaky API delays a transition
        rather than failing it. Every call Lapse makes is safe to repeat: creates answer 409,
        deletes carry a UID precondition and answer 404, status patches are merges."""
        deadline = time.monotonic() + (RETRY_FOR if retry else 0.0)
        delay = 0.1
        while True:
            try:
                return await self._call_once(
                    session or self._session, method, path, body, params, content_type, accept
                )
            except TransientError as error:
                if time.monotonic() >= deadline:
                    raise
                wait = max(delay, min(error.retry_after, RETRY_MAX_DELAY))
            except (aiohttp.ClientError, TimeoutError):
                if time.monotonic() >= deadline:
                    raise
                wait = delay
            await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, RETRY_MAX_DELAY)

    async def _call_once(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        body: Mapping[str, Any] | Sequence[Any] | None,
        params: Mapping[str, str] | None,
        content_type: str,
        accept: str | None,
    ) -> dict[str, Any]:
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if body is not None else {}
        if accept:
            headers["Accept"] = accept
        async with session.request(
            method, self._host + path, data=data, params=params, headers=headers
        ) as response:
            text = await response.text()
            try:
                payload: dict[str, Any] = json.loads(text) if text else {}
            except ValueError:
                # A proxy's plain-text 502 is an error like any other, not a crash.
                payload = {"message": text}
            if response.status >= 400:
                retry_after = response.headers.get("Retry-After", "")
                raise api_error(
                    response.status,
                    str(payload.get("reason", response.reason)),
                    str(payload.get("message", text)),
                    float(retry_after) if retry_after.isdigit() else 0.0,
                )
            return payload

    # Bindings ---------------------------------------------------------------------------

    async def create_binding(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create a binding; ConflictError when the name is taken."""
        metadata = manifest["metadata"]
        ref = BindingRef(
            kind=manifest["kind"], name=metadata["name"], namespace=metadata.get("namespace")
        )
        collection = binding_path(ref).rsplit("/", 1)[0]
        return await self._call("POST", collection, body=manifest)

    async def role_exists(self, kind: str, name: str, namespace: str | None) -> bool | None:
        """Whether the ClusterRole (or the Role in `namespace`) exists; None when Lapse may not
        read roles, and the API server's own check at binding time then decides."""
        plural = "roles" if kind == "Role" else "clusterroles"
        scope = f"namespaces/{namespace}/" if kind == "Role" and namespace else ""
        try:
            await self._call("GET", f"/apis/{RBAC_GROUP}/v1/{scope}{plural}/{name}")
        except NotFoundError:
            return False
        except ForbiddenError:
            return None
        return True

    async def get_binding(self, ref: BindingRef) -> dict[str, Any] | None:
        try:
            return await self._call("GET", binding_path(ref))
        except NotFoundError:
            return None

    async def delete_binding(self, ref: BindingRef) -> bool:
        """Delete the binding only if it is still the object with `ref.uid`: a binding
        re-created under the same name by someone else is never touched. True if deleted."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if ref.uid:
            body["preconditions"] = {"uid": ref.uid}
        try:
            await self._call("DELETE", binding_path(ref), body=body, session=self._revocations)
        except (NotFoundError, ConflictError):
            return False
        return True

    async def warm_revocations(self, connections: int) -> int:
        """Open up to `connections` of the connections deletes use, ahead of a wave: one cheap
        read each (the server's version, which every client may read), all at once so that
        each takes a connection of its own; how many answered. One that failed is only a
        connection opened later, by a delete."""
        results = await asyncio.gather(
            *(
                self._call("GET", "/version", session=self._revocations, retry=False)
                for _ in range(connections)
            ),
            return_exceptions=True,
        )
        return sum(1 for result in results if not isinstance(result, BaseException))

    async def patch_binding(self, ref: BindingRef, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", binding_path(ref), body=patch, content_type=MERGE_PATCH)

    async def list_bindings(self, selector: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for kind, plural in BINDING_PLURALS.items():
            listing = await self._call(
                "GET", f"/apis/{RBAC_GROUP}/v1/{plural}", params={"labelSelector": selector}
            )
            for item in listing.get("items") or []:
                item.setdefault("kind", kind)
                found.append(item)
        return found

    async def _pages(
        self,
        path: str,
        params: Mapping[str, str],
        accept: str | None = None,
        versions: list[str] | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """A list, one page at a time; `versions` gets the list's resourceVersion (every page
        is of the same snapshot), for a watch to resume from."""
        token = ""
        while True:
            query = {**params, "limit": str(PAGE_SIZE)}
            if token:
                query["continue"] = token
            listing = await self._call("GET", path, params=query, accept=accept)
            if versions is not None and not token:
                versions.append(str((listing.get("metadata") or {}).get("resourceVersion") or ""))
            yield list(listing.get("items") or [])
            token = str((listing.get("metadata") or {}).get("continue") or "")
            if not token:
                return

    async def binding_metadata_pages(self, selector: str) -> AsyncIterator[list[dict[str, Any]]]:
        """The metadata of every binding matching `selector`, page by page, each item with
        its binding `kind`."""
        for kind, plural in BINDING_PLURALS.items():
            path = f"/apis/{RBAC_GROUP}/v1/{plural}"
            async for page in self._pages(path, {"labelSelector": selector}, METADATA_ONLY):
                for item in page:
                    item["kind"] = kind
                yield page

    # Lapse objects ------------------------------------------------------------------------

    async def owner_pages(
        self, kind: str, versions: list[str] | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every object of `kind`, page by page; NotFoundError when the kind is not served."""
        path = f"/apis/{GROUP}/{VERSION}/{kind_named(kind).plural}"
        async for page in self._pages(path, {}, versions=versions):
            yield page

    async def watch_owners(
        self, kind: str, version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Each change to objects of `kind` after `version` (see `watch`)."""
        path = f"/apis/{GROUP}/{VERSION}/{kind_named(kind).plural}"
        async for event in self.watch(path, version):
            yield event

    async def pages(
        self, path: str, versions: list[str] | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every object a list path names, page by page (`versions`: see `_pages`)."""
        async for page in self._pages(path, {}, versions=versions):
            yield page

    async def watch(self, path: str, version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Each change to the objects a list path names after `version`, as (type, object); a
        BOOKMARK carries only a newer resourceVersion. Ends when the server closes the watch;
        GoneError when `version` is too old to resume from."""
        params = {
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT, sock_read=WATCH_SECONDS + READ_TIMEOUT
        )
        url = f"{self._host}{path}"
        async with self._session.get(url, params=params, timeout=timeout) as response:
            if response.status >= 400:
                text = await response.text()
                raise api_error(response.status, str(response.reason), text)
            pending = b""
            # Objects may be longer than a stream reader's line limit: split by hand.
            async for chunk in response.content.iter_any():
                *lines, pending = (pending + chunk).split(b"\n")
                for line in filter(bytes.strip, lines):
                    event = json.loads(line)
                    found = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        raise api_error(
                            int(found.get("code") or 500),
                            str(found.get("reason", "")),
                            str(found.get("message", "")),
                        )
                    yield str(event.get("type")), found

    async def get_owner(self, key: GrantKey, *, revoking: bool = False) -> dict[str, Any] | None:
        """The owner, or None when it does not exist; `revoking` reads it on the connections
        kept for ending access."""
        session = self._revocations if revoking else None
        try:
            return await self._call(
                "GET", owner_path(key.kind, key.namespace, key.name), session=session
            )
        except NotFoundError:
            return None

    async def get_policy(self, name: str) -> dict[str, Any] | None:
        """The AccessPolicy `name`, or None when there is none."""
        try:
            return await self._call("GET", f"/apis/{GROUP}/{VERSION}/accesspolicies/{name}")
        except NotFoundError:
            return None

    async def list_owners(self, kind: str) -> list[dict[str, Any]] | None:
        """Every object of `kind`, or None when the kind is not served (CRD not installed)."""
        try:
            listing = await self._call("GET", f"/apis/{GROUP}/{VERSION}/{kind_named(kind).plural}")
        except NotFoundError:
            return None
        return list(listing.get("items") or [])

    async def patch_status(self, key: GrantKey, patch: Mapping[str, Any]) -> dict[str, Any]:
        path = owner_path(key.kind, key.namespace, key.name) + "/status"
        return await self._call("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def json_patch_status(
        self, key: GrantKey, operations: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """A JSON patch of the status subresource; a failed `test` is a RefusedError."""
        path = owner_path(key.kind, key.namespace, key.name) + "/status"
        return await self._call("PATCH", path, body=list(operations), content_type=JSON_PATCH)

    async def json_patch_owner(
        self, key: GrantKey, operations: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """A JSON patch of the owner itself (its finalizers); a failed `test` is a
        RefusedError, a vanished owner a NotFoundError."""
        path = owner_path(key.kind, key.namespace, key.name)
        return await self._call("PATCH", path, body=list(operations), content_type=JSON_PATCH)

    async def delete_object(self, path: str, *, uid: str, grace_seconds: int | None = None) -> None:
        """Delete the object at `path` only while it is the object with `uid`: NotFoundError
        when it is gone, ConflictError when the name now holds another object. A pod's
        `grace_seconds` overrides its own termination grace period."""
        body: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": {"uid": uid},
        }
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        await self._call("DELETE", path, body=body, params={"propagationPolicy": "Background"})

    async def get_role_rules(
        self, kind: str, name: str, namespace: str | None
    ) -> list[dict[str, Any]] | None:
        """The rules of a ClusterRole (or a Role in `namespace`) as the API server holds them,
        aggregation included; None when the role does not exist."""
        scope = f"namespaces/{namespace}/" if kind == "Role" and namespace else ""
        plural = "roles" if kind == "Role" else "clusterroles"
        found = await self.get_path(f"/apis/{RBAC_GROUP}/v1/{scope}{plural}/{name}")
        return None if found is None else list(found.get("rules") or [])

    async def create_access_review(self, review: Mapping[str, Any]) -> dict[str, Any]:
        """Ask the authorizer (SubjectAccessReview); the review with its status."""
        return await self._call(
            "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=review
        )

    async def whoami(self) -> str:
        """The user name the API server knows these credentials by (SelfSubjectReview)."""
        review = await self._call(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        return str(((review.get("status") or {}).get("userInfo") or {}).get("username") or "")

    async def get_namespace_labels(self, name: str) -> dict[str, str]:
        try:
            namespace = await self._call("GET", f"/api/v1/namespaces/{name}")
        except NotFoundError:
            return {}
        return dict(namespace.get("metadata", {}).get("labels") or {})

    async def get_namespace(self, name: str) -> dict[str, Any] | None:
        return await self.get_path(f"/api/v1/namespaces/{name}")

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get_path(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")

    async def existing_namespaces(self, names: list[str]) -> set[str]:
        """Which of `names` exist (and are not being deleted)."""
        found: set[str] = set()
        for name in dict.fromkeys(names):
            try:
                namespace = await self._call("GET", f"/api/v1/namespaces/{name}")
            except NotFoundError:
                continue
            if not namespace.get("metadata", {}).get("deletionTimestamp"):
                found.add(name)
        return found

    # Events -------------------------------------------------------------------------------

    async def post_event(
        self,
        involved: Mapping[str, Any],
        namespace: str,
        type_: str,
        reason: str,
        message: str,
        now: datetime,
    ) -> None:
        stamp = format_time(now.replace(microsecond=0))
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": compute_event_name(str(involved["name"]), uuid.uuid4().hex[:16]),
                "namespace": namespace,
            },
            "involvedObject": dict(involved),
            "type": type_,
            "reason": reason,
            "message": message,
            "source": {"component": "lapse"},
            "reportingComponent": "lapse.dev/operator",
            "reportingInstance": "lapse-operator",
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        await self._call("POST", f"/api/v1/namespaces/{namespace}/events", body=event)

    async def delete_events_about(self, namespace: str, uid: str) -> None:
        """Every Event in `namespace` about the object with `uid`, in one request."""
        await self._call(
            "DELETE",
            f"/api/v1/namespaces/{namespace}/events",
            params={"fieldSelector": f"involvedObject.uid={uid}"},
        )

    # The operator's own objects in its namespace ------------------------------------------

    async def get_namespaced(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A core/v1 object (`secrets`, `configmaps`) or None when it does not exist."""
        try:
            return await self._call("GET", f"/api/v1/namespaces/{namespace}/{plural}/{name}")
        except NotFoundError:
            return None

    async def create_namespaced(
        self, plural: str, namespace: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create a core/v1 object; ConflictError when it exists."""
        return await self._call("POST", f"/api/v1/namespaces/{namespace}/{plural}", body=manifest)

    async def replace_namespaced(
        self, plural: str, namespace: str, name: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Replace a core/v1 object; its resourceVersion makes this a compare-and-swap (409)."""
        path = f"/api/v1/namespaces/{namespace}/{plural}/{name}"
        return await self._call("PUT", path, body=manifest)

    # Admission webhook configurations --------------------------------------------------

    async def get_webhook_configuration(self, kind: str, name: str) -> dict[str, Any] | None:
        """A Mutating- or ValidatingWebhookConfiguration, or None when it does not exist."""
        return await self.get_path(f"{WEBHOOK_CONFIGURATIONS[kind]}/{name}")

    async def create_webhook_configuration(
        self, kind: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create one; ConflictError when it exists."""
        return await self._call("POST", WEBHOOK_CONFIGURATIONS[kind], body=manifest)

    async def replace_webhook_configuration(
        self, kind: str, name: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Replace one; its resourceVersion makes this a compare-and-swap (409)."""
        path = f"{WEBHOOK_CONFIGURATIONS[kind]}/{name}"
        return await self._call("PUT", path, body=manifest)

    # Leader election --------------------------------------------------------------------
    # No retries here: the elector has its own clock and must know at once that a call failed.

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call(
                "GET", f"{LEASES.format(namespace=namespace)}/{name}", retry=False
            )
        except NotFoundError:
            return None

    async def create_lease(self, namespace: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create the Lease; ConflictError when another replica was first."""
        return await self._call(
            "POST", LEASES.format(namespace=namespace), body=manifest, retry=False
        )

    async def replace_lease(
        self, namespace: str, name: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Replace the Lease; its resourceVersion makes this a compare-and-swap (409)."""
        path = f"{LEASES.format(namespace=namespace)}/{name}"
        return await self._call("PUT", path, body=manifest, retry=False)

    async def get_path(self, path: str) -> dict[str, Any] | None:
        """Any object by its API path, or None when it does not exist."""
        try:
            return await self._call("GET", path)
        except NotFoundError:
            return None
