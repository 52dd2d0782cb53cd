"""The binding watch: a change to a binding Lapse manages is answered at once.

Edited subjects or expiry are put back; a binding moved to another role, or deleted by someone
else, ends its grant as Revoked (never re-created: a deletion is a decision); a copy made with
Lapse's labels is removed, and a look-alike that only carries them is left alone with a
warning on the object it names.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lapse import metrics
from lapse.core.bindings import (
    MANAGED_BY_LABEL,
    OWNER_KIND_LABEL,
    OWNER_NAME_LABEL,
    build_restore_patch,
    compute_binding_ref,
    compute_drift,
    compute_owner_key,
)
from lapse.core.grants import GrantKey, compute_status_grant
from lapse.core.models import Phase
from lapse.core.owners import STATUS_MODELS, parse_generation, parse_role, parse_status
from lapse.core.sweep import SweepReason, compute_sweep_reason
from lapse.grantor import Grantor
from lapse.kube import ConflictError, NotFoundError

logger = logging.getLogger(__name__)


class BindingGuard:
    def __init__(self, grantor: Grantor) -> None:
        self.grantor = grantor
        self.kube = grantor.kube
        self.reporter = grantor.reporter
        # Look-alike bindings already warned about, by UID.
        self._warned: set[str] = set()

    async def binding_event(self, type_: str | None, binding: Mapping[str, Any]) -> None:
        """React to a change of a binding labelled as Lapse's: tampering, deletion, look-alikes."""
        metadata = binding.get("metadata") or {}
        uid = str(metadata.get("uid", ""))
        key = compute_owner_key(binding)
        if key is None:
            await self._warn_lookalike(type_, binding)
            return
        if type_ == "DELETED":
            if self.grantor.deletions.observed(uid):
                return
            self.grantor.desired.pop(uid, None)
            await self._binding_deleted(key, uid)
            return
        if self.grantor.deletions.ours(uid) or metadata.get("deletionTimestamp"):
            return
        desired = self.grantor.desired.get(uid)
        body: Mapping[str, Any] | None = None
        if desired is None:
            body = await self.kube.get_owner(key)
            status = parse_status(key.kind, body) if body else None
            owners = {key.uid: status} if body and status else {}
            reason = compute_sweep_reason(binding, owners, self.grantor.clock())
            if reason is not None and reason != SweepReason.EXPIRED:
                await self.grantor.remove_binding(binding, reason, key if body else None)
                return
            role = parse_role(body) if body else None
            if status is None or status.phase != Phase.ACTIVE or role is None:
                return
            grant = compute_status_grant(key, role, status)
            if grant is None:
                return
            ref = next((r for r in status.bindings if r.uid == uid), None)
            if ref is None:
                # Not the binding the status records: a copy made with our marks.
                await self.grantor.remove_binding(binding, SweepReason.ORPHANED, key)
                return
            self.grantor.remember(grant, [ref])
            desired = self.grantor.desired[uid]
        drift = compute_drift(binding, desired)
        if not drift.any:
            return
        await self._answer_tampering(key, binding, desired, drift.role_ref)

    async def _answer_tampering(
        self,
        key: GrantKey,
        binding: Mapping[str, Any],
        desired: Mapping[str, Any],
        role_changed: bool,
    ) -> None:
        ref = compute_binding_ref(binding)
        what = f"{ref.kind} {ref.namespace + '/' if ref.namespace else ''}{ref.name}"
        if role_changed:
            # roleRef cannot be patched back; the grant no longer matches its binding.
            body = await self.kube.get_owner(key)
            if body is None:
                return
            metrics.tamper_total.labels(action="revoked").inc()
            await self.grantor.end(
                key,
                role=parse_role(body),
                status=parse_status(key.kind, body),
                phase=Phase.REVOKED,
                reason="BindingTampered",
                message=f"{what} was changed to another role; access was revoked.",
                generation=parse_generation(body),
                event_type="Warning",
            )
            return
        patch = build_restore_patch(desired, (binding.get("metadata") or {}).get("resourceVersion"))
        try:
            await self.kube.patch_binding(ref, patch)
        except (NotFoundError, ConflictError):
            # Changed again or gone meanwhile: the next event brings the newer state.
            metrics.errors_total.labels(error="conflict").inc()
            return
        metrics.tamper_total.labels(action="restored").inc()
        message = (
            f"{what} was edited (subjects or lapse.dev/expires-at); Lapse restored it to "
            "what the grant says."
        )
        await self.reporter.event(key, "Warning", "BindingTampered", message)
        body = await self.kube.get_owner(key)
        if body is not None:
            self.reporter.audit(
                "restored",
                key,
                parse_status(key.kind, body),
                parse_role(body),
                "BindingTampered",
                message,
            )

    async def _binding_deleted(self, key: GrantKey, uid: str) -> None:
        body = await self.grantor.read_owner(key)
        if body is None:
            return
        status = parse_status(key.kind, body)
        if status.phase != Phase.ACTIVE or not any(r.uid == uid for r in status.bindings):
            return
        if status.expires_at is not None and status.expires_at <= self.grantor.clock():
            await self.grantor.expire(key, status.expires_at)
            return
        metrics.tamper_total.labels(action="revoked").inc()
        await self.grantor.end(
            key,
            role=parse_role(body),
            status=status,
            phase=Phase.REVOKED,
            reason="BindingDeleted",
            message="The binding carrying this access was deleted by someone else; access ended "
            "and will not be restored.",
            generation=parse_generation(body),
            event_type="Warning",
        )

    async def _warn_lookalike(self, type_: str | None, binding: Mapping[str, Any]) -> None:
        metadata = binding.get("metadata") or {}
        uid = str(metadata.get("uid", ""))
        labels = metadata.get("labels") or {}
        if type_ == "DELETED" or uid in self._warned:
            return
        if labels.get(MANAGED_BY_LABEL) is None:
            return
        self._warned.add(uid)
        metrics.tamper_total.labels(action="ignored").inc()
        name = labels.get(OWNER_NAME_LABEL)
        kind = labels.get(OWNER_KIND_LABEL, "AccessRequest")
        ref = compute_binding_ref(binding)
        logger.warning("Ignoring look-alike %s %s/%s.", ref.kind, ref.namespace, ref.name)
        if name and kind in STATUS_MODELS:
            pretended = GrantKey(
                kind=kind,
                namespace=ref.namespace if kind == "AccessRequest" else None,
                name=name,
                uid="",
            )
            await self.reporter.event(
                pretended,
                "Warning",
                "LookAlikeBinding",
                f"{ref.kind} {ref.name} carries Lapse's labels but was not made by Lapse for "
                "this object; Lapse leaves it alone.",
            )
