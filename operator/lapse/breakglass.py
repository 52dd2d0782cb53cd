"""Break-glass on the grant machinery: granted at once, loud, reviewed afterwards.

A BreakGlass is one more kind of grant owner, so binding, expiry, revocation, tamper handling,
the sweep and the audit trail are the grant machinery's (`lapse.grantor`, `lapse.guard`,
`lapse.sweeper`, `lapse.reporting`). What is particular to emergencies lives
here: the decision without an approval wait, Warning Events in every namespace it reaches, the
review deadline (a second kind of deadline on the one scheduler), the reviewed/overdue state
behind `lapse_breakglass_unreviewed`, and the `review` and `revoke` actions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from lapse import metrics
from lapse.core.actions import (
    Action,
    ActionAdmission,
    DecisionRecord,
    ObjectIdentity,
    compute_action_admission,
    compute_action_refusal,
    compute_verified_decisions,
)
from lapse.core.bindings import RBAC_API_VERSION, format_time, parse_time
from lapse.core.breakglass import (
    BreakGlassDecision,
    ReviewStep,
    compute_authority,
    compute_breakglass_decision,
    compute_breakglass_grant,
    compute_next_review_deadline,
    compute_overdue,
    compute_review_schedule,
    compute_review_step,
    compute_reviewed,
    compute_verdict_refusal,
    is_overdue,
)
from lapse.core.durations import format_duration
from lapse.core.grants import Grant, GrantKey, compute_subject
from lapse.core.kinds import BREAK_GLASS
from lapse.core.models import (
    AccessPolicy,
    BindingRef,
    BreakGlass,
    BreakGlassStatus,
    GrantStatus,
    Phase,
    UserInfo,
)
from lapse.core.owners import key_of, parse_generation, parse_role, parse_status
from lapse.core.policy import Outcome
from lapse.core.requester import compute_requester_verified
from lapse.core.sentences import compute_quoted, compute_sentence
from lapse.grantor import Grantor
from lapse.policies import PolicyReader

logger = logging.getLogger(__name__)

KIND = BREAK_GLASS.kind
# The scheduler's deadline kind for reviews falling due.
REVIEW = "review"


def parse_glass_status(body: Mapping[str, Any]) -> BreakGlassStatus:
    status = parse_status(KIND, body)
    assert isinstance(status, BreakGlassStatus)
    return status


class BreakGlassKeeper:
    def __init__(self, grantor: Grantor, *, key: bytes, policies: PolicyReader) -> None:
        self.grantor = grantor
        self.policies = policies
        self.kube = grantor.kube
        self.reporter = grantor.reporter
        # The operator's signing key (lapse.signing): requesters and decisions carry its MACs.
        self.key = key
        # Break-glasses past their review deadline without a review, as last seen.
        self._overdue: set[GrantKey] = set()
        grantor.scheduler.on(REVIEW, self.review_due)

    def _clock(self) -> datetime:
        return self.grantor.clock()

    def _track(self, key: GrantKey, status: BreakGlassStatus | None) -> None:
        """Keep the review deadline scheduled and the unreviewed gauge true for `key`."""
        now = self._clock()
        if status is not None and is_overdue(status, now):
            self._overdue.add(key)
        else:
            self._overdue.discard(key)
        metrics.breakglass_unreviewed.set(len(self._overdue))
        upcoming = compute_next_review_deadline(status, now) if status is not None else None
        if upcoming is None:
            self.grantor.scheduler.cancel(key, REVIEW)
        else:
            self.grantor.scheduler.schedule(key, upcoming, REVIEW)

    # Creation and resumption ----------------------------------------------------------------

    async def reconcile(self, body: Mapping[str, Any], policies: Sequence[AccessPolicy]) -> None:
        """Decide and grant a new BreakGlass, or pick an existing one up again; safe to repeat."""
        key = key_of(KIND, body)
        self.reporter.note(key, body)
        status = parse_glass_status(body)
        if status.phase is None and key in self.grantor.ended:
            # Read before this process ended it (kopf's listing at start-up, when the sweep
            # ended a grant whose record never landed): acting on it would grant afresh.
            return
        if status.phase is not None:
            await self.grantor.resume(key, parse_role(body), status)
            self._track(key, status)
            return
        try:
            glass = BreakGlass.model_validate(body)
        except ValidationError as error:
            await self.reporter.unreadable(key, body, status, error, what="break-glass")
            return
        if not compute_requester_verified(KIND, body, self.key):
            await self.reporter.transition(
                key,
                role=glass.spec.role,
                status=status,
                phase=Phase.INVALID,
                reason="UnverifiedRequester",
                message="spec.requester does not carry Lapse's admission signature: the "
                "break-glass was not admitted through the Lapse webhook, so nobody can tell who "
                "asked.",
                generation=glass.metadata.generation,
                event_type="Warning",
            )
            return
        existing = await self.kube.existing_namespaces(list(glass.spec.namespaces))
        decision = compute_breakglass_decision(glass, policies, existing)
        if decision.outcome == Outcome.GRANT:
            await self.activate(glass, decision)
            return
        if decision.outcome == Outcome.INVALID:
            metrics.errors_total.labels(error="invalid").inc()
        await self.reporter.transition(
            key,
            role=glass.spec.role,
            status=status.model_copy(
                update={"requester": glass.spec.requester, "policy": decision.policy}
            ),
            phase=Phase.INVALID if decision.outcome == Outcome.INVALID else Phase.DENIED,
            reason=decision.reason,
            message=decision.message,
            generation=glass.metadata.generation,
            event_type="Warning",
        )

    async def activate(self, glass: BreakGlass, decision: BreakGlassDecision) -> None:
        requester = glass.spec.requester
        review = decision.review
        assert requester is not None and decision.duration is not None and review is not None
        duration = decision.duration
        spec = glass.spec

        def describe(grant: Grant) -> str:
            where = (
                f"in namespace(s) {', '.join(grant.namespaces)}"
                if grant.namespaces
                else "cluster-wide"
            )
            incident = f"incident {spec.incident}, " if spec.incident else ""
            return (
                f"BREAK-GLASS: {requester.username} holds {spec.role.kind} {spec.role.name} "
                f"{where} for {format_duration(duration)}, until "
                f"{format_time(grant.expires_at)} ({incident}AccessPolicy {decision.policy}); "
                f"reason: {compute_sentence(spec.reason)} A review is due within "
                f"{review.deadline}."
            )

        def finish(status: GrantStatus) -> GrantStatus:
            assert isinstance(status, BreakGlassStatus)
            return compute_review_schedule(status, review, self._clock(), glass.metadata.generation)

        key = key_of(KIND, glass.to_wire())
        # What the glass gives, for the alert and the review: read before the binding exists,
        # so "already had" is what the SRE held without it. Where it reaches several
        # namespaces, the first speaks for them.
        risk = await self.grantor.assessor.assess(
            spec.role,
            spec.namespaces[0] if spec.namespaces else None,
            compute_subject(requester, None),
            requester,
        )
        new = await self.grantor.activate(
            lambda expires_at: compute_breakglass_grant(
                glass, requester, decision.policy, expires_at
            ),
            duration,
            glass.status.model_copy(update={"risk": risk}),
            glass.metadata,
            describe,
            finish=finish,
            event_type="Warning",
            reason="BreakGlassActivated",
            action="activated",
        )
        if not isinstance(new, BreakGlassStatus):
            return
        self._track(key, new)
        for ref in new.bindings:
            if ref.namespace:
                await self._namespace_event(ref, new.message or "")

    async def _namespace_event(self, ref: BindingRef, message: str) -> None:
        """The Warning in the namespace itself, where its owners look, on the binding there."""
        involved = {
            "apiVersion": RBAC_API_VERSION,
            "kind": ref.kind,
            "name": ref.name,
            "namespace": ref.namespace,
            "uid": ref.uid,
        }
        await self.reporter.post_event(
            involved, ref.namespace or "default", "Warning", "BreakGlassActivated", message
        )

    # The review -----------------------------------------------------------------------------

    async def review_due(self, key: GrantKey, deadline: datetime) -> None:
        """The scheduler's callback for reviews: raise the alarm, or revoke when told to."""
        body = await self._fetch(key)
        if body is None:
            return
        status = parse_glass_status(body)
        now = self._clock()
        if compute_review_step(status, now) == ReviewStep.REVOKE:
            revoke_at = format_time(status.revoke_unreviewed_at or now)
            await self.grantor.end(
                key,
                role=parse_role(body),
                status=status,
                phase=Phase.REVOKED,
                reason="Unreviewed",
                message=f"No review arrived by {revoke_at}; Lapse revoked the access that was "
                "still active, as the policy's review.revokeIfUnreviewedAfter says.",
                generation=parse_generation(body),
                event_type="Warning",
            )
            body = await self._fetch(key)
            if body is None:
                return
            status = parse_glass_status(body)
        if compute_review_step(status, now) == ReviewStep.RAISE:
            async with self.grantor.lock(key):
                status = await self._raise_overdue(key, body, now)
        self._track(key, status)

    async def _raise_overdue(
        self, key: GrantKey, body: Mapping[str, Any], now: datetime
    ) -> BreakGlassStatus:
        fresh = await self._fetch(key) or body
        status = parse_glass_status(fresh)
        if compute_review_step(status, now) != ReviewStep.RAISE:
            return status
        flagged = compute_overdue(status, now, parse_generation(fresh))
        await self.kube.patch_status(
            key, {"status": {"conditions": [c.to_wire() for c in flagged.conditions]}}
        )
        due = format_time(status.review_deadline or now)
        who = status.requester.username if status.requester else "someone"
        message = (
            f"The review of this break-glass by {who} was due at {due} and has not been "
            "recorded; a reviewer runs: kubectl annotate breakglass "
            f"{key.name} lapse.dev/review='Justified: COMMENT' (or Unjustified)."
        )
        await self.reporter.event(key, "Warning", "ReviewOverdue", message)
        self.reporter.audit("review-due", key, flagged, parse_role(fresh), "ReviewOverdue", message)
        return flagged

    # Actions --------------------------------------------------------------------------------

    async def admit(
        self,
        old: Mapping[str, Any],
        new: Mapping[str, Any],
        actor: UserInfo,
        policies: Sequence[AccessPolicy],
    ) -> ActionAdmission:
        """The UPDATE webhook's answer to `review` and `revoke` annotations."""
        old_annotations = (old.get("metadata") or {}).get("annotations") or {}
        new_annotations = (new.get("metadata") or {}).get("annotations") or {}
        verdict = new_annotations.get(Action.REVIEW.annotation)
        if verdict is not None and old_annotations.get(Action.REVIEW.annotation) != verdict:
            refusal = compute_verdict_refusal(verdict)
            if refusal is not None:
                return ActionAdmission(refusal=refusal)
        try:
            glass = BreakGlass.model_validate(old or new)
        except ValidationError:
            return ActionAdmission(refusal="This break-glass cannot be read; delete it instead.")
        # Judged by the granting policy even when the policy index lags (lapse.policies).
        policies = await self.policies.complete(policies, glass.status.policy)
        authority = compute_authority(glass, policies, self.grantor.settings.admin_groups)
        target = ObjectIdentity(KIND, None, glass.metadata.name, glass.metadata.uid or "")
        return compute_action_admission(
            old_annotations, new_annotations, actor, authority, target, self.key, self._clock()
        )

    async def act(self, body: Mapping[str, Any], policies: Sequence[AccessPolicy]) -> None:
        """Carry out the verified `review` and `revoke` records; a record whose rule no longer
        holds (already reviewed, access already ended) does nothing, so this is safe to repeat."""
        key = key_of(KIND, body)
        self.reporter.note(key, body)
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        target = ObjectIdentity(KIND, None, key.name, key.uid)
        verified = compute_verified_decisions(annotations, target, self.key)
        if verified.forged:
            metrics.tamper_total.labels(action="ignored").inc()
        for record in verified.records:
            current = await self._fetch(key)
            if current is None:
                return
            try:
                glass = BreakGlass.model_validate(current)
            except ValidationError:
                return
            authority = compute_authority(glass, policies, self.grantor.settings.admin_groups)
            if compute_action_refusal(record.action, record.user, authority) is not None:
                continue
            if record.action == Action.REVIEW:
                await self._record_review(key, record)
            elif record.action == Action.REVOKE:
                await self._revoke(key, current, record)

    async def _record_review(self, key: GrantKey, record: DecisionRecord) -> None:
        async with self.grantor.lock(key):
            body = await self._fetch(key)
            if body is None:
                return
            status = parse_glass_status(body)
            if status.review is not None:
                return
            now = self._clock()
            at = parse_time(record.at) or now
            reviewed = compute_reviewed(
                status, record.user, record.comment, at, now, parse_generation(body)
            )
            assert reviewed.review is not None
            await self.kube.patch_status(
                key,
                {
                    "status": {
                        "review": reviewed.review.to_wire(),
                        "conditions": [c.to_wire() for c in reviewed.conditions],
                    }
                },
            )
        review = reviewed.review
        message = compute_quoted(
            f"{review.reviewer.username} reviewed this break-glass: {review.verdict}",
            review.comment,
        )
        event_type = "Normal" if review.verdict == "Justified" else "Warning"
        await self.reporter.event(key, event_type, f"Reviewed{review.verdict}", message)
        self.reporter.audit(
            "reviewed", key, reviewed, parse_role(body), f"Reviewed{review.verdict}", message
        )
        self._track(key, reviewed)

    async def _revoke(self, key: GrantKey, body: Mapping[str, Any], record: DecisionRecord) -> None:
        await self.grantor.end(
            key,
            role=parse_role(body),
            status=parse_glass_status(body),
            phase=Phase.REVOKED,
            reason="Revoked",
            message=compute_quoted(f"{record.username} revoked this break-glass", record.comment)
            + " The record stays for the review.",
            generation=parse_generation(body),
            event_type="Warning",
        )
        fresh = await self._fetch(key)
        self._track(key, parse_glass_status(fresh) if fresh else None)

    # Deletion -------------------------------------------------------------------------------

    async def deleted(self, body: Mapping[str, Any]) -> None:
        """Deleting a break-glass revokes at once; its review deadline goes with it."""
        key = key_of(KIND, body)
        self.reporter.note(key, body)
        self.grantor.scheduler.cancel_all(key)
        self._overdue.discard(key)
        metrics.breakglass_unreviewed.set(len(self._overdue))
        await self.grantor.owner_deleted(KIND, body)

    async def _fetch(self, key: GrantKey) -> dict[str, Any] | None:
        return await self.grantor.read_owner(key)
