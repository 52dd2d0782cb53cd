"""Role drift: Roles and ClusterRoles are watched (read-only) while grants bind them.

kopf's raw events (`on.event`) keep no state on the roles: Lapse never writes to a role it
does not own. Each change is looked up in an index of active grants by the role they bind,
so a change to a role no grant binds costs a dictionary lookup.
"""

from __future__ import annotations

from typing import Any

import kopf

from lapse.core.bindings import RBAC_GROUP
from lapse.core.grants import GrantKey
from lapse.core.kinds import ACCESS_REQUEST, BREAK_GLASS
from lapse.core.models import AccessPolicy, RiskSummary
from lapse.core.risk import build_role_index_entry, role_index_key
from lapse.handlers.bodies import plain, policies_of
from lapse.handlers.leading import leading, services_of

Entry = tuple[GrantKey, RiskSummary]


@kopf.index(*ACCESS_REQUEST.resource)
async def lapse_request_roles(body: kopf.Body, **_: Any) -> dict[str, Entry] | None:
    return build_role_index_entry(ACCESS_REQUEST.kind, plain(body))


@kopf.index(*BREAK_GLASS.resource)
async def lapse_breakglass_roles(body: kopf.Body, **_: Any) -> dict[str, Entry] | None:
    return build_role_index_entry(BREAK_GLASS.kind, plain(body))


async def _changed(
    kind: str,
    type: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    indexes: tuple[kopf.Index[str, Entry] | None, ...],
    policies: kopf.Index[str, AccessPolicy] | None,
) -> None:
    metadata = body.get("metadata") or {}
    name, namespace = str(metadata.get("name") or ""), metadata.get("namespace")
    key = role_index_key(kind, name, namespace)
    grants = [entry for index in indexes if index is not None for entry in index.get(key, [])]
    if not grants:
        return
    rules = None if type == "DELETED" else list(plain(body).get("rules") or [])
    by_name = {p.metadata.name: p for p in policies_of(policies)}
    await services_of(memo).drift.role_changed(f"{kind} {name}", grants, rules, by_name)


@kopf.on.event(RBAC_GROUP, "v1", "clusterroles")
@leading
async def clusterrole_changed(
    type: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    lapse_request_roles: kopf.Index[str, Entry] | None = None,
    lapse_breakglass_roles: kopf.Index[str, Entry] | None = None,
    lapse_policies: kopf.Index[str, AccessPolicy] | None = None,
    **_: Any,
) -> None:
    indexes = (lapse_request_roles, lapse_breakglass_roles)
    await _changed("ClusterRole", type, body, memo, indexes, lapse_policies)


@kopf.on.event(RBAC_GROUP, "v1", "roles")
@leading
async def role_changed(
    type: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    lapse_request_roles: kopf.Index[str, Entry] | None = None,
    lapse_policies: kopf.Index[str, AccessPolicy] | None = None,
    **_: Any,
) -> None:
    await _changed("Role", type, body, memo, (lapse_request_roles,), lapse_policies)
