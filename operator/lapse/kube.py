"""Kubernetes I/O: the one module that talks to the API server.

A small async client over one shared aiohttp session, because each transition is a handful of
calls and the benchmark drives thousands of them: no thread pool, no redundant reads.
Credentials come from the kubeconfig or the in-cluster service account via the `kubernetes`
package's loaders, so `KUBECONFIG` and pod tokens both work.
"""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import aiohttp
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from lapse.core.bindings import RBAC_GROUP, format_time
from lapse.core.grants import GrantKey
from lapse.core.models import GROUP, VERSION, BindingRef

PLURALS = {
    "AccessRequest": "accessrequests",
    "AccessPolicy": "accesspolicies",
    "BreakGlass": "breakglasses",
}
BINDING_PLURALS = {"RoleBinding": "rolebindings", "ClusterRoleBinding": "clusterrolebindings"}
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


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
    path = f"{base}/{PLURALS[kind]}"
    return f"{path}/{name}" if name else path


def binding_path(ref: BindingRef) -> str:
    base = f"/apis/{RBAC_GROUP}/v1"
    if ref.kind == "RoleBinding":
        base += f"/namespaces/{ref.namespace}"
    return f"{base}/{BINDING_PLURALS[ref.kind]}/{ref.name}"


class KubeClient:
    def __init__(self, configuration: Any) -> None:
        self._host = configuration.host.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "lapse-operator"}
        token = configuration.get_api_key_with_prefix("authorization") or (
            configuration.api_key.get("BearerToken") if configuration.api_key else None
        )
        if token:
            headers["Authorization"] = token if " " in token else f"Bearer {token}"
        connector = aiohttp.TCPConnector(ssl=_ssl_context(configuration), limit=64)
        self._session = aiohttp.ClientSession(
            headers=headers, connector=connector, timeout=aiohttp.ClientTimeout(total=30)
        )

    @classmethod
    def connect(cls) -> KubeClient:
        return cls(load_configuration())

    async def close(self) -> None:
        await self._session.close()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self._session.request(
            method, self._host + path, data=data, params=params, headers=headers
        ) as response:
            text = await response.text()
            payload: dict[str, Any] = json.loads(text) if text else {}
            if response.status >= 400:
                raise ApiError(
                    response.status,
                    str(payload.get("reason", response.reason)),
                    str(payload.get("message", text)),
                )
            return payload

    # Bindings ---------------------------------------------------------------------------

    async def create_binding(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create a binding; ApiError 409 when the name is taken."""
        metadata = manifest["metadata"]
        ref = BindingRef(
            kind=manifest["kind"], name=metadata["name"], namespace=metadata.get("namespace")
        )
        collection = binding_path(ref).rsplit("/", 1)[0]
        return await self._call("POST", collection, body=manifest)

    async def get_binding(self, ref: BindingRef) -> dict[str, Any] | None:
        try:
            return await self._call("GET", binding_path(ref))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def delete_binding(self, ref: BindingRef) -> bool:
        """Delete the binding only if it is still the object with `ref.uid`: a binding
        re-created under the same name by someone else is never touched. True if deleted."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if ref.uid:
            body["preconditions"] = {"uid": ref.uid}
        try:
            await self._call("DELETE", binding_path(ref), body=body)
        except ApiError as error:
            if error.status in (404, 409):
                return False
            raise
        return True

    async def patch_binding(self, ref: BindingRef, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", binding_path(ref), body=patch, content_type=MERGE_PATCH)

    async def list_bindings(self, selector: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for kind, plural in BINDING_PLURALS.items():
            listing = await self._call(
                "GET", f"/apis/{RBAC_GROUP}/v1/{plural}", params={"labelSelector": selector}
            )
            for item in listing.get("items", []):
                item.setdefault("kind", kind)
                found.append(item)
        return found

    # Lapse objects ------------------------------------------------------------------------

    async def get_owner(self, key: GrantKey) -> dict[str, Any] | None:
        try:
            return await self._call("GET", owner_path(key.kind, key.namespace, key.name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def list_owners(self, kind: str) -> list[dict[str, Any]] | None:
        """Every object of `kind`, or None when the kind is not served (CRD not installed)."""
        try:
            listing = await self._call("GET", f"/apis/{GROUP}/{VERSION}/{PLURALS[kind]}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return list(listing.get("items", []))

    async def patch_status(self, key: GrantKey, patch: Mapping[str, Any]) -> dict[str, Any]:
        path = owner_path(key.kind, key.namespace, key.name) + "/status"
        return await self._call("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def get_namespace_labels(self, name: str) -> dict[str, str]:
        try:
            namespace = await self._call("GET", f"/api/v1/namespaces/{name}")
        except ApiError as error:
            if error.status == 404:
                return {}
            raise
        return dict(namespace.get("metadata", {}).get("labels") or {})

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
                "name": f"{involved['name']}.{uuid.uuid4().hex[:16]}",
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
