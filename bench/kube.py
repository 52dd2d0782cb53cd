"""A small async Kubernetes client for the benchmark, on aiohttp.

The benchmark creates thousands of objects and follows them with a watch; the synchronous
`kubernetes` client would spend a thread per call and parse every event into models, which
would make the measuring side slower than the side being measured.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from bench.cluster import Credentials

FIELD_MANAGER = "lapse-bench"


class ApiError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text[:500]}")
        self.status = status
        self.text = text


def collection_path(manifest: Mapping[str, Any]) -> str:
    """The REST collection a manifest is created in (the kinds the benchmark uses)."""
    api_version = str(manifest["apiVersion"])
    kind = str(manifest["kind"])
    namespace = (manifest.get("metadata") or {}).get("namespace")
    plural = {
        "Namespace": "namespaces",
        "CustomResourceDefinition": "customresourcedefinitions",
        "ClusterRole": "clusterroles",
        "ClusterRoleBinding": "clusterrolebindings",
        "RoleBinding": "rolebindings",
        "AccessPolicy": "accesspolicies",
        "AccessRequest": "accessrequests",
        "ConfigMap": "configmaps",
        "Secret": "secrets",
        "Pod": "pods",
        "ServiceAccount": "serviceaccounts",
    }[kind]
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{namespace}"
    return f"{base}/{plural}"


class Kube:
    """Admin access to the API; `as_user`/`as_groups` act as someone else (impersonation)."""

    def __init__(self, credentials: Credentials, connections: int = 64) -> None:
        self.credentials = credentials
        connector = aiohttp.TCPConnector(ssl=credentials.ssl_context(), limit=connections)
        self.session = aiohttp.ClientSession(
            connector=connector,
            headers={
                **credentials.headers(),
                "Accept": "application/json",
                "User-Agent": "lapse-bench",
            },
            timeout=aiohttp.ClientTimeout(total=120),
        )

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
        as_user: str | None = None,
        as_groups: tuple[str, ...] = (),
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers: list[tuple[str, str]] = []
        if body is not None:
            headers.append(("Content-Type", content_type))
        if as_user is not None:
            headers.append(("Impersonate-User", as_user))
            headers.extend(("Impersonate-Group", group) for group in as_groups)
        data = json.dumps(body) if body is not None else None
        async with self.session.request(
            method,
            self.credentials.server + path,
            data=data,
            params=params,
            headers=headers,
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise ApiError(response.status, text)
            return dict(json.loads(text)) if text else {}

    async def create(
        self,
        manifest: Mapping[str, Any],
        *,
        as_user: str | None = None,
        as_groups: tuple[str, ...] = (),
        exist_ok: bool = False,
    ) -> dict[str, Any]:
        try:
            return await self.call(
                "POST", collection_path(manifest), manifest, as_user=as_user, as_groups=as_groups
            )
        except ApiError as error:
            if exist_ok and error.status == 409:
                return {}
            raise

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply as the benchmark's field manager, taking over conflicting fields:
        what an earlier version of the benchmark (or Lapse) installed is brought up to date."""
        path = f"{collection_path(manifest)}/{manifest['metadata']['name']}"
        return await self.call(
            "PATCH",
            path,
            manifest,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content_type="application/apply-patch+yaml",
        )

    async def delete(self, path: str) -> bool:
        """DELETE; False when it was already gone."""
        try:
            await self.call("DELETE", path)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def wait_established(self, crd_name: str, within: float = 30) -> None:
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd_name}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            crd = await self.call("GET", path)
            conditions = (crd.get("status") or {}).get("conditions") or []
            wanted = ("Established", "True")
            if any((c.get("type"), c.get("status")) == wanted for c in conditions):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"CRD {crd_name} was not established within {within}s")

    async def stream(
        self, path: str, params: Mapping[str, str]
    ) -> AsyncIterator[tuple[float, dict[str, Any]]]:
        """The events of one watch connection, each with the wall-clock time its line arrived."""
        async with self.session.get(
            self.credentials.server + path,
            params={**params, "watch": "1"},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as response:
            if response.status >= 400:
                raise ApiError(response.status, await response.text())
            buffer = b""
            async for chunk in response.content.iter_any():
                # Stamp on arrival, before parsing: parsing is the watcher's cost, not Lapse's.
                arrived = time.time()
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield arrived, json.loads(line)
