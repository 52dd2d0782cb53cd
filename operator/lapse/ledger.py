"""The GitOps ledger: each approval by a trusted applier is consumed once.

A GitOps request is approved by being created by the GitOps controller. Deleting it and letting
the controller create it again — or a resync after someone deleted it — must not grant a second
time, so the first grant records a hash of namespace, name, commit and spec in a ConfigMap in
Lapse's namespace, written with compare-and-swap. A ConfigMap rather than the request itself,
because the request is exactly what gets deleted; rather than memory, because a restart must
not forget.
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime, timedelta
from typing import Any

from lapse.core.approvals import compute_ledger_prune
from lapse.core.bindings import format_time
from lapse.kube import ConflictError, KubeApi

CONFIGMAP_NAME = "lapse-gitops-ledger"
ATTEMPTS = 5


class GitOpsLedger:
    def __init__(self, kube: KubeApi, namespace: str, retention: timedelta) -> None:
        self.kube = kube
        self.namespace = namespace
        self.retention = retention

    async def consume(self, key: str, what: str, now: datetime) -> bool:
        """Record approval `key` as used; False if it already was (then nothing is granted)."""
        for _ in range(ATTEMPTS):
            current = await self.kube.get_namespaced("configmaps", self.namespace, CONFIGMAP_NAME)
            entry = json.dumps({"consumedAt": format_time(now), "object": what})
            try:
                if current is None:
                    await self.kube.create_namespaced(
                        "configmaps", self.namespace, self._manifest({key: entry}, None)
                    )
                    return True
                data: dict[str, str] = dict(current.get("data") or {})
                if key in data:
                    await self._renew(data, key, current, now)
                    return False
                for stale in compute_ledger_prune(data, now, self.retention):
                    del data[stale]
                data[key] = entry
                version = (current.get("metadata") or {}).get("resourceVersion")
                await self.kube.replace_namespaced(
                    "configmaps", self.namespace, CONFIGMAP_NAME, self._manifest(data, version)
                )
                return True
            except ConflictError:
                # Someone wrote between our read and our write: read again.
                continue
        raise RuntimeError("The GitOps ledger changed under every attempt to write it.")

    async def _renew(
        self, data: dict[str, str], key: str, current: dict[str, Any], now: datetime
    ) -> None:
        """A consumed approval replayed: remembered from now on for another `retention`.

        Retention deletes ended requests, and a GitOps controller that heals drift creates
        each one again from Git, every time; were the entry to age out meanwhile, the next
        replay would be granted. So an approval is forgotten only once nobody has replayed it
        for a whole `retention`. A failed write only shortens that; the replay is refused."""
        try:
            entry = json.loads(data[key])
            if not isinstance(entry, dict):
                entry = {}
        except ValueError:
            entry = {}
        entry["replayedAt"] = format_time(now)
        data[key] = json.dumps(entry)
        version = (current.get("metadata") or {}).get("resourceVersion")
        with contextlib.suppress(ConflictError):
            await self.kube.replace_namespaced(
                "configmaps", self.namespace, CONFIGMAP_NAME, self._manifest(data, version)
            )

    def _manifest(self, data: dict[str, str], version: str | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": CONFIGMAP_NAME,
            "namespace": self.namespace,
            "labels": {"app.kubernetes.io/name": "lapse"},
        }
        if version:
            metadata["resourceVersion"] = version
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
