"""The cluster's RBAC in memory, on every replica: what approvals and footholds are judged by.

Who can act as a trusted applier or an approver, and what a pod's ServiceAccount can do beyond
a grant, are questions about every Role, ClusterRole and binding in the cluster, asked on each
decision and on each exec by a grantee. Asking the API server each time would be a dozen lists;
here the four kinds are listed once at start-up and then kept current by watches of their own
(as lapse.index does for grants, and for the same reason: a standby answers webhooks too).

`snapshot()` is the view at one moment. It is rebuilt only after a change, so callers may ask
for it freely; `version` counts the changes, for those that cache what they derive from it.
`ready` is set once all four kinds were listed: until then nothing may be decided from it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiohttp

from lapse.core.rbac import (
    RBAC_GROUP,
    Actor,
    BindingRecord,
    Holding,
    Holdings,
    RoleRecord,
    Snapshot,
    build_held,
    parse_binding,
    parse_role,
    role_key,
)
from lapse.kube import ApiError, GoneError, KubeApi

logger = logging.getLogger(__name__)

# Hears one object of a kind after the index took it in: (kind, event type or None, object).
Listener = Callable[[str, str | None, Mapping[str, Any]], None]

PLURALS = {
    "Role": "roles",
    "ClusterRole": "clusterroles",
    "RoleBinding": "rolebindings",
    "ClusterRoleBinding": "clusterrolebindings",
}


class Roles(Protocol):
    """Where the rules of a role are known without asking the API server (lapse.rbac)."""

    def role_rules(
        self, kind: str, name: str, namespace: str | None
    ) -> list[dict[str, Any]] | None: ...


class NoRoles:
    def role_rules(
        self, kind: str, name: str, namespace: str | None
    ) -> list[dict[str, Any]] | None:
        return None


class RbacIndex:
    def __init__(self) -> None:
        self._roles: dict[str, RoleRecord] = {}
        self._raw: dict[str, list[dict[str, Any]]] = {}
        self._role_keys: dict[str, str] = {}
        self._bindings: dict[str, BindingRecord] = {}
        self._versions: dict[str, str] = {}
        self._snapshot = Snapshot(self._roles, self._bindings.values())
        # Every subject's rules, kept binding by binding: ten thousand grants arriving one by
        # one must not each cost a pass over all the others. A role that changes (rarely)
        # makes the next reader rebuild it all.
        self._given: dict[str, list[tuple[Actor, Holding]]] = {}
        self._by_actor: dict[Actor, dict[str, Holding]] = {}
        self._holdings: dict[Actor, list[Holding]] = {}
        self._stale = False
        self.version = 0
        self.ready = asyncio.Event()
        self._listed: set[str] = set()

    def observe(self, kind: str, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """One object as the API server holds it now (`deleted`: it is gone)."""
        uid = str((body.get("metadata") or {}).get("uid") or "")
        owner = f"{kind}/{uid}"
        if kind in ("Role", "ClusterRole"):
            previous = self._role_keys.pop(owner, None)
            if previous is not None:
                self._roles.pop(previous, None)
                self._raw.pop(previous, None)
            if not deleted:
                role = parse_role(kind, body)
                key = role_key(kind, role.name, role.namespace)
                self._roles[key] = role
                self._role_keys[owner] = key
                # Grants read their role's rules from here rather than the API server.
                self._raw[key] = [
                    dict(r) for r in body.get("rules") or () if isinstance(r, Mapping)
                ]
            self._stale = True
        else:
            self._forget(owner)
            if deleted:
                self._bindings.pop(owner, None)
            else:
                binding = parse_binding(kind, body)
                self._bindings[owner] = binding
                self._give(owner, binding)
        self.version += 1

    def _forget(self, owner: str) -> None:
        for actor, _ in self._given.pop(owner, ()):
            held = self._by_actor.get(actor, {})
            held.pop(owner, None)
            if held:
                self._holdings[actor] = list(held.values())
            else:
                self._by_actor.pop(actor, None)
                self._holdings.pop(actor, None)

    def _give(self, owner: str, binding: BindingRecord) -> None:
        given = build_held(self._snapshot, binding)
        self._given[owner] = given
        for actor, holding in given:
            self._by_actor.setdefault(actor, {})[owner] = holding
            self._holdings.setdefault(actor, []).append(holding)

    def role_rules(
        self, kind: str, name: str, namespace: str | None
    ) -> list[dict[str, Any]] | None:
        """The rules of a Role or ClusterRole as the API server last sent them, or None when
        it is not known here (not listed yet, or not there: the caller asks the API server)."""
        if not self.ready.is_set():
            return None
        return self._raw.get(role_key(kind, name, namespace))

    def snapshot(self) -> Snapshot:
        """The roles and bindings as they are now (a live view: do not keep it across awaits
        and expect it unchanged)."""
        return self._snapshot

    def holdings(self) -> Holdings:
        """Every subject's rules (see compute_holdings), as they are now."""
        if self._stale:
            self._stale = False
            self._given.clear()
            self._by_actor.clear()
            self._holdings.clear()
            for owner, binding in self._bindings.items():
                self._give(owner, binding)
        return self._holdings

    async def load(self, kube: KubeApi) -> None:
        """All four kinds, listed; `ready` once each was."""
        for kind in PLURALS:
            await self._list(kube, kind)

    async def _list(self, kube: KubeApi, kind: str, also: Listener | None = None) -> None:
        versions: list[str] = []
        seen: set[str] = set()
        async for page in kube.pages(f"/apis/{RBAC_GROUP}/v1/{PLURALS[kind]}", versions):
            for body in page:
                self.observe(kind, body)
                if also is not None:
                    _tell(also, kind, None, body)
                seen.add(f"{kind}/{(body.get('metadata') or {}).get('uid') or ''}")
        for owner in [o for o in (*self._role_keys, *self._bindings) if o.startswith(f"{kind}/")]:
            if owner not in seen:
                self.observe(kind, {"metadata": {"uid": owner.split("/", 1)[1]}}, deleted=True)
        if versions and versions[0]:
            self._versions[kind] = versions[0]
        self._listed.add(kind)
        if len(self._listed) == len(PLURALS):
            self.ready.set()

    async def follow(self, kube: KubeApi, kind: str, *, also: Listener | None = None) -> None:
        """Keep `kind` current: watch, resume where the last event left off, list again when
        that is too old. `also` hears each change after the index took it in (and, after a
        listing again, every object listed, as type None: what happened in between is lost)."""
        path = f"/apis/{RBAC_GROUP}/v1/{PLURALS[kind]}"
        while True:
            try:
                if kind not in self._versions:
                    await self._list(kube, kind, also)
                async for type_, body in kube.watch(path, self._versions[kind]):
                    version = (body.get("metadata") or {}).get("resourceVersion")
                    if version:
                        self._versions[kind] = str(version)
                    if type_ in ("ADDED", "MODIFIED", "DELETED"):
                        self.observe(kind, body, deleted=type_ == "DELETED")
                        if also is not None:
                            _tell(also, kind, type_, body)
            except GoneError:
                self._versions.pop(kind, None)
                await asyncio.sleep(1)
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
                logger.warning("The watch of %s for the RBAC index failed: %s", kind, error)
                await asyncio.sleep(1)


def _tell(also: Listener, kind: str, type_: str | None, body: Mapping[str, Any]) -> None:
    # A listener's failure is its own: the index, and the decisions made from it, go on.
    try:
        also(kind, type_, body)
    except Exception:
        logger.exception("A listener of the %s watch failed", kind)
