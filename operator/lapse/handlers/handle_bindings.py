"""Binding watch: tampering with, or deleting, a binding Lapse manages is answered at once."""

from __future__ import annotations

from typing import Any

import kopf

from lapse.core.bindings import MANAGED_BY, MANAGED_BY_LABEL, RBAC_GROUP
from lapse.handlers.bodies import plain
from lapse.handlers.leading import leading, services_of

LABELS = {MANAGED_BY_LABEL: MANAGED_BY}


@kopf.on.event(RBAC_GROUP, "v1", "rolebindings", labels=LABELS)
@leading
async def rolebinding_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await services_of(memo).guard.binding_event(type, {"kind": "RoleBinding", **plain(body)})


@kopf.on.event(RBAC_GROUP, "v1", "clusterrolebindings", labels=LABELS)
@leading
async def clusterrolebinding_changed(
    type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    manifest = {"kind": "ClusterRoleBinding", **plain(body)}
    await services_of(memo).guard.binding_event(type, manifest)
