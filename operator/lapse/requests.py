"""The AccessRequest keeper: from a new request to Active, through policy and approvals.

A request is decided once, by policy (`lapse.core.policy`) and then by its approvers or its
GitOps merge (`lapse.core.approvals`); only a requester Lapse signed at admission is trusted
(`lapse.core.requester`), and only decisions whose signatures verify count
(`lapse.decisions`). What follows a grant — expiry, revocation, tampering, the sweep — is the
grant machinery's (`lapse.grantor`), which this module calls and which never calls back.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from lapse import metrics
from lapse.core.actions import Action, DecisionRecord
from lapse.core.approvals import (
    ApprovalOutcome,
    build_approval_requirement,
    build_request_authority,
    compute_approval_deadline,
    compute_approval_state,
    compute_approval_timeout,
    compute_revocation,
    describe_identities,
)
from lapse.core.bindings import format_time
from lapse.core.durations import format_duration
from lapse.core.exposure import describe_acting_as, describe_forgery, subject_user
from lapse.core.grants import Grant, GrantKey, compute_request_grant, compute_subject
from lapse.core.kinds import ACCESS_REQUEST
from lapse.core.models import (
    AccessPolicy,
    AccessRequest,
    AccessRequestStatus,
    Phase,
    RiskSummary,
    Subject,
    SubjectKind,
    UserInfo,
)
from lapse.core.owners import key_of, parse_generation, parse_role, parse_status
from lapse.core.policy import (
    Decision,
    Outcome,
    compute_decision,
    needs_namespace_labels,
    parse_policy,
)
from lapse.core.requester import compute_requester_verified
from lapse.core.risk import ACT_AS_APPROVER, compute_capability_decision
from lapse.core.sentences import compute_quoted
from lapse.core.windows import compute_pending_deadline, is_deferred
from lapse.decisions import RequestDecisions
from lapse.exposure import ExposureKeeper
from lapse.gitops import GitOpsApprovals
from lapse.grantor import Grantor
from lapse.ledger import GitOpsLedger
from lapse.starts import StartKeeper

APPROVAL_TIMEOUT = "approval-timeout"
NO_REASON = "no reason given"
KIND = ACCESS_REQUEST.kind


class RequestKeeper:
    def __init__(
        self,
        grantor: Grantor,
        *,
        decisions: RequestDecisions,
        ledger: GitOpsLedger,
        exposure: ExposureKeeper,
    ) -> None:
        self.grantor = grantor
        self.exposure = exposure
        self.kube = grantor.kube
        self.reporter = grantor.reporter
        self.scheduler = grantor.scheduler
        self.decisions = decisions
        self.gitops = GitOpsApprovals(ledger, exposure, self.reporter, grantor.clock)
        self.starts = StartKeeper(grantor)
        self.admin_groups = grantor.settings.admin_groups
        # The latest policies seen, for deadlines that fire outside any handler.
        self.policies: dict[str, AccessPolicy] = {}
        self._pending: set[GrantKey] = set()
        # Approvals already said not to count, so each is said once.
        self._forged: set[tuple[GrantKey, str]] = set()
        self._locks: weakref.WeakValueDictionary[GrantKey, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.scheduler.on(APPROVAL_TIMEOUT, self.timeout)

    async def _policy(self, name: str | None) -> AccessPolicy | None:
        """The policy a status names: as last seen in the index, else read afresh."""
        policy = await self.decisions.policies.named(list(self.policies.values()), name)
        if policy is not None:
            self.policies.setdefault(policy.metadata.name, policy)
        return policy

    def remember(self, policies: Sequence[AccessPolicy]) -> dict[str, AccessPolicy]:
        self.policies = {p.metadata.name: p for p in policies}
        return self.policies

    def _set_pending(self, key: GrantKey, pending: bool) -> None:
        if pending:
            self._pending.add(key)
        else:
            self._pending.discard(key)
        metrics.pending_requests.set(len(self._pending))

    # New requests ---------------------------------------------------------------------------

    async def reconcile(self, body: Mapping[str, Any], policies: Sequence[AccessPolicy]) -> None:
        """Bring one AccessRequest to where its status says it should be; safe to repeat."""
        key = key_of(KIND, body)
        status = parse_status(key.kind, body)
        self.remember(policies)
        if status.phase is None and key in self.grantor.ended:
            # Read before this process ended it (kopf's listing at start-up, when the sweep
            # ended a grant whose record never landed): acting on it would grant afresh.
            return
        if status.phase is not None:
            await self.follow_up(key, body)
            await self.grantor.resume(key, parse_role(body), status)
            if isinstance(status, AccessRequestStatus) and status.extended_by:
                self.grantor.deadlines.will_hand_over(key)
            self.starts.resume(key, status)
            return
        try:
            request = AccessRequest.model_validate(body)
        except ValidationError as error:
            await self.reporter.unreadable(key, body, status, error, what="request")
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
            self.remember(policies)
            decision = compute_decision(request, policies, labels)
        decision, screened = await self.screen(request, body, decision, request.status)
        # Only what a policy may still grant is worth asking the API server about: a request
        # already denied or invalid costs no reviews. What is new for the subject is told to
        # the approver who decides on it; a grant the policy makes at once needs only what the
        # role gives (its capabilities), which spares the API server an access review per
        # phrase of every self-service grant.
        risk = None
        if decision.outcome in (Outcome.GRANT, Outcome.PENDING):
            risk = await self.assess(request, compare=decision.outcome == Outcome.PENDING)
        if risk is not None:
            risk = self.with_acting_as(request, risk)
        role = request.spec.role
        policy = self.policies.get(decision.policy or "")
        granted_at_once = decision.outcome == Outcome.GRANT
        decision = compute_capability_decision(decision, policy, risk, f"{role.kind} {role.name}")
        if granted_at_once and decision.outcome == Outcome.PENDING:
            # A capability wants an approver after all: they see what is new.
            fresh = await self.assess(request) or risk
            risk = self.with_acting_as(request, fresh) if fresh is not None else None
        decision = await self.starts.screen(request, decision, policy)
        screened = self._decided(request, decision, screened).model_copy(update={"risk": risk})
        request = request.model_copy(update={"status": screened})
        status = screened
        if decision.outcome == Outcome.PENDING:
            await self.start_pending(request, decision, screened)
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
        await self.reporter.transition(
            key,
            role=request.spec.role,
            status=status,
            phase=phase,
            reason=decision.reason,
            message=decision.message,
            generation=request.metadata.generation,
            event_type=event_type,
        )

    def _decided(
        self, request: AccessRequest, decision: Decision, status: AccessRequestStatus
    ) -> AccessRequestStatus:
        """The status of a first decision: who asked, for whom, which policy decided and what it
        requires — readable by everyone who may read the request, whatever the outcome."""
        requester = request.spec.requester
        policy = self.policies.get(decision.policy or "")
        update: dict[str, Any] = {
            "requester": requester,
            "policy": decision.policy,
            "approval": build_approval_requirement(
                decision.reason,
                policy,
                request.metadata.creation_timestamp or self.grantor.clock(),
            ),
        }
        if requester is not None:
            update["subject"] = compute_subject(requester, request.spec.subject)
        return status.model_copy(update=update)

    async def assess(self, request: AccessRequest, *, compare: bool = True) -> RiskSummary | None:
        """What the role would give the subject here, as the API server holds it now (and with
        `compare`, what of it they hold already)."""
        requester = request.spec.requester
        if requester is None:
            return None
        return await self.grantor.assessor.assess(
            request.spec.role,
            request.metadata.namespace,
            compute_subject(requester, request.spec.subject),
            requester,
            compare=compare,
        )

    def with_acting_as(self, request: AccessRequest, risk: RiskSummary) -> RiskSummary:
        """The summary, told whether the grant would let its holder act as an applier or an
        approver of any policy (capability ActAsApprover)."""
        requester = request.spec.requester
        if requester is None or ACT_AS_APPROVER in risk.capabilities:
            return risk
        subject = compute_subject(requester, request.spec.subject)
        holder = subject_user(subject, requester) or (
            UserInfo(username="", groups=[subject.name])
            if subject.kind == SubjectKind.GROUP
            else requester
        )
        acting = self.exposure.acting_as(
            request.spec.role, [request.metadata.namespace], holder, list(self.policies.values())
        )
        if not acting:
            return risk
        return risk.model_copy(
            update={
                "capabilities": [*risk.capabilities, ACT_AS_APPROVER],
                "summary": f"{risk.summary} It would let its holder act as "
                f"{describe_acting_as(acting)}.",
            }
        )

    async def grant(self, request: AccessRequest, decision: Decision) -> None:
        requester = request.spec.requester
        assert requester is not None and decision.duration is not None
        if is_deferred(request):
            await self.starts.schedule(request, decision, self.policies.get(decision.policy or ""))
            return
        duration = decision.duration
        role = request.spec.role

        def describe(grant: Grant) -> str:
            return (
                f"Granted {role.kind} {role.name} in namespace {grant.key.namespace} to "
                f"{grant.subject.name} for {format_duration(duration)}, until "
                f"{format_time(grant.expires_at)} (AccessPolicy {decision.policy})."
            )

        await self.grantor.activate(
            lambda expires_at: compute_request_grant(
                request, requester, decision.policy, expires_at
            ),
            duration,
            request.status,
            request.metadata,
            describe,
        )

    async def screen(
        self,
        request: AccessRequest,
        body: Mapping[str, Any],
        decision: Decision,
        status: AccessRequestStatus,
    ) -> tuple[Decision, AccessRequestStatus]:
        """Checks before a first decision takes effect: a requester Lapse signed, and a GitOps
        approval from the applier itself, not used before (lapse.gitops)."""
        if decision.outcome == Outcome.INVALID:
            return decision, status
        if not compute_requester_verified(KIND, body, self.decisions.key):
            return (
                Decision(
                    Outcome.INVALID,
                    "UnverifiedRequester",
                    "spec.requester carries no valid signature from Lapse's admission webhook; "
                    "the request did not pass through Lapse and is not trusted.",
                ),
                status,
            )
        policy = self.policies.get(decision.policy or "")
        return await self.gitops.check(request, decision, status, policy)

    async def start_pending(
        self, request: AccessRequest, decision: Decision, status: AccessRequestStatus
    ) -> None:
        key = GrantKey(
            KIND, request.metadata.namespace, request.metadata.name, request.metadata.uid or ""
        )
        policy = self.policies.get(decision.policy or "")
        approvers = describe_identities(policy.spec.approval.approvers) if policy else "nobody"
        required = policy.spec.approval.required if policy else 1
        await self.reporter.transition(
            key,
            role=request.spec.role,
            status=status,
            phase=Phase.PENDING,
            reason=decision.reason,
            message=f"{decision.message} Waiting for {required} approval(s) from {approvers}.",
            generation=request.metadata.generation,
            action="pending",
            approvers=approvers,
        )
        self._set_pending(key, True)
        self.scheduler.schedule(key, self._pending_deadline(request, policy), APPROVAL_TIMEOUT)

    def _pending_deadline(self, request: AccessRequest, policy: AccessPolicy | None) -> datetime:
        """The approval timeout, or the end of the window the request asks for if sooner."""
        duration = None
        if policy is not None:
            decision = compute_decision(request, [policy])
            duration = decision.duration
        created = request.metadata.creation_timestamp or self.grantor.clock()
        return compute_pending_deadline(request, policy, duration) or compute_approval_deadline(
            created, policy
        )

    # Requests already decided once ----------------------------------------------------------

    async def follow_up(self, key: GrantKey, body: Mapping[str, Any]) -> None:
        """Act on new verified decisions: count approvals, deny, revoke."""
        status = parse_status(KIND, body)
        if status.phase == Phase.PENDING:
            await self.evaluate(key)
            return
        if status.phase not in (Phase.ACTIVE, Phase.SCHEDULED):
            self._set_pending(key, False)
            return
        records = await self.decisions.verified(key, body)
        authority = build_request_authority(
            status.phase, key.name, None, status.requester, status.subject, self.admin_groups
        )
        policy = await self._policy(status.policy)
        if policy is not None:
            authority = build_request_authority(
                status.phase,
                key.name,
                policy,
                status.requester,
                status.subject,
                self.admin_groups,
            )
        revocation = compute_revocation(records, authority)
        if revocation is None:
            return
        message = compute_quoted(
            f"Revoked by {revocation.username}", revocation.comment, default=NO_REASON
        )
        # A scheduled request has nothing bound yet: the record of its end is all there is.
        end = self.reporter.transition if status.phase == Phase.SCHEDULED else self.grantor.end
        self.starts.cancel(key)
        await end(
            key,
            role=parse_role(body),
            status=status,
            phase=Phase.REVOKED,
            reason="RevokedByUser",
            message=message,
            generation=parse_generation(body),
            event_type="Warning",
        )
        if isinstance(status, AccessRequestStatus) and status.extended_by:
            await self.starts.cancel_extension(key, status.extended_by)

    async def timeout(self, key: GrantKey, deadline: datetime) -> None:
        await self.evaluate(key)

    async def evaluate(self, key: GrantKey) -> None:
        """Re-read a pending request and move it on if its decisions or its deadline say so."""
        async with self._locks.setdefault(key, asyncio.Lock()):
            await self._evaluate(key)

    async def _evaluate(self, key: GrantKey) -> None:
        body = await self.grantor.read_owner(key)
        if body is None:
            self._set_pending(key, False)
            self.scheduler.cancel(key, APPROVAL_TIMEOUT)
            return
        status = parse_status(KIND, body)
        assert isinstance(status, AccessRequestStatus)
        if status.phase != Phase.PENDING:
            self._set_pending(key, False)
            self.scheduler.cancel(key, APPROVAL_TIMEOUT)
            return
        self._set_pending(key, True)
        role = parse_role(body)
        generation = parse_generation(body)
        try:
            request = AccessRequest.model_validate(body)
        except ValidationError:
            return
        requester = request.spec.requester
        policy = await self._policy(status.policy)
        if requester is None or policy is None:
            return
        records = await self.decisions.verified(key, body)
        subject = compute_subject(requester, request.spec.subject)
        counted = await self._unforged(key, records, policy, requester, subject)
        state = compute_approval_state(counted, policy, requester, subject, self.admin_groups)
        now = self.grantor.clock()
        deadline = self._pending_deadline(request, policy)
        seen = {(a.user.username, a.decision, a.at) for a in status.approvals}
        fresh = [a for a in state.approvals if (a.user.username, a.decision, a.at) not in seen]
        status = status.model_copy(update={"approvals": list(state.approvals)})
        for approval in fresh:
            if approval.decision != "Approve":
                continue
            count = state.approved_by.index(approval.user.username) + 1
            message = compute_quoted(
                f"Approved by {approval.user.username} ({count} of {state.required} required)",
                approval.comment,
            )
            await self.reporter.event(key, "Normal", "ApprovalRecorded", message)
            self.reporter.audit(
                "approval",
                key,
                status,
                role,
                "ApprovalRecorded",
                message,
                decidedBy=approval.user.username,
            )
        deciding = state.deciding
        if state.outcome == ApprovalOutcome.REVOKED and deciding is not None:
            self._set_pending(key, False)
            await self.reporter.transition(
                key,
                role=role,
                status=status,
                phase=Phase.REVOKED,
                reason="Withdrawn",
                message=compute_quoted(
                    f"Withdrawn by {deciding.username} before approval",
                    deciding.comment,
                    default=NO_REASON,
                ),
                generation=generation,
            )
            return
        if state.outcome == ApprovalOutcome.DENIED and deciding is not None:
            self._set_pending(key, False)
            await self.reporter.transition(
                key,
                role=role,
                status=status,
                phase=Phase.DENIED,
                reason="DeniedByApprover",
                message=compute_quoted(
                    f"Denied by {deciding.username}", deciding.comment, default=NO_REASON
                ),
                generation=generation,
                event_type="Warning",
                decidedBy=deciding.username,
            )
            return
        if state.outcome == ApprovalOutcome.APPROVED:
            await self._approve(key, request, status, policy, state.approved_by, generation)
            return
        if now >= deadline:
            self._set_pending(key, False)
            created = request.metadata.creation_timestamp or now
            reason, message = (
                "ApprovalTimeout",
                f"No approval within {format_duration(compute_approval_timeout(policy))}; "
                "the request expired without access.",
            )
            if deadline < compute_approval_deadline(created, policy):
                reason, message = (
                    "WindowPassed",
                    f"The window asked for ended at {format_time(deadline)} before the request "
                    "was approved; it expired without access.",
                )
            await self.reporter.transition(
                key,
                role=role,
                status=status,
                phase=Phase.EXPIRED,
                reason=reason,
                message=message,
                generation=generation,
                event_type="Warning",
            )
            return
        if fresh:
            await self.kube.patch_status(
                key, {"status": {"approvals": [a.to_wire() for a in state.approvals]}}
            )
        self.scheduler.schedule(key, deadline, APPROVAL_TIMEOUT)

    async def _unforged(
        self,
        key: GrantKey,
        records: Sequence[DecisionRecord],
        policy: AccessPolicy,
        requester: UserInfo,
        subject: Subject,
    ) -> list[DecisionRecord]:
        """The decisions the requester (or the subject) could not have made themselves by
        acting as the approver; each one left out is said once, in a Warning Event."""
        approvals = [r.user for r in records if r.action == Action.APPROVE]
        forged = self.exposure.forged(approvals, policy, requester, subject)
        for username, path in forged.items():
            if (key, username) in self._forged:
                continue
            self._forged.add((key, username))
            await self.reporter.event(
                key,
                "Warning",
                "ApprovalNotCounted",
                f"The approval by {username} does not count: {describe_forgery(username, path)}.",
            )
        return [r for r in records if not (r.action == Action.APPROVE and r.username in forged)]

    async def _approve(
        self,
        key: GrantKey,
        request: AccessRequest,
        status: AccessRequestStatus,
        policy: AccessPolicy,
        approved_by: list[str],
        generation: int | None,
    ) -> None:
        self._set_pending(key, False)
        self.scheduler.cancel(key, APPROVAL_TIMEOUT)
        role = request.spec.role
        labels = None
        if policy.spec.namespace_selector is not None:
            labels = await self.kube.get_namespace_labels(key.namespace or "")
        decision = compute_decision(request, [policy], labels)
        if decision.outcome not in (Outcome.GRANT, Outcome.PENDING) or decision.duration is None:
            await self.reporter.transition(
                key,
                role=role,
                status=status,
                phase=Phase.DENIED,
                reason=decision.reason,
                message=f"Approved, but AccessPolicy {policy.metadata.name} no longer allows it: "
                f"{decision.message}",
                generation=generation,
                event_type="Warning",
            )
            return
        now = self.grantor.clock()
        approved = await self.reporter.transition(
            key,
            role=role,
            status=status,
            phase=Phase.APPROVED,
            reason="Approved",
            message=f"Approved by {', '.join(approved_by)} ({len(approved_by)} of "
            f"{policy.spec.approval.required} required).",
            generation=generation,
            decidedBy=",".join(approved_by),
        )
        if request.metadata.creation_timestamp is not None:
            waited = (now - request.metadata.creation_timestamp).total_seconds()
            metrics.approval_duration_seconds.observe(max(0.0, waited))
        assert isinstance(approved, AccessRequestStatus)
        # The role may have changed while the request waited: what it gives is read again.
        approved = approved.model_copy(update={"risk": await self.assess(request) or status.risk})
        await self.grant(request.model_copy(update={"status": approved}), decision)
