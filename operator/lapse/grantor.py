"""The grant machinery: grant, expire, revoke, restore and sweep, for any kind of grant owner.

Handlers and the scheduler call in here; this module asks the pure core what to do and carries
it out through `lapse.kube`, writing for every transition one status patch, one Event, one
audit line and the metrics. AccessRequest and BreakGlass share it: one mechanism, two kinds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import ValidationError

from lapse import audit, metrics
from lapse.config import Settings
from lapse.core.admission import ADMITTED_AT_ANNOTATION
from lapse.core.audit import build_audit_record
from lapse.core.bindings import (
    MANAGED_BY_LABEL,
    MANAGED_SELECTOR,
    OWNER_KIND_LABEL,
    OWNER_NAME_LABEL,
    binding_expiry,
    build_binding,
    build_restore_patch,
    compute_binding_ref,
    compute_binding_refs,
    compute_drift,
    compute_owner_key,
    compute_owner_uid,
    format_time,
    parse_time,
)
from lapse.core.breakglass import compute_audit_fields
from lapse.core.durations import format_duration
from lapse.core.grants import (
    Grant,
    GrantKey,
    compute_request_grant,
    compute_status_grant,
)
from lapse.core.lifecycle import (
    FinalPhaseError,
    build_status_patch,
    compute_granted,
    compute_transition,
)
from lapse.core.models import (
    AccessPolicy,
    AccessRequest,
    AccessRequestStatus,
    BindingRef,
    BreakGlassStatus,
    GrantStatus,
    ObjectMeta,
    Phase,
    RoleRef,
)
from lapse.core.policy import (
    Decision,
    Outcome,
    compute_decision,
    needs_namespace_labels,
    parse_policy,
)
from lapse.core.sweep import SweepReason, compute_sweep_reason
from lapse.crashpoints import crash_point
from lapse.kube import ApiError, ConflictError, KubeClient, NotFoundError, RefusedError
from lapse.scheduler import ExpiryScheduler

if TYPE_CHECKING:
    from lapse.approving import RequestApprovals

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
T = TypeVar("T")
EXPIRY_WARNING = "expiry-warning"
# How many calls the sweep has in flight at once: after an outage thousands of grants may be
# overdue, and ending them one by one would keep access open for a minute or more.
SWEEP_CONCURRENCY = 32
# How many objects the sweep looks at between giving the event loop back.
YIELD_EVERY = 256

STATUS_MODELS: dict[str, type[GrantStatus]] = {
    "AccessRequest": AccessRequestStatus,
    "BreakGlass": BreakGlassStatus,
}
ACTIVE_STATUSES: dict[str, GrantStatus] = {
    kind: model(phase=Phase.ACTIVE) for kind, model in STATUS_MODELS.items()
}
# Where Events about cluster-scoped objects go, as Kubernetes itself does it.
CLUSTER_EVENTS_NAMESPACE = "default"
OUTCOMES = {
    Phase.ACTIVE: "granted",
    Phase.DENIED: "denied",
    Phase.INVALID: "invalid",
    Phase.EXPIRED: "expired",
    Phase.REVOKED: "revoked",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_status(kind: str, body: Mapping[str, Any]) -> GrantStatus:
    """The owner's status; an unreadable one counts as empty, never as a crash."""
    try:
        return STATUS_MODELS[kind].model_validate(body.get("status") or {})
    except ValidationError:
        return STATUS_MODELS[kind]()


def parse_role(body: Mapping[str, Any]) -> RoleRef | None:
    try:
        return RoleRef.model_validate((body.get("spec") or {}).get("role") or {})
    except ValidationError:
        return None


def key_of(kind: str, body: Mapping[str, Any]) -> GrantKey:
    metadata = body.get("metadata") or {}
    return GrantKey(
        kind=kind,
        namespace=metadata.get("namespace"),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
    )


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
            generation=metadata.get("generation"),
            deleting=bool(metadata.get("deletionTimestamp")),
        )

    @classmethod
    def scheduled(cls, key: GrantKey, expires_at: datetime) -> SweptOwner:
        """An owner known only from the scheduler: active until `expires_at`."""
        # A copy of a ready-made status: building (even constructing) a model per grant costs
        # a millisecond each, seconds of a blocked event loop at ten thousand grants.
        status = ACTIVE_STATUSES[key.kind].model_copy(update={"expires_at": expires_at})
        return cls(key=key, status=status)


class Grantor:
    def __init__(self, kube: KubeClient, settings: Settings, clock: Clock = utcnow) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock
        self.scheduler = ExpiryScheduler(self.expire, clock, on_change=self._update_gauges)
        self.scheduler.on(EXPIRY_WARNING, self.expiring_soon)
        # Approvals of AccessRequests; set at start-up once the signing key is loaded.
        self.approvals: RequestApprovals | None = None
        # Bindings this process is deleting: their DELETED events are ours, not an admin's.
        self._revoking: set[str] = set()
        # What each live binding (by UID) must look like, so an event needs no extra read.
        self._desired: dict[str, dict[str, Any]] = {}
        # Owners this process has ended: a second path to the same end is a no-op.
        self._ended: set[GrantKey] = set()
        self._locks: dict[GrantKey, asyncio.Lock] = {}
        self._warned: set[str] = set()
        # Fields an owner's audit lines carry beyond the grant (a break-glass's incident).
        self._audit_fields: dict[GrantKey, dict[str, str | None]] = {}
        # The owner kinds the API serves, as the full sweep found them.
        self._served_kinds: frozenset[str] = frozenset(STATUS_MODELS)

    def _update_gauges(self) -> None:
        metrics.scheduled_expiries.set(len(self.scheduler))
        for kind in metrics.KINDS:
            metrics.active_grants.labels(kind=kind).set(self.scheduler.count(owner_kind=kind))
        metrics.breakglass_active.set(self.scheduler.count(owner_kind="BreakGlass"))

    def _lock(self, key: GrantKey) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def lock(self, key: GrantKey) -> asyncio.Lock:
        """The lock `end` holds: a kind's own status writes take it too, so they never
        interleave with an ending."""
        return self._lock(key)

    def note(self, key: GrantKey, body: Mapping[str, Any]) -> None:
        """Remember what `key`'s audit lines carry beyond the grant, from its object."""
        fields = compute_audit_fields(key.kind, body)
        if fields:
            self._audit_fields[key] = fields

    # Reporting ------------------------------------------------------------------------------

    def _involved(self, key: GrantKey) -> dict[str, Any]:
        involved: dict[str, Any] = {
            "apiVersion": key.api_version,
            "kind": key.kind,
            "name": key.name,
        }
        if key.namespace:
            involved["namespace"] = key.namespace
        if key.uid:
            involved["uid"] = key.uid
        return involved

    async def event(self, key: GrantKey, type_: str, reason: str, message: str) -> None:
        """Post an Event on the owner; a failure is counted and logged, never fatal."""
        try:
            await self.kube.post_event(
                self._involved(key),
                key.namespace or CLUSTER_EVENTS_NAMESPACE,
                type_,
                reason,
                message,
                self.clock(),
            )
        except (ApiError, OSError, TimeoutError) as error:
            metrics.errors_total.labels(error="api").inc()
            logger.warning("Could not post Event %s on %s: %s", reason, key.describe(), error)

    def audit(
        self,
        action: str,
        key: GrantKey,
        status: GrantStatus,
        role: RoleRef | None,
        reason: str,
        message: str,
        **extra: str | None,
    ) -> None:
        namespaces = [b.namespace for b in status.bindings if b.namespace]
        target = ",".join(namespaces) if namespaces else key.namespace
        audit.write(
            build_audit_record(
                action=action,
                key=key,
                status=status,
                role=role,
                target_namespace=target,
                reason=reason,
                message=message,
                now=self.clock(),
                **{**self._audit_fields.get(key, {}), **extra},
            )
        )

    async def transition(
        self,
        key: GrantKey,
        role: RoleRef | None,
        status: GrantStatus,
        phase: Phase,
        reason: str,
        message: str,
        generation: int | None,
        *,
        event_type: str = "Normal",
        action: str | None = None,
        crash_prefix: str | None = None,
        **extra: str | None,
    ) -> GrantStatus:
        """Enter `phase`: one status patch, one Event, one audit line and the outcome metric.

        The audit line and the Event go out before the status is written: a crash or a failed
        write in between repeats them on the retry (at least once, the audit line with the same
        `id`), where the other order would lose them for good once the status says it is done.
        """
        new = compute_transition(status, phase, reason, message, self.clock(), generation)
        self.audit(action or phase.lower(), key, new, role, reason, message, **extra)
        await self.event(key, event_type, reason, message)
        if crash_prefix:
            crash_point(f"{crash_prefix}-before-status-write")
        await self.kube.patch_status(key, build_status_patch(new))
        if crash_prefix:
            crash_point(f"{crash_prefix}-after-status-write")
        if phase in OUTCOMES:
            metrics.requests_total.labels(kind=key.kind, outcome=OUTCOMES[phase]).inc()
        if phase.ended:
            self._ended.add(key)
        return new

    # Requests -------------------------------------------------------------------------------

    async def reconcile_request(
        self, body: Mapping[str, Any], policies: Sequence[AccessPolicy]
    ) -> None:
        """Bring one AccessRequest to where its status says it should be; safe to repeat."""
        key = key_of("AccessRequest", body)
        status = parse_status(key.kind, body)
        generation = (body.get("metadata") or {}).get("generation")
        if self.approvals is not None:
            self.approvals.remember(policies)
        if status.phase is not None:
            if self.approvals is not None:
                await self.approvals.follow_up(key, body)
            await self.resume(key, parse_role(body), status)
            return
        try:
            request = AccessRequest.model_validate(body)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            metrics.errors_total.labels(error="invalid").inc()
            await self.transition(
                key,
                parse_role(body),
                status,
                Phase.INVALID,
                "InvalidSpec",
                f"The request cannot be read: {where}: {first['msg']}.",
                generation,
                event_type="Warning",
            )
            return
        labels = None
        if needs_namespace_labels(policies):
            labels = await self.kube.get_namespace_labels(key.namespace or "")
        decision = compute_decision(request, policies, labels)
        if decision.outcome == Outcome.DENY:
            # Denied is final, and the policy index may not have seen a policy created a moment
            # before this request: a final answer rests on a fresh read of the policies.
            listing = await self.kube.list_owners("AccessPolicy") or []
            policies = [p for p in map(parse_policy, listing) if p is not None]
            if labels is None and needs_namespace_labels(policies):
                labels = await self.kube.get_namespace_labels(key.namespace or "")
            if self.approvals is not None:
                self.approvals.remember(policies)
            decision = compute_decision(request, policies, labels)
        if self.approvals is not None:
            decision, screened = await self.approvals.screen(
                request, body, decision, request.status
            )
            request = request.model_copy(update={"status": screened})
            status = screened
            if decision.outcome == Outcome.PENDING:
                await self.approvals.start_pending(request, decision, screened)
                return
        if decision.outcome == Outcome.GRANT:
            await self.grant(request, decision)
            return
        phase, event_type = {
            Outcome.PENDING: (Phase.PENDING, "Normal"),
            Outcome.DENY: (Phase.DENIED, "Warning"),
            Outcome.INVALID: (Phase.INVALID, "Warning"),
        }[decision.outcome]
        if decision.outcome == Outcome.INVALID:
            metrics.errors_total.labels(error="invalid").inc()
        requester = request.spec.requester
        await self.transition(
            key,
            request.spec.role,
            status.model_copy(update={"requester": requester, "policy": decision.policy}),
            phase,
            decision.reason,
            decision.message,
            request.metadata.generation,
            event_type=event_type,
        )

    async def resume(self, key: GrantKey, role: RoleRef | None, status: GrantStatus) -> None:
        """After a restart (or a repeated event): an active grant goes back to the scheduler."""
        if status.phase != Phase.ACTIVE or status.expires_at is None or role is None:
            return
        grant = compute_status_grant(key, role, status)
        if grant is not None:
            self._remember(grant, status.bindings)
        self.scheduler.schedule(key, status.expires_at)
        self._warn_before(key, status.expires_at)

    def _remember(self, grant: Grant, refs: Sequence[BindingRef]) -> None:
        for ref in refs:
            if ref.uid:
                self._desired[ref.uid] = build_binding(grant, ref.model_copy(update={"uid": None}))

    async def grant(self, request: AccessRequest, decision: Decision) -> None:
        requester = request.spec.requester
        assert requester is not None and decision.duration is not None
        duration = decision.duration
        role = request.spec.role

        def describe(grant: Grant) -> str:
            return (
                f"Granted {role.kind} {role.name} in namespace {grant.key.namespace} to "
                f"{grant.subject.name} for {format_duration(duration)}, until "
                f"{format_time(grant.expires_at)} (AccessPolicy {decision.policy})."
            )

        await self.activate(
            lambda expires_at: compute_request_grant(
                request, requester, decision.policy, expires_at
            ),
            duration,
            request.status,
            request.metadata,
            describe,
        )

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
    ) -> GrantStatus | None:
        """Bind `make(expiry)` for `duration` and record it as Active, whatever the kind;
        `finish` adds what a kind keeps beyond the grant. None when a binding's name is held
        by someone else's binding (the owner is then Denied)."""
        generation = metadata.generation
        # The clock starts immediately before the binding exists, so the window never exceeds
        # the duration granted.
        granted_at = self.clock()
        grant = make(granted_at + duration)
        key = grant.key
        created: list[BindingRef] = []
        crash_point("grant-before-binding-write")
        refs = compute_binding_refs(grant)
        missing = await self._missing_role(grant.role, refs)
        if missing is not None:
            await self.transition(
                key,
                grant.role,
                status,
                Phase.INVALID,
                "RoleNotFound",
                missing,
                generation,
                event_type="Warning",
            )
            return None
        for ref in refs:
            try:
                live = await self._create_binding(grant, ref)
            except (RefusedError, NotFoundError) as error:
                # Retrying cannot help (an invalid name, no `bind` on the role, a namespace
                # gone): answer once, clearly, instead of retrying for ever.
                await self._delete_bindings(status.model_copy(update={"bindings": created}))
                await self.transition(
                    key,
                    grant.role,
                    status,
                    Phase.INVALID,
                    "BindingRefused",
                    f"The API server refused to create {ref.kind} {ref.name}: "
                    f"{error.message.rstrip('.')}. Nothing was granted.",
                    generation,
                    event_type="Warning",
                )
                return None
            if live is None:
                await self._delete_bindings(status.model_copy(update={"bindings": created}))
                await self.transition(
                    key,
                    grant.role,
                    status,
                    Phase.DENIED,
                    "BindingConflict",
                    f"A {ref.kind} named {ref.name} exists and is not Lapse's; "
                    "nothing was granted.",
                    generation,
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
        self._remember(grant, created)
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
        self.audit(action, key, new, role, reason, message)
        await self.event(key, event_type, reason, message)
        crash_point("grant-before-status-write")
        await self.kube.patch_status(key, build_status_patch(new))
        crash_point("grant-after-status-write")
        self.scheduler.schedule(key, grant.expires_at)
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

    # Ending ---------------------------------------------------------------------------------

    async def _delete_binding(self, ref: BindingRef) -> bool:
        """Delete one of our bindings, marked as our own first: the binding watch must not
        take Lapse's own deletion for an admin's (which would end the grant as Revoked)."""
        if ref.uid:
            self._revoking.add(ref.uid)
            self._desired.pop(ref.uid, None)
        return await self.kube.delete_binding(ref)

    async def _delete_bindings(self, status: GrantStatus) -> int:
        deleted = 0
        for ref in status.bindings:
            if await self._delete_binding(ref):
                deleted += 1
        return deleted

    async def end(
        self,
        key: GrantKey,
        role: RoleRef | None,
        status: GrantStatus,
        phase: Phase,
        reason: str,
        message: str,
        generation: int | None,
        *,
        event_type: str = "Normal",
        patch_status: bool = True,
        bindings_deleted: bool = False,
    ) -> None:
        """End an active grant: bindings first (access ends now), then the record of it.
        `bindings_deleted` says the caller has deleted the bindings already."""
        async with self._lock(key):
            if key in self._ended:
                return
            self.scheduler.cancel(key)
            crash_point("revoke-before-binding-write")
            if not bindings_deleted:
                await self._delete_bindings(status)
            crash_point("revoke-after-binding-write")
            if phase == Phase.EXPIRED and status.expires_at is not None:
                lag = (self.clock() - status.expires_at).total_seconds()
                metrics.revocation_lag_seconds.labels(kind=key.kind).observe(max(0.0, lag))
            if patch_status:
                try:
                    await self.transition(
                        key,
                        role,
                        status,
                        phase,
                        reason,
                        message,
                        generation,
                        event_type=event_type,
                        crash_prefix="revoke",
                    )
                except FinalPhaseError:
                    self._ended.add(key)
                return
            # The owner is going away: its Event and audit line are all that remain.
            metrics.requests_total.labels(kind=key.kind, outcome=OUTCOMES[phase]).inc()
            await self.event(key, event_type, reason, message)
            self.audit(phase.lower(), key, status, role, reason, message)
            self._ended.add(key)

    async def expire(self, key: GrantKey, deadline: datetime) -> None:
        """The scheduler's callback: end the grant if it is (still) due."""
        body = await self.kube.get_owner(key, revoking=True)
        if body is None or (body.get("metadata") or {}).get("uid") != key.uid:
            return
        self.note(key, body)
        status = parse_status(key.kind, body)
        if status.phase != Phase.ACTIVE or status.expires_at is None:
            return
        if status.expires_at > self.clock():
            self.scheduler.schedule(key, status.expires_at)
            self._warn_before(key, status.expires_at)
            return
        await self.end(
            key,
            parse_role(body),
            status,
            Phase.EXPIRED,
            "Expired",
            f"Access ended at {format_time(status.expires_at)}, as granted.",
            (body.get("metadata") or {}).get("generation"),
        )

    def _warn_before(self, key: GrantKey, expires_at: datetime) -> None:
        """Schedule the "expiring soon" notice, unless the whole grant is shorter than that."""
        warning = timedelta(seconds=self.settings.notify_expiry_warning)
        if warning > timedelta(0) and expires_at - warning > self.clock():
            self.scheduler.schedule(key, expires_at - warning, EXPIRY_WARNING)

    async def expiring_soon(self, key: GrantKey, deadline: datetime) -> None:
        """The scheduler's warning callback: one Event and one audit line, which the notifier
        forwards."""
        body = await self.kube.get_owner(key)
        if body is None or (body.get("metadata") or {}).get("uid") != key.uid:
            return
        status = parse_status(key.kind, body)
        if status.phase != Phase.ACTIVE or status.expires_at is None:
            return
        if status.expires_at <= self.clock():
            return
        message = f"Access ends at {format_time(status.expires_at)}."
        await self.event(key, "Normal", "ExpiringSoon", message)
        self.audit("expiring-soon", key, status, parse_role(body), "ExpiringSoon", message)

    async def owner_deleted(self, kind: str, body: Mapping[str, Any]) -> None:
        """Deleting an owner revokes at once; the Event is written before the object goes."""
        key = key_of(kind, body)
        self.note(key, body)
        status = parse_status(kind, body)
        if status.phase != Phase.ACTIVE:
            self.scheduler.cancel(key)
            return
        await self.end(
            key,
            parse_role(body),
            status,
            Phase.REVOKED,
            f"{kind}Deleted",
            f"Access ended because the {kind} was deleted.",
            (body.get("metadata") or {}).get("generation"),
            patch_status=False,
        )

    # Bindings -------------------------------------------------------------------------------

    async def binding_event(self, type_: str | None, binding: Mapping[str, Any]) -> None:
        """React to a change of a binding labelled as Lapse's: tampering, deletion, look-alikes."""
        metadata = binding.get("metadata") or {}
        uid = str(metadata.get("uid", ""))
        key = compute_owner_key(binding)
        if key is None:
            await self._warn_lookalike(type_, binding)
            return
        if type_ == "DELETED":
            if uid in self._revoking:
                self._revoking.discard(uid)
                return
            self._desired.pop(uid, None)
            await self._binding_deleted(key, uid)
            return
        if uid in self._revoking or metadata.get("deletionTimestamp"):
            return
        desired = self._desired.get(uid)
        body: Mapping[str, Any] | None = None
        if desired is None:
            body = await self.kube.get_owner(key)
            status = parse_status(key.kind, body) if body else None
            owners = {key.uid: status} if body and status else {}
            reason = compute_sweep_reason(binding, owners, self.clock())
            if reason is not None and reason != SweepReason.EXPIRED:
                await self._remove(binding, reason, key if body else None)
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
                await self._remove(binding, SweepReason.ORPHANED, key)
                return
            self._remember(grant, [ref])
            desired = self._desired[uid]
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
            await self.end(
                key,
                parse_role(body),
                parse_status(key.kind, body),
                Phase.REVOKED,
                "BindingTampered",
                f"{what} was changed to another role; access was revoked.",
                (body.get("metadata") or {}).get("generation"),
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
        await self.event(key, "Warning", "BindingTampered", message)
        body = await self.kube.get_owner(key)
        if body is not None:
            self.audit(
                "restored",
                key,
                parse_status(key.kind, body),
                parse_role(body),
                "BindingTampered",
                message,
            )

    async def _binding_deleted(self, key: GrantKey, uid: str) -> None:
        body = await self.kube.get_owner(key)
        if body is None or (body.get("metadata") or {}).get("uid") != key.uid:
            return
        status = parse_status(key.kind, body)
        if status.phase != Phase.ACTIVE or not any(r.uid == uid for r in status.bindings):
            return
        if status.expires_at is not None and status.expires_at <= self.clock():
            await self.expire(key, status.expires_at)
            return
        metrics.tamper_total.labels(action="revoked").inc()
        await self.end(
            key,
            parse_role(body),
            status,
            Phase.REVOKED,
            "BindingDeleted",
            "The binding carrying this access was deleted by someone else; access ended "
            "and will not be restored.",
            (body.get("metadata") or {}).get("generation"),
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
            await self.event(
                pretended,
                "Warning",
                "LookAlikeBinding",
                f"{ref.kind} {ref.name} carries Lapse's labels but was not made by Lapse for "
                "this object; Lapse leaves it alone.",
            )

    async def _remove(
        self, binding: Mapping[str, Any], reason: SweepReason, owner: GrantKey | None
    ) -> None:
        ref = compute_binding_ref(binding)
        if not await self._delete_binding(ref):
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
            await self.event(owner, "Normal", "BindingRemoved", message)

    # Sweep ----------------------------------------------------------------------------------

    async def sweep(self, *, full: bool = True) -> int:
        """Remove every binding past its time, orphaned or ended; end grants whose binding
        vanished. Returns how many bindings were removed.

        The full sweep (at start-up, when nothing is known yet) lists every owner. The periodic
        one starts from what this process already knows, the active grants in its scheduler,
        lists only the bindings' metadata, and reads an owner only for a binding that looks
        wrong: its memory and its calls stay proportional to what needs attention.
        """
        now = self.clock()
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
        async for page in self.kube.binding_metadata_pages(MANAGED_SELECTOR):
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
            for gone, _, entry, reason in judged:
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
                removals.append((gone, reason, entry.key if entry else None))
        # Access ends first: every binding that must go is deleted before any record is written.
        await self._bounded(
            [partial(self._remove, binding, reason, owner) for binding, reason, owner in removals]
            + [partial(self._delete_bindings, status) for _, status in expiring.values()]
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
                if owner.key.uid not in seen_owners and owner.key not in self._ended
            ]
            read = await self._gather_bounded([partial(self._read_swept_owner, k) for k in unseen])
            candidates = [owner for owner in read if owner is not None]
        jobs: list[Callable[[], Awaitable[Any]]] = []
        for index, owner in enumerate(candidates):
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            if owner.status.phase != Phase.ACTIVE or owner.key in self._ended or owner.deleting:
                continue
            if any(ref.uid in live_uids for ref in owner.status.bindings):
                continue
            expires_at = owner.status.expires_at
            if expires_at is not None and expires_at <= now:
                jobs.append(partial(self.expire, owner.key, expires_at))
                continue
            jobs.append(partial(self._binding_deleted_while_away, owner))
        await self._bounded(jobs)
        return removed

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
                    self.note(owner.key, item)
        except NotFoundError:
            return None
        return found

    async def _read_swept_owner(self, key: GrantKey) -> SweptOwner | None:
        """The owner with `key`'s UID as it is now, or None when it is gone."""
        body = await self.kube.get_owner(key)
        if body is None or (body.get("metadata") or {}).get("uid") != key.uid:
            return None
        self.note(key, body)
        return SweptOwner.of(key.kind, body)

    async def _end_swept(self, owner: SweptOwner, status: GrantStatus, now: datetime) -> None:
        due = format_time(status.expires_at or now)
        await self.end(
            owner.key,
            owner.role,
            status,
            Phase.EXPIRED,
            "Expired",
            f"Access ended at {due}, as granted.",
            owner.generation,
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
        metrics.tamper_total.labels(action="revoked").inc()
        await self.end(
            owner.key,
            owner.role,
            owner.status,
            Phase.REVOKED,
            "BindingDeleted",
            "The binding carrying this access is gone; access ended and will not be restored.",
            owner.generation,
            event_type="Warning",
        )

    async def sweep_forever(self) -> None:
        interval = timedelta(seconds=self.settings.sweep_interval).total_seconds()
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


def reason_text(reason: SweepReason) -> str:
    return {
        SweepReason.EXPIRED: "expired",
        SweepReason.ORPHANED: "no owner any more",
        SweepReason.ENDED: "ended",
    }[reason]
