"""An in-memory `lapse.kube.KubeApi`: the keepers' unit tests run the real keepers, grant
machinery and core against it, with nothing but the HTTP in between replaced.

It keeps what the API server would keep for these calls (owners, bindings, Events, ConfigMaps,
Secrets, Leases), answers with the typed errors `lapse.kube` raises, and applies status patches
as merge patches. The e2e suite proves the same paths against real API servers.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from lapse.core.bindings import compute_binding_ref
from lapse.core.grants import GrantKey
from lapse.core.models import BindingRef
from lapse.kube import ConflictError, NotFoundError, RefusedError

Key = tuple[str, str | None, str]


def merge(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch."""
    for field, value in patch.items():
        if value is None:
            target.pop(field, None)
        elif isinstance(value, Mapping) and isinstance(target.get(field), dict):
            merge(target[field], value)
        else:
            target[field] = copy.deepcopy(value)
    return target


class MemoryKube:
    def __init__(self) -> None:
        self.owners: dict[Key, dict[str, Any]] = {}
        self.bindings: dict[Key, dict[str, Any]] = {}
        self.objects: dict[Key, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.namespaces: dict[str, dict[str, str]] = {}
        self.roles: set[tuple[str, str | None, str]] = {("ClusterRole", None, "edit")}

    # Test set-up ----------------------------------------------------------------------------

    def add_owner(self, body: dict[str, Any]) -> dict[str, Any]:
        metadata = body["metadata"]
        metadata.setdefault("uid", str(uuid.uuid4()))
        metadata.setdefault("generation", 1)
        self.owners[(body["kind"], metadata.get("namespace"), metadata["name"])] = body
        return body

    def owner(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        return self.owners[(kind, namespace, name)]

    def reasons(self, name: str) -> list[str]:
        return [e["reason"] for e in self.events if e["involvedObject"]["name"] == name]

    # KubeApi -------------------------------------------------------------------------------

    async def close(self) -> None:
        return None

    async def create_binding(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        binding = copy.deepcopy(dict(manifest))
        metadata = binding["metadata"]
        key = (binding["kind"], metadata.get("namespace"), metadata["name"])
        if key in self.bindings:
            raise ConflictError(409, "AlreadyExists", f"{metadata['name']} already exists")
        metadata["uid"] = str(uuid.uuid4())
        self.bindings[key] = binding
        return copy.deepcopy(binding)

    async def role_exists(self, kind: str, name: str, namespace: str | None) -> bool | None:
        return (kind, namespace if kind == "Role" else None, name) in self.roles

    async def get_binding(self, ref: BindingRef) -> dict[str, Any] | None:
        found = self.bindings.get((ref.kind, ref.namespace, ref.name))
        return copy.deepcopy(found) if found else None

    async def delete_binding(self, ref: BindingRef) -> bool:
        key = (ref.kind, ref.namespace, ref.name)
        found = self.bindings.get(key)
        if found is None or (ref.uid and found["metadata"]["uid"] != ref.uid):
            return False
        del self.bindings[key]
        return True

    async def warm_revocations(self, connections: int) -> int:
        return connections

    async def patch_binding(self, ref: BindingRef, patch: Mapping[str, Any]) -> dict[str, Any]:
        found = self.bindings.get((ref.kind, ref.namespace, ref.name))
        if found is None:
            raise NotFoundError(404, "NotFound", f"{ref.name} not found")
        return copy.deepcopy(merge(found, patch))

    async def list_bindings(self, selector: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(b) for b in self.bindings.values()]

    async def binding_metadata_pages(self, selector: str) -> AsyncIterator[list[dict[str, Any]]]:
        yield [
            {"kind": b["kind"], "metadata": copy.deepcopy(b["metadata"])}
            for b in self.bindings.values()
        ]

    async def owner_pages(
        self, kind: str, versions: list[str] | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        if versions is not None:
            versions.append("1")
        yield [copy.deepcopy(o) for (k, _, _), o in self.owners.items() if k == kind]

    async def get_owner(self, key: GrantKey, *, revoking: bool = False) -> dict[str, Any] | None:
        found = self.owners.get((key.kind, key.namespace, key.name))
        return copy.deepcopy(found) if found else None

    async def get_policy(self, name: str) -> dict[str, Any] | None:
        found = self.owners.get(("AccessPolicy", None, name))
        return copy.deepcopy(found) if found else None

    async def list_owners(self, kind: str) -> list[dict[str, Any]] | None:
        return [copy.deepcopy(o) for (k, _, _), o in self.owners.items() if k == kind]

    async def patch_status(self, key: GrantKey, patch: Mapping[str, Any]) -> dict[str, Any]:
        found = self.owners.get((key.kind, key.namespace, key.name))
        if found is None or found["metadata"]["uid"] != key.uid:
            raise NotFoundError(404, "NotFound", f"{key.name} not found")
        return copy.deepcopy(merge(found, {"status": patch.get("status") or {}}))

    async def json_patch_status(
        self, key: GrantKey, operations: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """The two operations the foothold record uses: a resourceVersion test, then `add`."""
        found = self.owners.get((key.kind, key.namespace, key.name))
        if found is None:
            raise NotFoundError(404, "NotFound", f"{key.name} not found")
        for op in operations:
            failed = found["metadata"].get("uid") != op.get("value")
            if op["op"] == "test" and op["path"] == "/metadata/uid" and failed:
                raise RefusedError(422, "Invalid", "the uid test failed")
        status = found.setdefault("status", {})
        for op in operations:
            if op["op"] == "add" and op["path"].startswith("/status/"):
                status[op["path"].removeprefix("/status/")] = copy.deepcopy(op["value"])
        return copy.deepcopy(found)

    async def json_patch_owner(
        self, key: GrantKey, operations: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """The finalizer removal the uninstall uses: a `test` of one entry, then `remove`."""
        found = self.owners.get((key.kind, key.namespace, key.name))
        if found is None:
            raise NotFoundError(404, "NotFound", f"{key.name} not found")
        finalizers = found["metadata"].setdefault("finalizers", [])
        for op in operations:
            index = int(op["path"].rsplit("/", 1)[1])
            if op["op"] == "test" and finalizers[index : index + 1] != [op["value"]]:
                raise RefusedError(422, "Invalid", "the finalizer test failed")
            if op["op"] == "remove":
                del finalizers[index]
        return copy.deepcopy(found)

    async def get_namespace(self, name: str) -> dict[str, Any] | None:
        return await self.get_namespaced("namespaces", "", name)

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get_namespaced("deployments", namespace, name)

    async def delete_object(self, path: str, *, uid: str, grace_seconds: int | None = None) -> None:
        raise NotFoundError(404, "NotFound", f"{path} not found")

    async def delete_events_about(self, namespace: str, uid: str) -> None:
        return None

    async def get_role_rules(
        self, kind: str, name: str, namespace: str | None
    ) -> list[dict[str, Any]] | None:
        """The roles set up exist with one rule: read pods."""
        if (kind, namespace if kind == "Role" else None, name) not in self.roles:
            return None
        return [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]

    async def create_access_review(self, review: Mapping[str, Any]) -> dict[str, Any]:
        """Nobody holds anything here once Lapse's bindings are gone."""
        return {**review, "status": {"allowed": False}}

    async def get_namespace_labels(self, name: str) -> dict[str, str]:
        return dict(self.namespaces.get(name, {}))

    async def existing_namespaces(self, names: list[str]) -> set[str]:
        return {n for n in names if n in self.namespaces}

    async def post_event(
        self,
        involved: Mapping[str, Any],
        namespace: str,
        type_: str,
        reason: str,
        message: str,
        now: datetime,
    ) -> None:
        self.events.append(
            {
                "involvedObject": dict(involved),
                "namespace": namespace,
                "type": type_,
                "reason": reason,
                "message": message,
            }
        )

    async def get_namespaced(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((plural, namespace, name))
        return copy.deepcopy(found) if found else None

    async def create_namespaced(
        self, plural: str, namespace: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any]:
        key = (plural, namespace, manifest["metadata"]["name"])
        if key in self.objects:
            raise ConflictError(409, "AlreadyExists", "exists")
        self.objects[key] = {**copy.deepcopy(dict(manifest))}
        self.objects[key]["metadata"]["resourceVersion"] = "1"
        return copy.deepcopy(self.objects[key])

    async def replace_namespaced(
        self, plural: str, namespace: str, name: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any]:
        key = (plural, namespace, name)
        current = self.objects.get(key)
        if current is None:
            raise NotFoundError(404, "NotFound", f"{name} not found")
        if manifest["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ConflictError(409, "Conflict", "the object has been modified")
        replaced = copy.deepcopy(dict(manifest))
        replaced["metadata"]["resourceVersion"] = str(
            int(current["metadata"]["resourceVersion"]) + 1
        )
        self.objects[key] = replaced
        return copy.deepcopy(replaced)

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get_namespaced("leases", namespace, name)

    async def create_lease(self, namespace: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
        return await self.create_namespaced("leases", namespace, manifest)

    async def replace_lease(
        self, namespace: str, name: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self.replace_namespaced("leases", namespace, name, manifest)

    async def get_path(self, path: str) -> dict[str, Any] | None:
        return None

    async def watch_owners(
        self, kind: str, version: str
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """No changes: the keepers' tests observe what they change themselves."""
        for event in ():
            yield event

    async def pages(
        self, path: str, versions: list[str] | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Nothing listed by path: RBAC is not kept here."""
        if versions is not None:
            versions.append("1")
        yield []

    async def watch(self, path: str, version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        for event in ():
            yield event

    async def get_webhook_configuration(self, kind: str, name: str) -> dict[str, Any] | None:
        return await self.get_namespaced(kind, None, name)  # type: ignore[arg-type]

    async def create_webhook_configuration(
        self, kind: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self.create_namespaced(kind, None, manifest)  # type: ignore[arg-type]

    async def replace_webhook_configuration(
        self, kind: str, name: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self.replace_namespaced(kind, None, name, manifest)  # type: ignore[arg-type]

    # What tests look at -------------------------------------------------------------------

    def binding_refs(self) -> list[BindingRef]:
        return [compute_binding_ref(b) for b in self.bindings.values()]
