"""The grant machinery: bind, expire, revoke and restore, for any kind of grant owner.

The keepers (`lapse.requests`, `lapse.breakglass`) decide; this module carries a decision out
through `lapse.kube` and records it through `lapse.reporting`: the binding first, then one
status patch, one Event, one audit line and the metrics. It knows no kind in particular and
never imports a keeper; the binding watch (`lapse.guard`) and the sweep (`lapse.sweeper`) sit
beside the keepers and call down into it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from lapse import audit, metrics
from lapse.activity import ActivityRecorder
from lapse.assessor import Assessor
from lapse.config import Settings
from lapse.core.activity import compute_activity_summary
from lapse.core.admission import ADMITTED_AT_ANNOTATION
from lapse.core.audit import build_audit_record
from lapse.core.bindings import (
    binding_expiry,
    build_binding,
    compute_binding_ref,
    compute_binding_refs,
    compute_owner_key,
    compute_owner_uid,
    format_time,
    parse_time,
)
from lapse.core.grants import Grant, GrantKey, compute_status_grant
from lapse.core.lifecycle import FinalPhaseError, build_status_patch, compute_granted
from lapse.core.models import BindingRef, GrantStatus, ObjectMeta, Phase, RoleRef
from lapse.core.owners import (
    STATUS_MODELS,
    is_same_owner,
    key_of,
    parse_generation,
    parse_role,
    parse_status,
)
from lapse.core.sweep import SweepReason
from lapse.crashpoints import crash_point
from lapse.deadlines import Deadlines
from lapse.deletions import Deletions, Sender
from lapse.footholds import Footholds
from lapse.kube import ApiError, ConflictError, KubeApi, NotFoundError, RefusedError
from lapse.rbac import NoRoles, Roles
from lapse.reaper import Deleter
from lapse.reporting import OUTCOMES, Clock, Reporter
from lapse.scheduler import ExpiryScheduler
from lapse.verifier import Verifier

logger = logging.getLogger(__name__)

EXPIRY_WARNING = "expiry-warning"
# Ends recorded at once after their bindings went; and how soon a failed record is retried.
RECORD_CONCURRENCY = 32
# While a delete is under way or due within VERIFY_CLEARANCE, ends are recorded only this many
# at once: the API server's time goes to the deletes first, and the records still move.
RECORD_CONCURRENCY_DELETING = 4
# While the reaper has more deletes due than connections (an expiry wave, start-up's backlog),
# ends are not recorded at all, for at most this long: each record is a read, a status write
# and an Event, and each write an event the operator's own watch then handles; under a wave
# they took the interpreter lock and the API server's time from the deletes.
RECORD_DEFER_AT_MOST = 5.0
RECORD_RETRY = timedelta(seconds=1)
# Revocation checks wait while a deadline falls due this soon (see lapse.verifier).
VERIFY_CLEARANCE = timedelta(seconds=1)

# Called as a grant of some kind expires, before its bindings go: the owner's keeper binds what
# continues it (an extension) and says what did, so access passes on with no gap.
HandOver = Callable[[GrantKey, GrantStatus], Awaitable[str | None]]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Grantor:
    def __init__(
        self,
        kube: KubeApi,
        settings: Settings,
        reporter: Reporter | None = None,
        clock: Clock = utcnow,
        roles: Roles | None = None,
        reaper_connect: Callable[[], Deleter] | None = None,
    ) -> None:
        self.kube = kube
        # The roles as the RBAC index knows them: a grant's role is not read per grant.
        self.roles: Roles = roles or NoRoles()
        self.settings = settings
        self.clock = clock
        self.reporter = reporter or Reporter(kube, clock)
        self.footholds = Footholds(kube, self.reporter)
        self.assessor = Assessor(kube, self.roles)
        self.activity = ActivityRecorder(kube, settings, clock)
        self.scheduler = ExpiryScheduler(self.expire, clock, on_change=self._update_gauges)
        self.verifier = Verifier(
            kube,
            self.reporter,
            clock,
            busy=self._deadlines_near,
            roles=self.roles,
            keep_every_verdict=bool(settings.trail_sinks),
        )
        self.scheduler.on(EXPIRY_WARNING, self.expiring_soon)
        # Bindings this process is deleting or has deleted, from either thread: their DELETED
        # events are ours, not an admin's, and none is deleted twice.
        self.deletions = Deletions()
        # This loop's deletes under way (the reaper's thread has its own).
        self._sender = Sender(self.deletions)
        # What each live binding (by UID) must look like, so an event needs no extra read.
        self.desired: dict[str, dict[str, Any]] = {}
        self.deadlines = Deadlines(
            self.scheduler,
            clock=clock,
            deletions=self.deletions,
            ended=lambda key: key in self.ended,
            delete_refs=self._delete_refs,
            record=self._record_apart,
            expire=self.expire,
            reaper_connect=reaper_connect,
        )
        # Ends recorded after their bindings went, apart from the scheduler (see expire).
        self._recording: set[asyncio.Task[None]] = set()
        self._record_slots = asyncio.Semaphore(RECORD_CONCURRENCY)
        self._record_slots_deleting = asyncio.Semaphore(RECORD_CONCURRENCY_DELETING)
        # A lock lives while someone holds or awaits it: one kept per grant ever seen would
        # grow the operator by a few hundred bytes a grant for as long as it runs.
        self._locks: weakref.WeakValueDictionary[GrantKey, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.handovers: dict[str, HandOver] = {}

    def _deadlines_near(self) -> bool:
        return self.deadlines.near(VERIFY_CLEARANCE)

    def _update_gauges(self) -> None:
        metrics.scheduled_expiries.set(len(self.scheduler))
        for kind in metrics.KINDS:
            metrics.active_grants.labels(kind=kind).set(self.scheduler.count(owner_kind=kind))
        metrics.breakglass_active.set(self.scheduler.count(owner_kind="BreakGlass"))

    def lock(self, key: GrantKey) -> asyncio.Lock:
        """The lock `end` holds: a kind's own status writes take it too, so they never
        interleave with an ending."""
        return self._locks.setdefault(key, asyncio.Lock())

    @property
    def ended(self) -> set[GrantKey]:
        return self.reporter.ended

    # Granting -------------------------------------------------------------------------------

    async def resume(self, key: GrantKey, role: RoleRef | None, status: GrantStatus) -> None:
        """After a restart (or a repeated event): an active grant goes back to the scheduler."""
        if status.phase != Phase.ACTIVE or status.expires_at is None or role is None:
            return
        grant = compute_status_grant(key, role, status)
        if grant is not None:
            self.remember(grant, status.bindings)
        self.deadlines.forget_early(key)
        self.deadlines.schedule_end(key, status.expires_at)
        self._warn_before(key, status.expires_at)

    def remember(self, grant: Grant, refs: Sequence[BindingRef]) -> None:
        for ref in refs:
            if ref.uid:
                self.desired[ref.uid] = build_binding(grant, ref.model_copy(update={"uid": None}))
        self.deadlines.remember(grant.key, grant.expires_at, refs)

    async def activate(
        self,
        make: Callable[[datetime], Grant],
        duration: timedelta,
        status: GrantStatus,
        metadata: ObjectMeta,
        describe: Callable[[Grant], str],
        *,
        finish: Callable[[GrantStatus], GrantStatus] | None = None,
        event_type: str = "Normal",
        reason: str = "Granted",
        action: str = "granted",
        starts_at: datetime | None = None,
    ) -> GrantStatus | None:
        """Bind `make(expiry)` for `duration` and record it as Active, whatever the kind;
        `finish` adds what a kind keeps beyond the grant. None when a binding's name is held
        by someone else's binding (the owner is then Denied). A grant decided ahead passes
        the `starts_at` it was decided for, so binding late never moves its expiry."""
        generation = metadata.generation
        # The clock starts immediately before the binding exists, so the window never exceeds
        # the duration granted.
        granted_at = starts_at if starts_at is not None else self.clock()
        grant = make(granted_at + duration)
        key = grant.key
        created: list[BindingRef] = []
        crash_point("grant-before-binding-write")
        refs = compute_binding_refs(grant)
        missing = await self._missing_role(grant.role, refs)
        if missing is not None:
            await self.reporter.transition(
                key,
                role=grant.role,
                status=status,
                phase=Phase.INVALID,
                reason="RoleNotFound",
                message=missing,
                generation=generation,
                event_type="Warning",
            )
            return None
        for ref in refs:
            try:
                live = await self._create_binding(grant, ref)
            except (RefusedError, NotFoundError) as error:
                # Retrying cannot help (an invalid name, no `bind` on the role, a namespace
                # gone): answer once, clearly, instead of retrying for ever.
                await self.delete_bindings(status.model_copy(update={"bindings": created}))
                await self.reporter.transition(
                    key,
                    role=grant.role,
                    status=status,
                    phase=Phase.INVALID,
                    reason="BindingRefused",
                    message=f"The API server refused to create {ref.kind} {ref.name}: "
                    f"{error.message.rstrip('.')}. Nothing was granted.",
                    generation=generation,
                    event_type="Warning",
                )
                return None
            if live is None:
                await self.delete_bindings(status.model_copy(update={"bindings": created}))
                await self.reporter.transition(
                    key,
                    role=grant.role,
                    status=status,
                    phase=Phase.DENIED,
                    reason="BindingConflict",
                    message=f"A {ref.kind} named {ref.name} exists and is not Lapse's; "
                    "nothing was granted.",
                    generation=generation,
                    event_type="Warning",
                )
                return None
            existing_expiry = binding_expiry(live)
            if existing_expiry is not None and existing_expiry < grant.expires_at:
                # Our own binding from a run that stopped before recording it: its earlier
                # expiry stands, so a crash never lengthens access.
                granted_at = existing_expiry - duration
                grant = make(existing_expiry)
            created.append(ref.model_copy(update={"uid": live["metadata"]["uid"]}))
        bound_at = self.clock()
        self.remember(grant, created)
        role = grant.role
        message = describe(grant)
        new = compute_granted(
            status,
            now=bound_at,
            generation=generation,
            message=message,
            requester=grant.requester,
            subject=grant.subject,
            policy=grant.policy,
            duration=duration,
            granted_at=granted_at,
            bindings=created,
        )
        if finish is not None:
            new = finish(new)
        crash_point("grant-after-binding-write")
        # Audit line and Event before the status write, as in `transition`.
        self.reporter.audit(action, key, new, role, reason, message)
        await self.reporter.event(key, event_type, reason, message)
        crash_point("grant-before-status-write")
        await self.kube.patch_status(key, build_status_patch(new))
        crash_point("grant-after-status-write")
        self.deadlines.schedule_end(key, grant.expires_at)
        self._warn_before(key, grant.expires_at)
        admitted = parse_time(metadata.annotations.get(ADMITTED_AT_ANNOTATION))
        created_at = metadata.creation_timestamp
        start = (
            admitted
            if admitted and created_at and abs((admitted - created_at).total_seconds()) < 2
            else created_at
        )
        if start is not None:
            latency = max(0.0, (bound_at - start).total_seconds())
            metrics.grant_latency_seconds.labels(kind=key.kind).observe(latency)
        metrics.requests_total.labels(kind=key.kind, outcome="granted").inc()
        return new

    async def _missing_role(self, role: RoleRef, refs: Sequence[BindingRef]) -> str | None:
        """Why the role cannot be bound because it does not exist, or None. The API server
        would bind a missing role (granting nothing until someone creates it); Lapse says so."""
        where = (
            sorted({r.namespace for r in refs if r.namespace}) if role.kind == "Role" else [None]
        )
        for namespace in where:
            if self.roles.role_rules(role.kind.value, role.name, namespace) is not None:
                continue
            # Not in the index (not listed yet, or made a moment ago): the API server says.
            if await self.kube.role_exists(str(role.kind), role.name, namespace) is not False:
                continue
            if namespace is None:
                return f"{role.kind} {role.name} does not exist; nothing was granted."
            return (
                f"{role.kind} {role.name} does not exist in namespace {namespace}; nothing was "
                "granted (a Role is looked up in the request's own namespace)."
            )
        return None

    async def _create_binding(self, grant: Grant, ref: BindingRef) -> dict[str, Any] | None:
        """Create the binding, or find the one this owner already made; None if the name is
        held by a binding that is not this owner's."""
        try:
            return await self.kube.create_binding(build_binding(grant, ref))
        except ConflictError:
            pass
        except ApiError:
            metrics.errors_total.labels(error="api").inc()
            raise
        metrics.errors_total.labels(error="conflict").inc()
        existing = await self.kube.get_binding(ref)
        if existing is not None and compute_owner_uid(existing) == grant.key.uid:
            return existing
        return None

    async def delete_binding(self, ref: BindingRef) -> bool:
        """Delete one of our bindings, marked as our own first: the binding watch must not
        take Lapse's own deletion for an admin's (which would end the grant as Revoked). A
        binding known deleted already (by the reaper, say) is not asked for again."""
        if not ref.uid:
            return await self.kube.delete_binding(ref)
        self.desired.pop(ref.uid, None)
        return await self._sender.delete(ref.uid, lambda: self.kube.delete_binding(ref))

    async def delete_at_once(self, refs: Sequence[BindingRef]) -> list[bool] | None:
        """Delete many bindings now from the reaper's connections (start-up's overdue
        bindings); None when there is no running reaper and the caller deletes them itself."""
        for ref in refs:
            if ref.uid:
                self.desired.pop(ref.uid, None)
        return await self.deadlines.delete_at_once(refs)

    async def delete_bindings(self, status: GrantStatus) -> int:
        return await self._delete_refs(status.bindings)

    async def _delete_refs(self, refs: Sequence[BindingRef]) -> int:
        deleted = 0
        for ref in refs:
            if await self.delete_binding(ref):
                deleted += 1
        return deleted

    async def end(
        self,
        key: GrantKey,
        *,
        role: RoleRef | None,
        status: GrantStatus,
        phase: Phase,
        reason: str,
        message: str,
        generation: int | None,
        event_type: str = "Normal",
        patch_status: bool = True,
        bindings_deleted: bool = False,
        read_after_delete: bool = False,
        revoked_at: datetime | None = None,
    ) -> None:
        """End an active grant: bindings first (access ends now), then the record of it.
        `bindings_deleted` says the caller has deleted the bindings already;
        `read_after_delete` that `status` was read after that, so it lists every foothold;
        `revoked_at` when the caller's delete took the access away."""
        async with self.lock(key):
            if key in self.ended:
                return
            self.deadlines.forget(key)
            crash_point("revoke-before-binding-write")
            if not bindings_deleted:
                await self.delete_bindings(status)
            crash_point("revoke-after-binding-write")
            if phase == Phase.EXPIRED and status.expires_at is not None:
                lag = ((revoked_at or self.clock()) - status.expires_at).total_seconds()
                metrics.revocation_lag_seconds.labels(kind=key.kind).observe(max(0.0, lag))
            await self._settle_footholds(key, role, status if read_after_delete else None)
            # What was done with the access, as far as the audit log has told us by now.
            activity = (
                {"activity": compute_activity_summary(self.activity.record_of(key))}
                if self.activity.enabled
                else {}
            )
            if patch_status:
                # Checked before the end is written when no deadline is near, so the verdict
                # rides on the end's own status write; otherwise later (lapse.verifier).
                verdict = None
                if self.verifier.can_check_now():
                    verdict = await self.verifier.check(key, role, status)
                ended = status
                if verdict is not None:
                    ended = self.verifier.with_verdict(status, verdict, generation)
                recorded: GrantStatus | None = None
                try:
                    recorded = await self.reporter.transition(
                        key,
                        role=role,
                        status=ended,
                        phase=phase,
                        reason=reason,
                        message=message,
                        generation=generation,
                        event_type=event_type,
                        crash_prefix="revoke",
                        **activity,
                    )
                except FinalPhaseError:
                    self.ended.add(key)
                if verdict is not None:
                    await self.verifier.record(key, role, status, verdict)
                else:
                    self.verifier.later(key, role, status, recorded=recorded, generation=generation)
                return
            # The owner is going away: its Event and audit line are all that remain.
            metrics.requests_total.labels(kind=key.kind, outcome=OUTCOMES[phase]).inc()
            await self.reporter.event(key, event_type, reason, message)
            self.reporter.audit(phase.lower(), key, status, role, reason, message, **activity)
            self.ended.add(key)
            self.verifier.later(key, role, status)

    async def _settle_footholds(
        self, key: GrantKey, role: RoleRef | None, status: GrantStatus | None
    ) -> None:
        """What the grantee made goes (or is reported) with the access, before the record of
        the end; a failure here never keeps the grant from ending."""
        try:
            await self.footholds.settle(key, role, status)
        except (ApiError, OSError, TimeoutError) as error:
            logger.warning("Could not settle the footholds of %s: %s", key.describe(), error)

    async def expire(self, key: GrantKey, deadline: datetime) -> None:
        """The scheduler's callback: end the grant if it is (still) due.

        The bindings go first, before anything is read: the deadline is the `expiresAt` this
        process wrote (durations never grow), so nothing the owner could say now would keep
        them. Only a grant that something continues reads its owner first, to bind the
        continuation before the access it continues goes.
        """
        if self.deadlines.reaper_deletes(key):
            return
        refs = self.deadlines.take_due(key, self.clock())
        if refs is not None:
            await self._delete_refs(refs)
            self._record_apart(key, deadline, self.clock())
            return
        await self._end_expired(key, deadline, deleted=False)

    def _record_apart(self, key: GrantKey, deadline: datetime, revoked_at: datetime) -> None:
        """Record the end of a grant whose bindings are gone. The record (a read, a status
        write, an Event, the check) runs apart, a bounded number at once: under an API server
        that answers slowly, thousands of them must not hold the scheduler's slots while other
        deadlines wait to delete."""
        task = asyncio.create_task(self._record_expiry(key, deadline, revoked_at))
        self._recording.add(task)
        task.add_done_callback(self._recorded)
        metrics.ends_recording.set(len(self._recording))

    def _recorded(self, task: asyncio.Task[None]) -> None:
        self._recording.discard(task)
        metrics.ends_recording.set(len(self._recording))

    async def stop(self) -> None:
        """Stop the reaper, cancel the ends being recorded and the checks, before the client
        they use is closed; a restart records what was cut short (the sweep finds no binding
        and an owner past its time)."""
        await self.deadlines.stop()
        for task in list(self._recording):
            task.cancel()
        await asyncio.gather(*self._recording, return_exceptions=True)
        await self.verifier.stop()

    async def _record_expiry(self, key: GrantKey, deadline: datetime, revoked_at: datetime) -> None:
        try:
            async with self._record_slots:
                await self.deadlines.deletes_first(RECORD_DEFER_AT_MOST)
                narrow = self._deadlines_near()
                async with self._record_slots_deleting if narrow else contextlib.nullcontext():
                    await self._end_expired(key, deadline, deleted=True, revoked_at=revoked_at)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The access is gone; its record is retried as the scheduler retries an end (the
            # next try finds no binding to delete and records the end).
            logger.exception("Recording the end of %s failed; retrying.", key.describe())
            self.scheduler.schedule(key, self.clock() + RECORD_RETRY)

    async def _end_expired(
        self,
        key: GrantKey,
        deadline: datetime,
        *,
        deleted: bool,
        revoked_at: datetime | None = None,
    ) -> None:
        # Once the bindings are gone the read is the record's, not the revocation's: it must
        # not take one of the connections kept for the next deletes.
        body = await self.kube.get_owner(key, revoking=not deleted)
        if body is None or not is_same_owner(key, body):
            return
        self.reporter.note(key, body)
        status = parse_status(key.kind, body)
        if status.phase != Phase.ACTIVE or status.expires_at is None:
            return
        if status.expires_at > self.clock():
            if deleted:
                # The owner says later than this process wrote: someone else wrote its status.
                # Access is gone already; the record says so rather than pretend otherwise.
                logger.warning(
                    "%s was due at %s but its owner says %s; ending it now.",
                    key.describe(),
                    format_time(deadline),
                    format_time(status.expires_at),
                )
            else:
                self.deadlines.schedule_end(key, status.expires_at)
                self._warn_before(key, status.expires_at)
                return
        successor = None if deleted else await self.hand_over(key, status)
        if successor:
            crash_point("handover-after-successor-bound")
        await self.end(
            key,
            role=parse_role(body),
            status=status,
            phase=Phase.EXPIRED,
            reason="Extended" if successor else "Expired",
            message=successor or f"Access ended at {format_time(status.expires_at)}, as granted.",
            generation=parse_generation(body),
            bindings_deleted=deleted,
            read_after_delete=deleted,
            revoked_at=revoked_at,
        )
        if successor:
            lag = (self.clock() - status.expires_at).total_seconds()
            metrics.handover_lag_seconds.observe(max(0.0, lag))

    async def hand_over(self, key: GrantKey, status: GrantStatus) -> str | None:
        """Bind whatever continues this grant before its own bindings go; a failure here never
        keeps the grant from ending (what continues it then starts on its own deadline)."""
        handover = self.handovers.get(key.kind)
        if handover is None:
            return None
        try:
            return await handover(key, status)
        except (ApiError, OSError, TimeoutError) as error:
            logger.warning("Could not hand %s over: %s", key.describe(), error)
            return None

    def _warn_before(self, key: GrantKey, expires_at: datetime) -> None:
        """Schedule the "expiring soon" notice, unless the whole grant is shorter than that."""
        warning = timedelta(seconds=self.settings.notify_expiry_warning)
        if warning > timedelta(0) and expires_at - warning > self.clock():
            self.scheduler.schedule(key, expires_at - warning, EXPIRY_WARNING)

    async def expiring_soon(self, key: GrantKey, deadline: datetime) -> None:
        """The scheduler's warning callback: one Event and one audit line, which the notifier
        forwards."""
        body = await self.kube.get_owner(key)
        if body is None or not is_same_owner(key, body):
            return
        status = parse_status(key.kind, body)
        if status.phase != Phase.ACTIVE or status.expires_at is None:
            return
        if status.expires_at <= self.clock():
            return
        message = f"Access ends at {format_time(status.expires_at)}."
        await self.reporter.event(key, "Normal", "ExpiringSoon", message)
        self.reporter.audit("expiring-soon", key, status, parse_role(body), "ExpiringSoon", message)

    async def owner_deleted(self, kind: str, body: Mapping[str, Any]) -> None:
        """Deleting an owner revokes at once; the Event is written before the object goes."""
        key = key_of(kind, body)
        self.reporter.note(key, body)
        status = parse_status(kind, body)
        if status.phase != Phase.ACTIVE:
            self.deadlines.forget(key)
            return
        await self.end(
            key,
            role=parse_role(body),
            status=status,
            phase=Phase.REVOKED,
            reason=f"{kind}Deleted",
            message=f"Access ended because the {kind} was deleted.",
            generation=parse_generation(body),
            patch_status=False,
        )

    async def read_owner(self, key: GrantKey) -> dict[str, Any] | None:
        """The owner `key` names as it is now, or None when it is gone (or is a namesake)."""
        body = await self.kube.get_owner(key)
        return body if is_same_owner(key, body) else None

    async def remove_binding(
        self, binding: Mapping[str, Any], reason: SweepReason, owner: GrantKey | None
    ) -> None:
        """Delete a binding whose grant is over, and say so in the audit trail and on the
        owner (when there still is one)."""
        ref = compute_binding_ref(binding)
        if not await self.delete_binding(ref):
            return
        metrics.sweep_removed_total.labels(reason=str(reason)).inc()
        key = compute_owner_key(binding)
        message = f"Removed {ref.kind} {ref.name}: its grant has {reason_text(reason)}."
        logger.info(message)
        if key is not None:
            status = STATUS_MODELS.get(key.kind, GrantStatus)()
            audit.write(
                build_audit_record(
                    action="removed",
                    key=key,
                    status=status,
                    role=None,
                    target_namespace=ref.namespace,
                    reason=str(reason),
                    message=message,
                    now=self.clock(),
                )
            )
        if owner is not None:
            await self.reporter.event(owner, "Normal", "BindingRemoved", message)


def reason_text(reason: SweepReason) -> str:
    return {
        SweepReason.EXPIRED: "expired",
        SweepReason.ORPHANED: "no owner any more",
        SweepReason.ENDED: "ended",
    }[reason]
