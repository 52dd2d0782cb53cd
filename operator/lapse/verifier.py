"""Verified revocation: once a grant has ended, ask the API server whether the access is gone.

Runs beside the grant machinery, after the end is recorded, so a slow authorizer never delays
a revocation; under load the checks wait (never dropped) until no deadline is near. Its answer
becomes the grant's `Verified` condition, an audit line and
`lapse_revocations_verified_total{result}`; an answer that is not plain `AccessGone` is also
an Event (`AccessRemains`, a Warning, raises the alertable `lapse_revocations_unverified`
gauge until a later grant end verifies cleanly).

It asks as little as proves the point (see lapse.core.verification): the role's rules come
from the RBAC index, the end's own status write is the status it updates, and one denied
review a place is enough. At ten thousand grants every request it does not make is one the
API server does not queue in front of someone else's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from lapse import metrics
from lapse.core.conditions import compute_conditions
from lapse.core.grants import GrantKey, compute_subject
from lapse.core.models import GrantStatus, RoleRef
from lapse.core.owners import parse_generation, parse_status
from lapse.core.rbac import Rule, parse_rules
from lapse.core.verification import (
    VERIFIED,
    AccessCheck,
    Verification,
    build_access_review,
    compute_access_checks,
    compute_next_check,
    compute_verification,
)
from lapse.kube import ApiError, KubeApi
from lapse.rbac import NoRoles, Roles
from lapse.reporting import Clock, Reporter

logger = logging.getLogger(__name__)
# Only what needs a reader gets an Event: a clean verification is in the condition and the
# audit line, and an Event per grant would be one more write to the API server each.
EVENTS = {
    "HeldElsewhere": ("Normal", "AccessHeldElsewhere"),
    "AccessRemains": ("Warning", "AccessRemains"),
}
# Checks at once. Ten thousand grants may end within minutes: run all at once they crowd the
# event loop, and the revocations behind them wait their turn. A check a few seconds late
# costs nothing; a revocation a second late is a defect.
CONCURRENCY = 4
# So a check also waits while revocations are under way or about to be, looking again this
# often, but never longer than PATIENCE: under an endless stream of ends it still runs.
QUIET_POLL = 0.25
PATIENCE = 60.0


class Verifier:
    def __init__(
        self,
        kube: KubeApi,
        reporter: Reporter,
        clock: Clock,
        busy: Callable[[], bool] = lambda: False,
        roles: Roles | None = None,
        keep_every_verdict: bool = False,
    ) -> None:
        self.kube = kube
        # The audit trail is made from the status (lapse.exporter): with a sink configured,
        # a clean verdict checked later is written there too, or the trail would lack it.
        self.keep_every_verdict = keep_every_verdict
        self.reporter = reporter
        self.clock = clock
        # Whether revocations need the event loop now: checks wait for a quiet moment.
        self.busy = busy
        self.roles: Roles = roles or NoRoles()
        self.unverified: set[GrantKey] = set()
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._tasks: set[asyncio.Task[None]] = set()
        self.waiting = 0

    def later(
        self,
        key: GrantKey,
        role: RoleRef | None,
        status: GrantStatus,
        *,
        recorded: GrantStatus | None = None,
        generation: int | None = None,
    ) -> None:
        """Check the ended grant in a task of its own (see `verify`): a slow authorizer must
        never hold up the next revocation."""
        task = asyncio.create_task(
            self.verify(key, role, status, recorded=recorded, generation=generation)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Cancel the checks still waiting or running, before the client they use is closed."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def can_check_now(self) -> bool:
        """Whether a check may run before the end is recorded: no deadline needs the loop."""
        return not self.busy()

    async def check(
        self, key: GrantKey, role: RoleRef | None, status: GrantStatus
    ) -> Verification | None:
        """Ask the API server about the ended grant `status` described: the verdict, or None
        when there is nothing to ask about (no role or requester) or the asking failed."""
        requester = status.requester
        if role is None or requester is None:
            return None
        try:
            subject = status.subject or compute_subject(requester, None)
            rules = await self._rules(role, key.namespace)
            namespaces = [b.namespace for b in status.bindings if b.namespace]
            checks = compute_access_checks(rules, namespaces)
            answers: list[tuple[AccessCheck, bool, str]] = []
            while (check := compute_next_check(checks, answers)) is not None:
                review = await self.kube.create_access_review(
                    build_access_review(check, subject, requester)
                )
                answer = review.get("status") or {}
                allowed, reason = bool(answer.get("allowed")), str(answer.get("reason") or "")
                answers.append((check, allowed, reason))
        except (ApiError, OSError, TimeoutError) as error:
            logger.warning("Could not verify the revocation of %s: %s", key.describe(), error)
            return None
        metrics.revocation_reviews_total.inc(len(answers))
        return compute_verification(answers, [(b.name, b.namespace) for b in status.bindings])

    def with_verdict(
        self, status: GrantStatus, verdict: Verification, generation: int | None
    ) -> GrantStatus:
        """`status` carrying the verdict as its `Verified` condition."""
        conditions = compute_conditions(
            status.conditions,
            VERIFIED,
            "True" if verdict.status == "True" else "False",
            verdict.reason,
            verdict.message,
            self.clock(),
            generation,
        )
        return status.model_copy(update={"conditions": conditions})

    async def record(
        self, key: GrantKey, role: RoleRef | None, status: GrantStatus, verdict: Verification
    ) -> None:
        """The verdict's metrics, audit line and (when it needs a reader) Event."""
        metrics.revocations_verified_total.labels(result=verdict.reason).inc()
        if verdict.status == "False":
            self.unverified.add(key)
        else:
            self.unverified.discard(key)
        metrics.revocations_unverified.set(len(self.unverified))
        if verdict.reason in EVENTS:
            event_type, reason = EVENTS[verdict.reason]
            await self.reporter.event(key, event_type, reason, verdict.message)
        self.reporter.audit("verified", key, status, role, verdict.reason, verdict.message)

    async def verify(
        self,
        key: GrantKey,
        role: RoleRef | None,
        status: GrantStatus,
        *,
        recorded: GrantStatus | None = None,
        generation: int | None = None,
    ) -> None:
        """Check later the ended grant `status` described, when no deadline is near; never
        raises. `recorded` is the status its end wrote (and `generation` the owner's); a
        verdict that needs a reader is added to it as the `Verified` condition, a clean one
        only to the audit line and the metrics: one write fewer per grant, at the moments
        (waves of ends) when writes are dearest. With a trail sink, every verdict is written:
        the trail is made from the status."""
        self.waiting += 1
        metrics.revocation_checks_waiting.set(self.waiting)
        try:
            async with self._slots:
                if await self._quiet():
                    metrics.revocation_checks_deferred_total.inc()
                verdict = await self.check(key, role, status)
                if verdict is None:
                    return
                if verdict.reason in EVENTS or self.keep_every_verdict:
                    if recorded is None:
                        body = await self.kube.get_owner(key)
                        if body is not None:
                            recorded = parse_status(key.kind, body)
                            generation = parse_generation(body)
                    if recorded is not None:
                        new = self.with_verdict(recorded, verdict, generation)
                        await self.kube.patch_status(
                            key, {"status": {"conditions": [c.to_wire() for c in new.conditions]}}
                        )
                await self.record(key, role, status, verdict)
        except (ApiError, OSError, TimeoutError, RuntimeError) as error:
            # RuntimeError: the operator is stopping and its client is closed.
            logger.warning("Could not verify the revocation of %s: %s", key.describe(), error)
        finally:
            self.waiting -= 1
            metrics.revocation_checks_waiting.set(self.waiting)

    async def _quiet(self) -> bool:
        """Wait while deadlines need the loop; whether the check was deferred."""
        waited = 0.0
        while self.busy() and waited < PATIENCE:
            await asyncio.sleep(QUIET_POLL)
            waited += QUIET_POLL
        return waited > 0

    async def _rules(self, role: RoleRef, namespace: str | None) -> tuple[Rule, ...]:
        kind = role.kind.value
        known = self.roles.role_rules(kind, role.name, namespace if kind == "Role" else None)
        if known is None:
            known = await self.kube.get_role_rules(kind, role.name, namespace)
        return parse_rules(known)
