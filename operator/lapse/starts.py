"""AccessRequests decided ahead: scheduled starts and extensions, bound at their moment.

A request that names `spec.startAt`, or `spec.extends` an active grant, is judged at once like
any other and then waits, Scheduled, with its window fixed. One scheduler deadline binds it at
the start; for an extension the grant machinery also calls `hand_over` as the extended grant
expires, before that grant's bindings go, so the subject holds the role throughout. Both
paths take the same lock and re-read the request, so whichever comes first binds and the other
finds it Active. Only one extension ever continues a grant: it claims the extended request's
`status.extendedBy` with a resourceVersion precondition before it is Scheduled.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from lapse import metrics
from lapse.core.bindings import format_time
from lapse.core.durations import format_duration
from lapse.core.grants import Grant, GrantKey, compute_request_grant, compute_request_key
from lapse.core.kinds import ACCESS_REQUEST
from lapse.core.models import (
    AccessPolicy,
    AccessRequest,
    AccessRequestStatus,
    GrantStatus,
    Phase,
)
from lapse.core.owners import key_of
from lapse.core.policy import Decision, Outcome
from lapse.core.windows import (
    Refusal,
    Window,
    compute_extension_chain,
    compute_extension_refusal,
    compute_extension_window,
    compute_lead_refusal,
    compute_scheduled_window,
)
from lapse.grantor import Grantor
from lapse.kube import ConflictError, RefusedError

logger = logging.getLogger(__name__)

START = "start"
KIND = ACCESS_REQUEST.kind
# How often a claim on the extended request is tried when other writes keep moving it.
CLAIM_ATTEMPTS = 5


class StartKeeper:
    def __init__(self, grantor: Grantor) -> None:
        self.grantor = grantor
        self.kube = grantor.kube
        self.reporter = grantor.reporter
        self.scheduler = grantor.scheduler
        self._locks: weakref.WeakValueDictionary[GrantKey, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.scheduler.on(START, self.due)
        grantor.handovers[KIND] = self.hand_over

    def _gauge(self) -> None:
        metrics.scheduled_grants.set(self.scheduler.count(START))

    # Deciding ---------------------------------------------------------------------------------

    async def read_extended(self, request: AccessRequest) -> AccessRequest | None:
        name = request.spec.extends
        if not name:
            return None
        key = GrantKey(KIND, request.metadata.namespace, name, "")
        body = await self.kube.get_owner(key)
        if body is None:
            return None
        try:
            return AccessRequest.model_validate(body)
        except ValidationError:
            return None

    async def screen(
        self, request: AccessRequest, decision: Decision, policy: AccessPolicy | None
    ) -> Decision:
        """A first decision that would grant, or ask for approval, refused early when the
        request starts too far ahead or cannot extend what it names."""
        if decision.outcome not in (Outcome.GRANT, Outcome.PENDING) or policy is None:
            return decision
        refusal = compute_lead_refusal(request, policy)
        if refusal is None and request.spec.extends and decision.duration is not None:
            extended = await self.read_extended(request)
            refusal = compute_extension_refusal(request, extended, policy, decision.duration)
        if refusal is None:
            return decision
        if request.spec.extends:
            metrics.extensions_total.labels(outcome="refused").inc()
        return Decision(Outcome.DENY, refusal.reason, refusal.message, policy=decision.policy)

    async def schedule(
        self, request: AccessRequest, decision: Decision, policy: AccessPolicy | None
    ) -> None:
        """A granted request that begins later: Scheduled now, bound at its start."""
        assert decision.duration is not None and policy is not None
        key = compute_request_key(request)
        status = request.status
        now = self.grantor.clock()
        update: dict[str, Any] = {}
        if request.spec.extends:
            claimed = await self._claim(request, policy, decision.duration)
            if isinstance(claimed, Refusal):
                metrics.extensions_total.labels(outcome="refused").inc()
                await self._refuse(key, request, status, claimed, Phase.DENIED)
                return
            window, extended = claimed
            update["chain"] = compute_extension_chain(extended.metadata.name, extended.status)
            what = (
                f"Extends AccessRequest {request.spec.extends}: access continues from "
                f"{format_time(window.starts_at)}, when that grant ends, until "
                f"{format_time(window.expires_at)}."
            )
            metrics.extensions_total.labels(outcome="scheduled").inc()
        else:
            window = compute_scheduled_window(request, decision.duration, now)
            what = (
                f"Access begins at {format_time(window.starts_at)} and ends at "
                f"{format_time(window.expires_at)} (AccessPolicy {decision.policy})."
            )
        status = status.model_copy(
            update={
                **update,
                "policy": decision.policy,
                "duration": format_duration(window.duration),
                "starts_at": window.starts_at,
                "expires_at": window.expires_at,
            }
        )
        scheduled = await self.reporter.transition(
            key,
            role=request.spec.role,
            status=status,
            phase=Phase.SCHEDULED,
            reason="Scheduled",
            message=what,
            generation=request.metadata.generation,
        )
        assert isinstance(scheduled, AccessRequestStatus)
        self.scheduler.schedule(key, window.starts_at, START)
        self._gauge()
        if window.starts_at <= now:
            await self.begin(key)

    async def _claim(
        self, request: AccessRequest, policy: AccessPolicy, duration: timedelta
    ) -> tuple[Window, AccessRequest] | Refusal:
        """Write this extension's name into the extended request's `status.extendedBy`, only
        if nobody did since it was read: of two extensions, the first to claim wins."""
        name = request.metadata.name
        for _ in range(CLAIM_ATTEMPTS):
            extended = await self.read_extended(request)
            refusal = compute_extension_refusal(request, extended, policy, duration)
            if refusal is not None:
                return refusal
            assert extended is not None
            window = compute_extension_window(extended.status, duration)
            assert window is not None
            if extended.status.extended_by == name:
                return window, extended
            target = GrantKey(
                KIND,
                extended.metadata.namespace,
                extended.metadata.name,
                extended.metadata.uid or "",
            )
            operations: list[dict[str, Any]] = [
                {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": extended.metadata.resource_version,
                },
                {"op": "add", "path": "/status/extendedBy", "value": name},
            ]
            try:
                await self.kube.json_patch_status(target, operations)
            except (ConflictError, RefusedError):
                continue
            self.grantor.deadlines.will_hand_over(target)
            await self.reporter.event(
                target,
                "Normal",
                "ExtensionScheduled",
                f"AccessRequest {name} continues this grant from {format_time(window.starts_at)} "
                f"until {format_time(window.expires_at)}.",
            )
            return window, extended
        return Refusal(
            "AlreadyExtended",
            f"AccessRequest {request.spec.extends} kept changing while this extension claimed "
            "it; ask again.",
        )

    async def _refuse(
        self,
        key: GrantKey,
        request: AccessRequest,
        status: AccessRequestStatus,
        refusal: Refusal,
        phase: Phase,
    ) -> None:
        await self.reporter.transition(
            key,
            role=request.spec.role,
            status=status,
            phase=phase,
            reason=refusal.reason,
            message=refusal.message,
            generation=request.metadata.generation,
            event_type="Warning",
        )

    # Beginning --------------------------------------------------------------------------------

    def resume(self, key: GrantKey, status: GrantStatus) -> None:
        """After a restart (or a repeated event): a scheduled request waits for its start."""
        if status.phase == Phase.SCHEDULED and status.starts_at is not None:
            self.scheduler.schedule(key, status.starts_at, START)
            self._gauge()

    def cancel(self, key: GrantKey) -> None:
        self.scheduler.cancel(key, START)
        self._gauge()

    async def cancel_extension(self, key: GrantKey, name: str) -> None:
        """The grant `key` was revoked: its scheduled extension ends with it, unused."""
        body = await self.kube.get_owner(GrantKey(KIND, key.namespace, name, ""))
        if body is None:
            return
        extension = key_of(KIND, body)
        async with self._locks.setdefault(extension, asyncio.Lock()):
            body = await self.grantor.read_owner(extension)
            if body is None:
                return
            try:
                request = AccessRequest.model_validate(body)
            except ValidationError:
                return
            if request.status.phase != Phase.SCHEDULED:
                return
            self.cancel(extension)
            metrics.extensions_total.labels(outcome="cancelled").inc()
            refusal = Refusal(
                "ExtendedGrantEnded",
                f"AccessRequest {key.name}, which this one extends, was revoked; the "
                "extension ends with it, unused.",
            )
            await self._refuse(extension, request, request.status, refusal, Phase.REVOKED)

    async def due(self, key: GrantKey, deadline: datetime) -> None:
        self._gauge()
        await self.begin(key)

    async def hand_over(self, key: GrantKey, status: GrantStatus) -> str | None:
        """The extended grant `key` is expiring: bind its extension first. Says what continues
        the access, or None when nothing does."""
        if not isinstance(status, AccessRequestStatus) or not status.extended_by:
            return None
        body = await self.kube.get_owner(GrantKey(KIND, key.namespace, status.extended_by, ""))
        if body is None:
            return None
        began = await self.begin(key_of(KIND, body))
        if began is None or began.phase != Phase.ACTIVE or began.expires_at is None:
            return None
        metrics.extensions_total.labels(outcome="handed_over").inc()
        return (
            f"Access continues under AccessRequest {status.extended_by} until "
            f"{format_time(began.expires_at)}."
        )

    async def begin(self, key: GrantKey) -> AccessRequestStatus | None:
        """Bind a scheduled request whose start has come; safe to repeat and to race."""
        async with self._locks.setdefault(key, asyncio.Lock()):
            return await self._begin(key)

    async def _begin(self, key: GrantKey) -> AccessRequestStatus | None:
        body = await self.grantor.read_owner(key)
        if body is None:
            self.cancel(key)
            return None
        try:
            request = AccessRequest.model_validate(body)
        except ValidationError:
            return None
        status = request.status
        if status.phase != Phase.SCHEDULED:
            return status
        now = self.grantor.clock()
        starts_at, expires_at = status.starts_at, status.expires_at
        if starts_at is None or expires_at is None or status.requester is None:
            return status
        if starts_at > now:
            self.scheduler.schedule(key, starts_at, START)
            self._gauge()
            return status
        if request.spec.extends:
            refusal = await self._predecessor_refusal(request, now)
            if refusal is not None:
                metrics.extensions_total.labels(outcome="cancelled").inc()
                await self._refuse(key, request, status, refusal, Phase.REVOKED)
                return None
        if expires_at <= now:
            await self._refuse(
                key,
                request,
                status,
                Refusal(
                    "WindowPassed",
                    f"The window from {format_time(starts_at)} to {format_time(expires_at)} "
                    "passed before Lapse could bind it; nothing was granted.",
                ),
                Phase.EXPIRED,
            )
            return None
        return await self._bind(request, status, Window(max(starts_at, now), expires_at))

    async def _predecessor_refusal(self, request: AccessRequest, now: datetime) -> Refusal | None:
        """An extension begins only from the grant it claimed, as that grant ends as granted:
        revoked, deleted or replaced by a namesake, it takes the extension with it."""
        extended = await self.read_extended(request)
        name = request.spec.extends
        if extended is None or extended.status.extended_by != request.metadata.name:
            return Refusal(
                "ExtendedGrantEnded",
                f"AccessRequest {name} is gone; the extension of it ends with it, unused.",
            )
        phase = extended.status.phase
        if phase == Phase.ACTIVE or (phase == Phase.EXPIRED and extended.status.reason in _HANDED):
            return None
        return Refusal(
            "ExtendedGrantEnded",
            f"AccessRequest {name} ended ({extended.status.reason or phase}) before this "
            "extension began; nothing was granted.",
        )

    async def _bind(
        self, request: AccessRequest, status: AccessRequestStatus, window: Window
    ) -> AccessRequestStatus | None:
        requester = status.requester
        assert requester is not None
        role = request.spec.role
        policy = status.policy

        def describe(grant: Grant) -> str:
            continues = (
                f" It continues AccessRequest {request.spec.extends}."
                if request.spec.extends
                else ""
            )
            return (
                f"Granted {role.kind} {role.name} in namespace {grant.key.namespace} to "
                f"{grant.subject.name} from {format_time(window.starts_at)} until "
                f"{format_time(grant.expires_at)} (AccessPolicy {policy}).{continues}"
            )

        new = await self.grantor.activate(
            lambda expires_at: compute_request_grant(request, requester, policy, expires_at),
            window.duration,
            status,
            request.metadata,
            describe,
            starts_at=window.starts_at,
        )
        if new is None:
            return None
        lag = (self.grantor.clock() - (status.starts_at or window.starts_at)).total_seconds()
        metrics.start_lag_seconds.observe(max(0.0, lag))
        assert isinstance(new, AccessRequestStatus)
        return new


# The reasons an extended grant ends with when its extension took over, or was about to.
_HANDED = frozenset({"Extended", "Expired"})
