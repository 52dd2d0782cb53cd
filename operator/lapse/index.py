"""Active grants in memory: by grantee, by the role they bind, and by what their holders made.

The foothold webhook answers every create of pods, Secrets and tokens in the cluster from
here, and the role watch looks up the grants a changed role affects. kopf's own indexes would
hold the same, but kopf makes each object of an indexed kind wait for every other one's first
indexing, waking all the waiting ones for each: at start-up with twenty thousand requests that
is hundreds of millions of wake-ups, minutes in which no deadline is kept. Here the index is
filled by one paged listing before kopf starts watching (and before the webhooks serve), then
kept current from kopf's raw events on the owners.

Only active grants are held; an owner whose grant ended, or that is gone, holds nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

from lapse.core.footholds import GranteeGrant, build_foothold_uids, build_grantee_grant
from lapse.core.grants import GrantKey
from lapse.core.kinds import ACCESS_REQUEST, BREAK_GLASS
from lapse.core.models import RiskSummary
from lapse.core.risk import build_role_index_entry
from lapse.kube import KubeApi, NotFoundError

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


class GrantIndex:
    def __init__(self) -> None:
        self._grantees: _MultiMap[GranteeGrant] = _MultiMap()
        self._footholds: _MultiMap[GrantKey] = _MultiMap()
        self._roles: _MultiMap[RoleEntry] = _MultiMap()
        # Grants of one role to like subjects carry equal summaries, dozens of phrases each:
        # held once, ten thousand grants cost kilobytes here, not tens of megabytes.
        self._summaries: dict[tuple[Any, ...], RiskSummary] = {}

    def _shared(self, risk: RiskSummary) -> RiskSummary:
        if len(self._summaries) > MAX_SUMMARIES:
            self._summaries.clear()
        found = (tuple(risk.capabilities), tuple(risk.adds), tuple(risk.already_had), risk.summary)
        return self._summaries.setdefault(found, risk)

    def observe(self, kind: str, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """One owner as the API server holds it now (`deleted`: it is gone)."""
        owner = f"{kind}/{(body.get('metadata') or {}).get('uid') or ''}"
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
                async for page in kube.owner_pages(kind):
                    for index, body in enumerate(page):
                        if index % YIELD_EVERY == YIELD_EVERY - 1:
                            await asyncio.sleep(0)
                        self.observe(kind, body)
            except NotFoundError:
                continue  # the kind is not served (its CRD is not installed)
        return len(self._grantees)

    def grantees(self, keys: Iterable[str]) -> list[GranteeGrant]:
        """The active grants whose subject is any of `keys` (see compute_caller_keys)."""
        return [grant for key in keys for grant in self._grantees.get(key)]

    def made_by(self, uid: str) -> list[GrantKey]:
        """The active grants whose holders made the object `uid`."""
        return self._footholds.get(uid)

    def binding(self, role_key: str) -> list[RoleEntry]:
        """The active grants of the role `role_key` (see role_index_key), with their summary."""
        return self._roles.get(role_key)
