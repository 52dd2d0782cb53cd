"""Role drift: Roles and ClusterRoles are watched (read-only) while grants bind them.

kopf's raw events (`on.event`) keep no state on the roles: Lapse never writes to a role it
does not own. Each change is looked up in the index of active grants by the role they bind
(lapse.index), so a change to a role no grant binds costs a dictionary lookup.
"""

from __future__ import annotations

from typing import Any

import kopf

from lapse.core.bindings import RBAC_GROUP
from lapse.core.grants import GrantKey
from lapse.core.models import RiskSummary
from lapse.core.risk import role_index_key
from lapse.handlers.bodies import plain
from lapse.handlers.leading import leading, policies_in, services_of

Entry = tuple[GrantKey, RiskSummary]


async def _changed(
    kind: str,
    type: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
) -> None:
    metadata = body.get("metadata") or {}
    name, namespace = str(metadata.get("name") or ""), metadata.get("namespace")
    services = services_of(memo)
    grants = services.index.binding(role_index_key(kind, name, namespace))
    if not grants:
        return
    rules = None if type == "DELETED" else list(plain(body).get("rules") or [])
    by_name = {p.metadata.name: p for p in await policies_in(memo)}
    await services.drift.role_changed(f"{kind} {name}", grants, rules, by_name)


@kopf.on.event(RBAC_GROUP, "v1", "clusterroles")
@leading
async def clusterrole_changed(
    type: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    await _changed("ClusterRole", type, body, memo)


@kopf.on.event(RBAC_GROUP, "v1", "roles")
@leading
async def role_changed(
    type: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    await _changed("Role", type, body, memo)
