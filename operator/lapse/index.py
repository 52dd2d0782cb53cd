"""Active grants in memory: by grantee, by the role they bind, and by what their holders made.

The foothold webhook answers every create of pods, Secrets and tokens in the cluster from
here, and the role watch looks up the grants a changed role affects. kopf's own indexes would
hold the same, but kopf makes each object of an indexed kind wait for every other one's first
indexing, waking all the waiting ones for each: at start-up with twenty thousand requests that
is hundreds of millions of wake-ups, minutes in which no deadline is kept. Here the index is
filled by one paged listing before kopf starts watching (and before the webhooks serve), then
kept current by a watch of its own from that listing on, on every replica. Not from kopf's
events: on a standby kopf's per-object worker waits in the handlers that write until the
replica leads, so a grant made after a standby started would never reach its index — and the
API server sends a standby its share of the foothold webhook's calls.

Only active grants are held; an owner whose grant ended, or that is gone, holds nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import aiohttp

from lapse.core.footholds import GranteeGrant, build_foothold_uids, build_grantee_grant
from lapse.core.grants import GrantKey
from lapse.core.kinds import ACCESS_REQUEST, BREAK_GLASS
from lapse.core.models import RiskSummary
from lapse.core.risk import build_role_index_entry
from lapse.kube import ApiError, GoneError, KubeApi, NotFoundError

logger = logging.getLogger(__name__)

V = TypeVar("V")
RoleEntry = tuple[GrantKey, RiskSummary]
KINDS = (ACCESS_REQUEST.kind, BREAK_GLASS.kind)
# Owners parsed between yields while loading: the listing must not stall the event loop.
YIELD_EVERY = 256
MAX_SUMMARIES = 4096


class _MultiMap(Generic[V]):
    """key -> the values of every owner that files one under it, replaced owner by owner."""

    def __init__(self) -> None:
        self._by_key: dict[str, dict[str, V]] = {}
        self._keys_of: dict[str, tuple[str, ...]] = {}

    def put(self, owner: str, entries: Mapping[str, V] | None) -> None:
        self.drop(owner)
        if not entries:
            return
        for key, value in entries.items():
            self._by_key.setdefault(key, {})[owner] = value
        self._keys_of[owner] = tuple(entries)

    def drop(self, owner: str) -> None:
        for key in self._keys_of.pop(owner, ()):
            values = self._by_key[key]
            values.pop(owner, None)
            if not values:
                del self._by_key[key]

    def get(self, key: str) -> list[V]:
        return list(self._by_key.get(key, {}).values())

    def __len__(self) -> int:
        return len(self._keys_of)

    def retain(self, prefix: str, kept: set[str]) -> None:
        """Drop the owners under `prefix` that are not in `kept`."""
        for owner in [o for o in self._keys_of if o.startswith(prefix) and o not in kept]:
            self.drop(owner)


Observer = Callable[[str, Mapping[str, Any], bool], None]


class GrantIndex:
    def __init__(self, *, also: Observer | None = None) -> None:
        # Told of every owner this index sees, active or not (the exporter and retention):
        # one listing and one watch for all of them.
        self._also = also
        self._grantees: _MultiMap[GranteeGrant] = _MultiMap()
        self._footholds: _MultiMap[GrantKey] = _MultiMap()
        self._roles: _MultiMap[RoleEntry] = _MultiMap()
        # Grants of one role to like subjects carry equal summaries, dozens of phrases each:
        # held once, ten thousand grants cost kilobytes here, not tens of megabytes.
        self._summaries: dict[tuple[Any, ...], RiskSummary] = {}
        # Where each kind's watch resumes: the resourceVersion of its listing, then of the
        # last event seen.
        self._versions: dict[str, str] = {}

    def _shared(self, risk: RiskSummary) -> RiskSummary:
        if len(self._summaries) > MAX_SUMMARIES:
            self._summaries.clear()
        found = (tuple(risk.capabilities), tuple(risk.adds), tuple(risk.already_had), risk.summary)
        return self._summaries.setdefault(found, risk)

    def observe(self, kind: str, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """One owner as the API server holds it now (`deleted`: it is gone)."""
        owner = f"{kind}/{(body.get('metadata') or {}).get('uid') or ''}"
        if self._also is not None:
            self._also(kind, body, deleted)
        if deleted:
            for each in (self._grantees, self._footholds, self._roles):
                each.drop(owner)
            return
        grantee = build_grantee_grant(kind, body)
        self._grantees.put(owner, dict([grantee]) if grantee is not None else None)
        self._footholds.put(owner, build_foothold_uids(kind, body))
        roles = build_role_index_entry(kind, body) or {}
        self._roles.put(owner, {at: (key, self._shared(risk)) for at, (key, risk) in roles.items()})

    async def load(self, kube: KubeApi) -> int:
        """Every owner, page by page; returns how many active grants are held."""
        for kind in KINDS:
            try:
                await self._list(kube, kind)
            except NotFoundError:
                continue  # the kind is not served (its CRD is not installed)
        return len(self._grantees)

    async def _list(self, kube: KubeApi, kind: str) -> None:
        """Every owner of `kind` as it is now, and none that is gone; where to watch from."""
        versions: list[str] = []
        seen: set[str] = set()
        async for page in kube.owner_pages(kind, versions):
            for index, body in enumerate(page):
                if index % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)
                self.observe(kind, body)
                seen.add(f"{kind}/{(body.get('metadata') or {}).get('uid') or ''}")
        for each in (self._grantees, self._footholds, self._roles):
            each.retain(f"{kind}/", seen)
        if versions and versions[0]:
            self._versions[kind] = versions[0]

    async def follow(self, kube: KubeApi, kind: str) -> None:
        """Keep `kind`'s owners current from then on: watch, resume where the last event left
        off, list again when that is too old (or the kind was not served yet)."""
        while True:
            try:
                if kind not in self._versions:
                    await self._list(kube, kind)
                async for type_, body in kube.watch_owners(kind, self._versions[kind]):
                    version = (body.get("metadata") or {}).get("resourceVersion")
                    if version:
                        self._versions[kind] = str(version)
                    if type_ in ("ADDED", "MODIFIED", "DELETED"):
                        self.observe(kind, body, deleted=type_ == "DELETED")
            except (GoneError, NotFoundError):
                self._versions.pop(kind, None)
                await asyncio.sleep(1)
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
                logger.warning("The watch of %s for the grant index failed: %s", kind, error)
                await asyncio.sleep(1)

    def grantees(self, keys: Iterable[str]) -> list[GranteeGrant]:
        """The active grants whose subject is any of `keys` (see compute_caller_keys)."""
        return [grant for key in keys for grant in self._grantees.get(key)]

    def made_by(self, uid: str) -> list[GrantKey]:
        """The active grants whose holders made the object `uid`."""
        return self._footholds.get(uid)

    def binding(self, role_key: str) -> list[RoleEntry]:
        """The active grants of the role `role_key` (see role_index_key), with their summary."""
        return self._roles.get(role_key)
