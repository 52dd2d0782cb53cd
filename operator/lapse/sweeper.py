"""The sweep: whatever the events missed is found by looking, at start-up and then periodically.

At start-up (before any handler acts) it lists every owner and binding, so whatever lapsed
while Lapse was away goes first; afterwards it starts from the grants this process knows and
reads an owner only for a binding that looks wrong. It removes bindings past their time,
orphaned or ended, and ends grants whose binding vanished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar, cast

from lapse import metrics
from lapse.core.bindings import (
    MANAGED_SELECTOR,
    binding_expiry,
    compute_binding_ref,
    compute_owner_key,
    format_time,
)
from lapse.core.grants import GrantKey, compute_status_grant
from lapse.core.models import GrantStatus, Phase, RoleRef
from lapse.core.owners import (
    STATUS_MODELS,
    active_status,
    key_of,
    parse_generation,
    parse_role,
    parse_status,
)
from lapse.core.sweep import SweepReason, compute_sweep_reason
from lapse.grantor import Grantor
from lapse.kube import ApiError, NotFoundError

logger = logging.getLogger(__name__)

T = TypeVar("T")
# How many calls the sweep has in flight at once: after an outage thousands of grants may be
# overdue, and ending them one by one would keep access open for a minute or more.
SWEEP_CONCURRENCY = 32
# How many objects the sweep looks at between giving the event loop back.
YIELD_EVERY = 256
ACTIVE_STATUSES: dict[str, GrantStatus] = {kind: active_status(kind) for kind in STATUS_MODELS}


@dataclass(frozen=True)
class SweptOwner:
    """What the sweep keeps of an owner: enough to judge its bindings and to end it."""

    key: GrantKey
    status: GrantStatus
    role: RoleRef | None = None
    generation: int | None = None
    deleting: bool = False

    @classmethod
    def of(cls, kind: str, body: Mapping[str, Any]) -> SweptOwner:
        metadata = body.get("metadata") or {}
        return cls(
            key=key_of(kind, body),
            status=parse_status(kind, body),
            role=parse_role(body),
            generation=parse_generation(body),
            deleting=bool(metadata.get("deletionTimestamp")),
        )

    @classmethod
    def scheduled(cls, key: GrantKey, expires_at: datetime) -> SweptOwner:
        """An owner known only from the scheduler: active until `expires_at`."""
        # A copy of a ready-made status: building (even constructing) a model per grant costs
        # a millisecond each, seconds of a blocked event loop at ten thousand grants.
        status = ACTIVE_STATUSES[key.kind].model_copy(update={"expires_at": expires_at})
        return cls(key=key, status=status)


# Hears a binding of Lapse's found by its name that its labels no longer list (lapse.guard).
Unlisted = Callable[[str, str | None, Mapping[str, Any]], None]


class Sweeper:
    def __init__(self, grantor: Grantor, *, unlisted: Unlisted | None = None) -> None:
        self.grantor = grantor
        self._unlisted = unlisted
        self.kube = grantor.kube
        self.scheduler = grantor.scheduler
        # The owner kinds the API serves, as the full sweep found them.
        self._served_kinds: frozenset[str] = frozenset(STATUS_MODELS)

    async def remove_overdue(self) -> list[Mapping[str, Any]]:
        """Delete every managed binding whose own expiry has passed, reading nothing else, and
        have every other one deleted at its own expiry (Deadlines.expire_binding).

        After an outage this ends overdue access before the full sweep lists every owner (a
        parse per owner, seconds at ten thousand grants): deleting a binding past its own
        expiry only ever takes access away, and each is deleted by UID, so a binding made
        since under the same name is left alone. The full sweep is handed what was deleted,
        to record the ends — a grant whose record never landed included, which must end
        Expired at the expiry its binding carried and never be granted afresh.
        """
        now = self.grantor.clock()
        # Each page's overdue bindings are being deleted while the next page is read.
        started: list[tuple[list[Mapping[str, Any]], asyncio.Task[list[bool] | None]]] = []
        try:
            async for page in self.kube.binding_metadata_pages(MANAGED_SELECTOR):
                overdue: list[Mapping[str, Any]] = []
                for index, binding in enumerate(page):
                    if index % YIELD_EVERY == YIELD_EVERY - 1:
                        await asyncio.sleep(0)
                    expires_at = binding_expiry(binding)
                    key = compute_owner_key(binding)
                    if expires_at is None or key is None:
                        continue
                    if expires_at > now:
                        # Not due yet: it goes at its own time, whether or not its owner has
                        # been read by then.
                        self.grantor.deadlines.expire_binding(
                            key, compute_binding_ref(binding), expires_at
                        )
                        continue
                    overdue.append(binding)
                if overdue:
                    refs = [compute_binding_ref(binding) for binding in overdue]
                    task = asyncio.create_task(self.grantor.delete_at_once(refs))
                    started.append((overdue, task))
        except BaseException:
            for _, task in started:
                task.cancel()
            await asyncio.gather(*(task for _, task in started), return_exceptions=True)
            raise
        answers = await asyncio.gather(*(task for _, task in started), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        removed: list[Mapping[str, Any]] = []
        for (overdue, _), answer in zip(started, answers, strict=True):
            deleted = cast("list[bool] | None", answer)
            if deleted is None:
                deleted = await self._gather_bounded(
                    [partial(self.grantor.delete_binding, compute_binding_ref(b)) for b in overdue]
                )
            removed.extend(b for b, done in zip(overdue, deleted, strict=True) if done)
        metrics.sweep_removed_total.labels(reason=str(SweepReason.EXPIRED)).inc(len(removed))
        return removed

    async def sweep(self, *, full: bool = True, deleted: Sequence[Mapping[str, Any]] = ()) -> int:
        """Remove every binding past its time, orphaned or ended; end grants whose binding
        vanished. Returns how many bindings were removed.

        The full sweep (at start-up, when nothing is known yet) lists every owner. The periodic
        one starts from what this process already knows, the active grants in its scheduler,
        lists only the bindings' metadata, and reads an owner only for a binding that looks
        wrong: its memory and its calls stay proportional to what needs attention.
        `deleted` are bindings `remove_overdue` deleted just before: judged as if listed.
        """
        now = self.grantor.clock()
        # Owners first, bindings second: a grant known as active before the bindings were
        # listed had its binding created before, so the listing shows it unless it was deleted.
        listed_at = now
        owners: dict[str, dict[str, SweptOwner]] = {}
        if full:
            for kind in STATUS_MODELS:
                listed = await self._list_swept_owners(kind)
                if listed is not None:
                    owners[kind] = listed
            self._served_kinds = frozenset(owners)
            # The scheduler runs beside this sweep: active grants it lists keep their time
            # while the ends found here are recorded, thousands of writes after an outage.
            # What is overdue already is this sweep's to end.
            for of_kind in owners.values():
                for owner in of_kind.values():
                    expires_at = owner.status.expires_at
                    active = owner.status.phase == Phase.ACTIVE and not owner.deleting
                    if active and expires_at is not None and expires_at > now:
                        self._track(owner, expires_at)
        else:
            owners = {kind: {} for kind in self._served_kinds}
            for index, (scheduled, deadline) in enumerate(self.scheduler.deadlines().items()):
                if index % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)
                if scheduled.kind in owners:
                    owners[scheduled.kind][scheduled.uid] = SweptOwner.scheduled(
                        scheduled, deadline
                    )
        statuses = {
            kind: {uid: owner.status for uid, owner in of_kind.items()}
            for kind, of_kind in owners.items()
        }
        expiring: dict[GrantKey, tuple[SweptOwner, GrantStatus]] = {}
        removals: list[tuple[Mapping[str, Any], SweepReason, GrantKey | None]] = []
        live_uids: set[str] = set()
        seen_owners: set[str] = set()
        gone_uids = {str((b.get("metadata") or {}).get("uid", "")) for b in deleted}
        async for page in self._pages_and(list(deleted)):
            judged: list[tuple[Mapping[str, Any], GrantKey, SweptOwner | None, SweepReason]] = []
            suspects: list[tuple[Mapping[str, Any], GrantKey]] = []
            for index, binding in enumerate(page):
                if index % YIELD_EVERY == YIELD_EVERY - 1:
                    # A long listing must not stall the scheduler and the webhooks.
                    await asyncio.sleep(0)
                key = compute_owner_key(binding)
                if key is None or key.kind not in owners:
                    continue
                seen_owners.add(key.uid)
                reason = compute_sweep_reason(binding, statuses[key.kind], now, listed_at)
                if reason is None:
                    live_uids.add(str((binding.get("metadata") or {}).get("uid", "")))
                elif full and reason != SweepReason.ORPHANED:
                    judged.append((binding, key, owners[key.kind].get(key.uid), reason))
                else:
                    suspects.append((binding, key))
            # Never remove on the strength of a snapshot alone: read the owner as it is now.
            fresh = await self._gather_bounded(
                [partial(self._read_swept_owner, key) for _, key in suspects]
            )
            for (suspect, key), entry in zip(suspects, fresh, strict=True):
                owned = {key.uid: entry.status} if entry is not None else {}
                reason = compute_sweep_reason(suspect, owned, now)
                if reason is None:
                    live_uids.add(str((suspect.get("metadata") or {}).get("uid", "")))
                else:
                    judged.append((suspect, key, entry, reason))
            for gone, key, entry, reason in judged:
                if reason == SweepReason.EXPIRED and self.grantor.deadlines.in_hand(key, now):
                    # Falling due this moment: its deadline deletes it (a second delete would
                    # be one more request in the middle of a wave).
                    live_uids.add(str((gone.get("metadata") or {}).get("uid", "")))
                    continue
                if reason == SweepReason.EXPIRED and entry is not None:
                    owner_status = entry.status
                    if owner_status.phase != Phase.ACTIVE:
                        # The binding was written but the record of the grant never landed (a
                        # crash or a failed status write), and its time is up. Record the grant
                        # as ended at the expiry it was given: a retried grant would start the
                        # clock again and hand out access nobody was promised.
                        owner_status = owner_status.model_copy(
                            update={
                                "expires_at": binding_expiry(gone),
                                "bindings": [compute_binding_ref(gone)],
                            }
                        )
                    expiring.setdefault(entry.key, (entry, owner_status))
                    continue
                if str((gone.get("metadata") or {}).get("uid", "")) in gone_uids:
                    continue
                removals.append((gone, reason, entry.key if entry else None))
        # Access ends first: every binding that must go is deleted before any record is written.
        await self._bounded(
            [
                partial(self.grantor.remove_binding, binding, reason, owner)
                for binding, reason, owner in removals
            ]
            + [
                partial(self.grantor.delete_bindings, _without(status, gone_uids))
                for _, status in expiring.values()
            ]
        )
        await self._bounded(
            [partial(self._end_swept, entry, status, now) for entry, status in expiring.values()]
        )
        removed = len(removals) + len(expiring)
        if full:
            candidates = [o for of_kind in owners.values() for o in of_kind.values()]
        else:
            unseen = [
                owner.key
                for of_kind in owners.values()
                for owner in of_kind.values()
                if owner.key.uid not in seen_owners and owner.key not in self.grantor.ended
            ]
            read = await self._gather_bounded([partial(self._read_swept_owner, k) for k in unseen])
            candidates = [owner for owner in read if owner is not None]
        jobs: list[Callable[[], Awaitable[Any]]] = []
        for index, owner in enumerate(candidates):
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            if (
                owner.status.phase != Phase.ACTIVE
                or owner.key in self.grantor.ended
                or owner.deleting
            ):
                continue
            if any(ref.uid in live_uids for ref in owner.status.bindings):
                continue
            expires_at = owner.status.expires_at
            # Now, not when the sweep began: a binding that went at its own expiry while the
            # sweep listed was ended, not deleted behind Lapse's back.
            if expires_at is not None and expires_at <= self.grantor.clock():
                jobs.append(partial(self.grantor.expire, owner.key, expires_at))
                continue
            jobs.append(partial(self._binding_deleted_while_away, owner))
        await self._bounded(jobs)
        return removed

    def _track(self, owner: SweptOwner, expires_at: datetime) -> None:
        """An active grant listed: due at `expires_at`, and what its bindings should be
        remembered, so that the look at every binding after this sweep (Services.lead)
        compares them without reading the owner."""
        role = owner.role
        grant = compute_status_grant(owner.key, role, owner.status) if role else None
        if grant is None:
            self.grantor.deadlines.track(owner.key, expires_at, owner.status.bindings)
            return
        self.grantor.remember(grant, owner.status.bindings)
        self.grantor.deadlines.schedule_end(owner.key, expires_at)

    async def _pages_and(
        self, extra: list[Mapping[str, Any]]
    ) -> AsyncIterator[Sequence[Mapping[str, Any]]]:
        async for page in self.kube.binding_metadata_pages(MANAGED_SELECTOR):
            yield page
        if extra:
            yield extra

    async def _list_swept_owners(self, kind: str) -> dict[str, SweptOwner] | None:
        """Every owner of `kind` by UID, or None when the kind is not served; read a page at a
        time and kept as what the sweep needs, not as whole objects."""
        found: dict[str, SweptOwner] = {}
        try:
            async for page in self.kube.owner_pages(kind):
                for index, item in enumerate(page):
                    if index % YIELD_EVERY == YIELD_EVERY - 1:
                        await asyncio.sleep(0)
                    owner = SweptOwner.of(kind, item)
                    found[owner.key.uid] = owner
                    self.grantor.reporter.note(owner.key, item)
        except NotFoundError:
            return None
        return found

    async def _read_swept_owner(self, key: GrantKey) -> SweptOwner | None:
        """The owner with `key`'s UID as it is now, or None when it is gone."""
        body = await self.grantor.read_owner(key)
        if body is None:
            return None
        self.grantor.reporter.note(key, body)
        return SweptOwner.of(key.kind, body)

    async def _end_swept(self, owner: SweptOwner, status: GrantStatus, now: datetime) -> None:
        due = format_time(status.expires_at or now)
        # Overdue after an outage, its bindings already gone: what continues it starts now.
        successor = await self.grantor.hand_over(owner.key, status)
        await self.grantor.end(
            owner.key,
            role=owner.role,
            status=status,
            phase=Phase.EXPIRED,
            reason="Extended" if successor else "Expired",
            message=successor or f"Access ended at {due}, as granted.",
            generation=owner.generation,
            bindings_deleted=True,
        )
        metrics.sweep_removed_total.labels(reason=str(SweepReason.EXPIRED)).inc()

    async def _gather_bounded(self, jobs: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
        """Run `jobs` at most `SWEEP_CONCURRENCY` at a time; every job runs even when another
        fails, then the first failure is raised."""
        slots = asyncio.Semaphore(SWEEP_CONCURRENCY)

        async def run(job: Callable[[], Awaitable[T]]) -> T:
            async with slots:
                return await job()

        results = await asyncio.gather(*(run(job) for job in jobs), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return cast("list[T]", results)

    async def _bounded(self, jobs: Sequence[Callable[[], Awaitable[Any]]]) -> None:
        await self._gather_bounded(jobs)

    async def _binding_deleted_while_away(self, owner: SweptOwner) -> None:
        if self._unlisted is not None:
            # Not listed by Lapse's labels is not gone: with its labels taken off it grants
            # still. The binding guard puts back a binding Lapse knows as its own; one it
            # does not know ends the grant below (and is deleted by its name with it).
            for ref in owner.status.bindings:
                found = await self.kube.get_binding(ref) if ref.uid else None
                same = found is not None and (found.get("metadata") or {}).get("uid") == ref.uid
                if found is not None and same and ref.uid in self.grantor.desired:
                    self._unlisted(ref.kind, None, found)
                    return
        metrics.tamper_total.labels(action="revoked").inc()
        await self.grantor.end(
            owner.key,
            role=owner.role,
            status=owner.status,
            phase=Phase.REVOKED,
            reason="BindingDeleted",
            message="The binding carrying this access is gone; access ended and will not be "
            "restored.",
            generation=owner.generation,
            event_type="Warning",
        )

    async def sweep_forever(self) -> None:
        interval = timedelta(seconds=self.grantor.settings.sweep_interval).total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                removed = await self.sweep(full=False)
            except (ApiError, OSError, TimeoutError) as error:
                metrics.errors_total.labels(error="api").inc()
                logger.warning("Sweep failed: %s", error)
                continue
            if removed:
                logger.info("Sweep removed %d binding(s).", removed)


def _without(status: GrantStatus, uids: set[str]) -> GrantStatus:
    """The status with only the bindings still to delete."""
    if not uids:
        return status
    return status.model_copy(update={"bindings": [b for b in status.bindings if b.uid not in uids]})
