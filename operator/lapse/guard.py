"""The binding watch: a change to a binding Lapse manages is answered at once.

Edited subjects or expiry are put back; a binding moved to another role, or deleted by someone
else, ends its grant as Revoked (never re-created: a deletion is a decision); a copy made with
Lapse's labels is removed, and a look-alike that only carries them is left alone with a
warning on the object it names.

The bindings' events come from the RBAC index's own watch of every binding (lapse.rbac), not
from a watch of kopf's: in an expiry wave thousands of DELETED events a second are Lapse's own,
and each is settled here with a set lookup rather than a kopf worker, a body wrapper and a task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from lapse import metrics
from lapse.core.bindings import (
    MANAGED_BY,
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
from lapse.kube import ApiError, ConflictError, NotFoundError

logger = logging.getLogger(__name__)

# Bindings answered at once (each may read an owner and write); and tries of one answer.
WORKERS = 16
ATTEMPTS = 3
# How long a binding Lapse does not know yet may be its own create still returning.
SETTLE_SECONDS = 0.25


class BindingGuard:
    def __init__(
        self,
        grantor: Grantor,
        *,
        acquired: asyncio.Event,
        ready: asyncio.Event,
        workers: int = WORKERS,
    ) -> None:
        self.grantor = grantor
        self.kube = grantor.kube
        self.reporter = grantor.reporter
        # Set while this replica holds the lease, and once its start-up sweep is done.
        self._acquired = acquired
        self._ready = ready
        # Look-alike bindings already warned about, by UID.
        self._warned: set[str] = set()
        # The latest event of each binding that needs a call, and the bindings being answered:
        # one at a time per binding, in the order the watch saw them.
        self._pending: dict[str, tuple[str | None, Mapping[str, Any]]] = {}
        self._busy: set[str] = set()
        self._slots = asyncio.Semaphore(workers)
        self._tasks: set[asyncio.Task[None]] = set()

    def observe(self, kind: str, type_: str | None, body: Mapping[str, Any]) -> None:
        """A binding as the RBAC index's watch saw it (lapse.rbac): Lapse's own creates and
        deletes are settled here, without a call or a task; anything else is answered by a
        worker once this replica leads.

        On a standby events are dropped: `Services.lead` looks at every binding once when
        this replica takes over, and its sweep ends grants whose binding went meanwhile.
        """
        metadata = body.get("metadata") or {}
        uid = str(metadata.get("uid", ""))
        labels = metadata.get("labels") or {}
        # A binding Lapse made whose labels were taken off is still Lapse's (its UID and
        # ownerReference say so): its labels are put back like its subjects.
        ours = labels.get(MANAGED_BY_LABEL) == MANAGED_BY or uid in self.grantor.desired
        if not ours or not self._acquired.is_set():
            return
        binding = {**body, "kind": kind}
        if self._triage(type_, binding):
            # Whatever was waiting for this binding is out of date: it is as it should be.
            self._pending.pop(uid, None)
            return
        self._pending[uid] = (type_, binding)
        if uid not in self._busy:
            self._busy.add(uid)
            task = asyncio.create_task(self._work(uid), name=f"lapse-guard-{uid}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _work(self, uid: str) -> None:
        try:
            await self._ready.wait()
            while (event := self._pending.pop(uid, None)) is not None:
                type_, binding = event
                if type_ != "DELETED" and uid not in self.grantor.desired:
                    # A binding Lapse creates is remembered when its create returns, which may
                    # reach this process after the watch's ADDED: give it that moment rather
                    # than read the owner. A newer event, or none needed, ends the wait.
                    await asyncio.sleep(SETTLE_SECONDS)
                    if uid in self._pending or self._triage(type_, binding):
                        continue
                async with self._slots:
                    await self._answer(uid, type_, binding)
        finally:
            self._busy.discard(uid)

    async def _answer(self, uid: str, type_: str | None, binding: Mapping[str, Any]) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await self._act(type_, binding)
                return
            except (ApiError, OSError, TimeoutError) as error:
                if uid in self._pending or attempt == ATTEMPTS:
                    # A newer event supersedes this one, or the periodic sweep takes over.
                    logger.warning("Could not answer a change of binding %s: %s", uid, error)
                    return
                await asyncio.sleep(attempt)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _triage(self, type_: str | None, binding: Mapping[str, Any]) -> bool:
        """True when the event needs no call: Lapse's own write, or nothing changed that the
        grant says. A DELETED event is consumed here (Lapse's own delete is counted off)."""
        metadata = binding.get("metadata") or {}
        uid = str(metadata.get("uid", ""))
        if self._owner(uid, binding) is None:
            labels = metadata.get("labels") or {}
            return type_ == "DELETED" or uid in self._warned or not labels.get(MANAGED_BY_LABEL)
        if type_ == "DELETED":
            return self.grantor.deletions.observed(uid)
        if self.grantor.deletions.ours(uid) or metadata.get("deletionTimestamp"):
            return True
        desired = self.grantor.desired.get(uid)
        return desired is not None and not compute_drift(binding, desired).any

    def _owner(self, uid: str, binding: Mapping[str, Any]) -> GrantKey | None:
        """The grant a binding belongs to by its marks or, with its labels taken off, by its
        UID when Lapse made it."""
        key = compute_owner_key(binding)
        desired = self.grantor.desired.get(uid)
        if key is None and desired is not None:
            key = compute_owner_key(desired)
        return key

    async def _act(self, type_: str | None, binding: Mapping[str, Any]) -> None:
        """Answer an event `_triage` did not settle."""
        metadata = binding.get("metadata") or {}
        uid = str(metadata.get("uid", ""))
        key = self._owner(uid, binding)
        if key is None:
            await self._warn_lookalike(type_, binding)
            return
        if type_ == "DELETED":
            self.grantor.desired.pop(uid, None)
            await self._binding_deleted(key, uid)
            return
        desired = self.grantor.desired.get(uid)
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
            f"{what} was edited (subjects, Lapse's labels or lapse.dev/expires-at); Lapse "
            "restored it to what the grant says."
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
