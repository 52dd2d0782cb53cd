"""Verified revocation: once a grant has ended, ask the API server whether the access is gone.

Runs beside the grant machinery, after the end is recorded, so a slow authorizer never delays
a revocation; its answer becomes the grant's `Verified` condition, an Event, an audit line and
`lapse_revocations_verified_total{result}` (`AccessRemains` also raises the alertable
`lapse_revocations_unverified` gauge until a later grant end verifies cleanly).
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
from lapse.core.verification import (
    VERIFIED,
    build_access_review,
    compute_access_checks,
    compute_verification,
)
from lapse.kube import ApiError, KubeApi
from lapse.reporting import Clock, Reporter

logger = logging.getLogger(__name__)
EVENTS = {
    "AccessGone": ("Normal", "RevocationVerified"),
    "NothingToCheck": ("Normal", "RevocationVerified"),
    "HeldElsewhere": ("Normal", "AccessHeldElsewhere"),
    "AccessRemains": ("Warning", "AccessRemains"),
}
# Checks at once. Ten thousand grants may end within minutes, each check a dozen calls: run
# all at once they crowd the event loop, and the revocations behind them wait their turn.
# A check a few seconds late costs nothing; a revocation a second late is a defect.
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
    ) -> None:
        self.kube = kube
        self.reporter = reporter
        self.clock = clock
        # Whether revocations need the event loop now: checks wait for a quiet moment.
        self.busy = busy
        self.unverified: set[GrantKey] = set()
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def verify(self, key: GrantKey, role: RoleRef | None, status: GrantStatus) -> None:
        """Check the ended grant `status` described; never raises."""
        try:
            async with self._slots:
                await self._quiet()
                await self._verify(key, role, status)
        except (ApiError, OSError, TimeoutError, RuntimeError) as error:
            # RuntimeError: the operator is stopping and its client is closed.
            logger.warning("Could not verify the revocation of %s: %s", key.describe(), error)

    async def _quiet(self) -> None:
        waited = 0.0
        while self.busy() and waited < PATIENCE:
            await asyncio.sleep(QUIET_POLL)
            waited += QUIET_POLL

    async def _verify(self, key: GrantKey, role: RoleRef | None, status: GrantStatus) -> None:
        requester = status.requester
        if role is None or requester is None:
            return
        subject = status.subject or compute_subject(requester, None)
        rules = await self.kube.get_role_rules(role.kind.value, role.name, key.namespace) or []
        namespaces = [b.namespace for b in status.bindings if b.namespace]
        answers = []
        for check in compute_access_checks(rules, namespaces):
            review = await self.kube.create_access_review(
                build_access_review(check, subject, requester)
            )
            answer = review.get("status") or {}
            answers.append((check, bool(answer.get("allowed")), str(answer.get("reason") or "")))
        left = []
        for ref in status.bindings:
            live = await self.kube.get_binding(ref)
            if live is not None and (live.get("metadata") or {}).get("uid") == ref.uid:
                left.append(ref.name)
        verdict = compute_verification(answers, left)
        metrics.revocations_verified_total.labels(result=verdict.reason).inc()
        if verdict.status == "False":
            self.unverified.add(key)
        else:
            self.unverified.discard(key)
        metrics.revocations_unverified.set(len(self.unverified))
        body = await self.kube.get_owner(key)
        if body is not None:
            current = parse_status(key.kind, body)
            conditions = compute_conditions(
                current.conditions,
                VERIFIED,
                "True" if verdict.status == "True" else "False",
                verdict.reason,
                verdict.message,
                self.clock(),
                parse_generation(body),
            )
            await self.kube.patch_status(
                key, {"status": {"conditions": [c.to_wire() for c in conditions]}}
            )
        event_type, reason = EVENTS[verdict.reason]
        await self.reporter.event(key, event_type, reason, verdict.message)
        self.reporter.audit("verified", key, status, role, verdict.reason, verdict.message)
