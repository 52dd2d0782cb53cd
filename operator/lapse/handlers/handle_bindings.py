"""Binding watch: tampering with, or deleting, a binding Lapse manages is answered at once."""

from __future__ import annotations

from typing import Any

import kopf

from lapse.core.bindings import MANAGED_BY, MANAGED_BY_LABEL
from lapse.grantor import Grantor
from lapse.handlers.bodies import plain
from lapse.leader import leading

LABELS = {MANAGED_BY_LABEL: MANAGED_BY}


@kopf.on.event("rbac.authorization.k8s.io", "v1", "rolebindings", labels=LABELS)
@leading
async def rolebinding_changed(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    grantor: Grantor = memo.grantor
    manifest = plain(body)
    manifest.setdefault("kind", "RoleBinding")
    await grantor.binding_event(type, manifest)


@kopf.on.event("rbac.authorization.k8s.io", "v1", "clusterrolebindings", labels=LABELS)
@leading
async def clusterrolebinding_changed(
    type: str | None, body: kopf.Body, memo: Any, **_: Any
) -> None:
    grantor: Grantor = memo.grantor
    manifest = plain(body)
    manifest.setdefault("kind", "ClusterRoleBinding")
    await grantor.binding_event(type, manifest)
