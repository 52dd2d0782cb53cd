"""AccessRequest approvals at the edge: decisions admitted, verified, counted and acted on.

The admission half turns action annotations into signed records (`admit`); the operator half
(`follow_up`, `screen`, the approval-timeout deadline) reads only records whose signatures
verify, and warns — once per forged value — about anything that does not. The rules themselves
live in `lapse.core.actions` and `lapse.core.approvals`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from lapse import metrics
from lapse.core.actions import (
    DECISIONS_ANNOTATION,
    REQUESTER_SIGNATURE_ANNOTATION,
    ActionAdmission,
    DecisionRecord,
    ObjectIdentity,
    compute_action_admission,
    compute_raw_actions,
    compute_verified_decisions,
    verify_requester,
)
from lapse.core.admission import ADMITTED_AT_ANNOTATION
from lapse.core.approvals import (
    COMMIT_ANNOTATION,
    PULL_REQUEST_ANNOTATION,
    ApprovalOutcome,
    build_request_authority,
    compute_approval_deadline,
    compute_approval_state,
    compute_approval_timeout,
    compute_gitops_ledger_key,
    compute_revocation,
    describe_identities,
)
from lapse.core.durations import format_duration
from lapse.core.grants import GrantKey, compute_subject
from lapse.core.models import (
    AccessPolicy,
    AccessRequest,
    AccessRequestSpec,
    AccessRequestStatus,
    Phase,
    UserInfo,
)
from lapse.core.policy import Decision, Outcome, compute_decision
from lapse.ledger import GitOpsLedger

if TYPE_CHECKING:
    from lapse.grantor import Grantor

logger = logging.getLogger(__name__)

APPROVAL_TIMEOUT = "approval-timeout"
KIND = "AccessRequest"


def identity_of(body: Mapping[str, Any]) -> ObjectIdentity:
    metadata = body.get("metadata") or {}
    return ObjectIdentity(
        kind=str(body.get("kind") or KIND),
        namespace=metadata.get("namespace"),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
    )


def signable_spec(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The spec in one canonical form, so defaults and nulls never break a signature."""
    try:
        return AccessRequestSpec.model_validate(spec).to_wire()
    except ValidationError:
        return None


class RequestApprovals:
    def __init__(self, grantor: Grantor, key: bytes, ledger: GitOpsLedger) -> None:
        self.grantor = grantor
        self.key = key
        self.ledger = ledger
        self.admin_groups = grantor.settings.admin_groups
        # The latest policies seen, for deadlines that fire outside any handler.
        self.policies: dict[str, AccessPolicy] = {}
        self._pending: set[GrantKey] = set()
        self._warned: set[tuple[GrantKey, str]] = set()
        self._locks: dict[GrantKey, asyncio.Lock] = {}
        grantor.scheduler.on(APPROVAL_TIMEOUT, self.timeout)

    def remember(self, policies: Sequence[AccessPolicy]) -> dict[str, AccessPolicy]:
        self.policies = {p.metadata.name: p for p in policies}
        return self.policies

    def _set_pending(self, key: GrantKey, pending: bool) -> None:
        if pending:
            self._pending.add(key)
        else:
            self._pending.discard(key)
        metrics.pending_requests.set(len(self._pending))

    # Admission ------------------------------------------------------------------------------

    def admit(
        self,
        old: Mapping[str, Any],
        new: Mapping[str, Any],
        actor: UserInfo,
        policies: Sequence[AccessPolicy],
        now: datetime,
    ) -> ActionAdmission:
        """The UPDATE webhook's answer for an AccessRequest."""
        metadata = old.get("metadata") or {}
        status = AccessRequestStatus.model_validate(old.get("status") or {})
        try:
            request = AccessRequest.model_validate(old)
        except ValidationError:
            request = None
        requester = request.spec.requester if request else None
        subject = (
            compute_subject(requester, request.spec.subject) if request and requester else None
        )
        known = self.remember(policies)
        policy = known.get(status.policy) if status.policy else None
        if policy is None and status.phase is None and request is not None:
            decided = compute_decision(request, policies)
            policy = known.get(decided.policy) if decided.policy else None
        authority = build_request_authority(
            status.phase,
            str(metadata.get("name", "")),
            policy,
            requester,
            subject,
            self.admin_groups,
        )
        return compute_action_admission(
            metadata.get("annotations") or {},
            (new.get("metadata") or {}).get("annotations") or {},
            actor,
            authority,
            identity_of(old),
            self.key,
            now,
        )

    # Verification ---------------------------------------------------------------------------

    async def verified(self, key: GrantKey, body: Mapping[str, Any]) -> tuple[DecisionRecord, ...]:
        """The signed decisions on `body`; forged ones and raw action annotations are reported
        (a Warning Event and an audit line, once each) and never acted upon."""
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        found = compute_verified_decisions(annotations, identity_of(body), self.key)
        if found.forged:
            fingerprint = hashlib.sha256(
                str(annotations.get(DECISIONS_ANNOTATION)).encode()
            ).hexdigest()
            if (key, fingerprint) not in self._warned:
                self._warned.add((key, fingerprint))
                message = (
                    f"{found.forged} entr{'y' if found.forged == 1 else 'ies'} of "
                    f"{DECISIONS_ANNOTATION} carry no valid Lapse signature for this object; "
                    "they are ignored."
                )
                await self._warn(key, body, "ForgedDecision", message)
        for action in compute_raw_actions(annotations):
            marker = f"raw:{action.value}:{annotations.get(action.annotation)}"
            if (key, marker) not in self._warned:
                self._warned.add((key, marker))
                message = (
                    f"{action.annotation} reached this object without passing Lapse's admission "
                    "webhook, so nobody's identity vouches for it; it is ignored. Annotate again "
                    "while Lapse runs."
                )
                await self._warn(key, body, "UnverifiedAction", message)
        return found.records

    async def _warn(self, key: GrantKey, body: Mapping[str, Any], reason: str, text: str) -> None:
        from lapse.grantor import parse_role, parse_status

        metrics.tamper_total.labels(action="ignored").inc()
        await self.grantor.event(key, "Warning", reason, text)
        self.grantor.audit(
            reason[0].lower() + "".join(f"-{c.lower()}" if c.isupper() else c for c in reason[1:]),
            key,
            parse_status(key.kind, body),
            parse_role(body),
            reason,
            text,
        )

    def requester_verified(self, body: Mapping[str, Any]) -> bool:
        """Whether the spec (requester included) is what Lapse's CREATE webhook signed."""
        metadata = body.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        spec = signable_spec(body.get("spec") or {})
        if spec is None:
            return False
        created = metadata.get("creationTimestamp")
        created_at = datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None
        names = [str(metadata.get("name", ""))]
        if metadata.get("generateName"):
            names.append("")
        return any(
            verify_requester(
                KIND,
                metadata.get("namespace"),
                name,
                spec,
                annotations.get(ADMITTED_AT_ANNOTATION),
                created_at,
                annotations.get(REQUESTER_SIGNATURE_ANNOTATION),
                self.key,
            )
            for name in names
        )

    # New requests ---------------------------------------------------------------------------

    async def screen(
        self,
        request: AccessRequest,
        body: Mapping[str, Any],
        decision: Decision,
        status: AccessRequestStatus,
    ) -> tuple[Decision, AccessRequestStatus]:
        """Checks before a first decision takes effect: a requester Lapse signed, and a GitOps
        approval not used before. GitOps requests carry their PR and commit into status."""
        if decision.outcome == Outcome.INVALID:
            return decision, status
        if not self.requester_verified(body):
            return (
                Decision(
                    Outcome.INVALID,
                    "UnverifiedRequester",
                    "spec.requester carries no valid signature from Lapse's admission webhook; "
                    "the request did not pass through Lapse and is not trusted.",
                ),
                status,
            )
        if decision.reason != "GitOpsApproved":
            return decision, status
        annotations = request.metadata.annotations
        status = status.model_copy(
            update={
                "pull_request": annotations.get(PULL_REQUEST_ANNOTATION),
                "commit": annotations.get(COMMIT_ANNOTATION),
            }
        )
        ledger_key = compute_gitops_ledger_key(
            request.metadata.namespace,
            request.metadata.name,
            annotations.get(COMMIT_ANNOTATION),
            request.spec.model_dump(mode="json", by_alias=True, exclude={"requester"}),
        )
        first = await self.ledger.consume(
            ledger_key, request.metadata.uid or "", self.grantor.clock()
        )
        key = GrantKey(
            KIND, request.metadata.namespace, request.metadata.name, request.metadata.uid or ""
        )
        applier = request.spec.requester.username if request.spec.requester else "?"
        if first:
            await self.grantor.event(
                key,
                "Normal",
                "GitOpsApproved",
                f"Approved by {applier} applying pull request "
                f"{status.pull_request or '(none named)'} at commit "
                f"{status.commit or '(none named)'}.",
            )
        if not first:
            return (
                Decision(
                    Outcome.DENY,
                    "GitOpsApprovalConsumed",
                    "This request (same namespace, name, commit and spec) was granted once "
                    "already; creating it again does not grant again. Commit a new request "
                    "to ask again.",
                    policy=decision.policy,
                ),
                status,
            )
        return decision, status

    async def start_pending(
        self, request: AccessRequest, decision: Decision, status: AccessRequestStatus
    ) -> None:
        key = GrantKey(
            KIND, request.metadata.namespace, request.metadata.name, request.metadata.uid or ""
        )
        policy = self.policies.get(decision.policy or "")
        approvers = describe_identities(policy.spec.approval.approvers) if policy else "nobody"
        required = policy.spec.approval.required if policy else 1
        await self.grantor.transition(
            key,
            request.spec.role,
            status.model_copy(
                update={"requester": request.spec.requester, "policy": decision.policy}
            ),
            Phase.PENDING,
            decision.reason,
            f"{decision.message} Waiting for {required} approval(s) from {approvers}.",
            request.metadata.generation,
            action="pending",
            approvers=approvers,
        )
        self._set_pending(key, True)
        created = request.metadata.creation_timestamp or self.grantor.clock()
        self.grantor.scheduler.schedule(
            key, compute_approval_deadline(created, policy), APPROVAL_TIMEOUT
        )

    # Requests already decided once ----------------------------------------------------------

    async def follow_up(self, key: GrantKey, body: Mapping[str, Any]) -> None:
        """Act on new verified decisions: count approvals, deny, revoke."""
        from lapse.grantor import parse_role, parse_status

        status = parse_status(KIND, body)
        if status.phase == Phase.PENDING:
            await self.evaluate(key)
            return
        if status.phase != Phase.ACTIVE:
            self._set_pending(key, False)
            return
        records = await self.verified(key, body)
        authority = build_request_authority(
            status.phase, key.name, None, status.requester, status.subject, self.admin_groups
        )
        policy = self.policies.get(status.policy or "")
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
        await self.grantor.end(
            key,
            parse_role(body),
            status,
            Phase.REVOKED,
            "RevokedByUser",
            f"Revoked by {revocation.username}: {revocation.comment or 'no reason given'}.",
            (body.get("metadata") or {}).get("generation"),
            event_type="Warning",
        )

    async def timeout(self, key: GrantKey, deadline: datetime) -> None:
        await self.evaluate(key)

    async def evaluate(self, key: GrantKey) -> None:
        """Re-read a pending request and move it on if its decisions or its deadline say so."""
        async with self._locks.setdefault(key, asyncio.Lock()):
            await self._evaluate(key)

    async def _evaluate(self, key: GrantKey) -> None:
        from lapse.grantor import parse_role, parse_status

        body = await self.grantor.kube.get_owner(key)
        if body is None or (body.get("metadata") or {}).get("uid") != key.uid:
            self._set_pending(key, False)
            self.grantor.scheduler.cancel(key, APPROVAL_TIMEOUT)
            return
        status = parse_status(KIND, body)
        assert isinstance(status, AccessRequestStatus)
        if status.phase != Phase.PENDING:
            self._set_pending(key, False)
            self.grantor.scheduler.cancel(key, APPROVAL_TIMEOUT)
            return
        self._set_pending(key, True)
        role = parse_role(body)
        generation = (body.get("metadata") or {}).get("generation")
        try:
            request = AccessRequest.model_validate(body)
        except ValidationError:
            return
        requester = request.spec.requester
        policy = self.policies.get(status.policy or "")
        if requester is None or policy is None:
            return
        records = await self.verified(key, body)
        subject = compute_subject(requester, request.spec.subject)
        state = compute_approval_state(records, policy, requester, subject, self.admin_groups)
        now = self.grantor.clock()
        created = request.metadata.creation_timestamp or now
        deadline = compute_approval_deadline(created, policy)
        seen = {(a.user.username, a.decision, a.at) for a in status.approvals}
        fresh = [a for a in state.approvals if (a.user.username, a.decision, a.at) not in seen]
        status = status.model_copy(update={"approvals": list(state.approvals)})
        for approval in fresh:
            if approval.decision != "Approve":
                continue
            count = state.approved_by.index(approval.user.username) + 1
            message = (
                f"Approved by {approval.user.username} ({count} of {state.required} required)"
                f"{': ' + approval.comment if approval.comment else ''}."
            )
            await self.grantor.event(key, "Normal", "ApprovalRecorded", message)
            self.grantor.audit(
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
            await self.grantor.transition(
                key,
                role,
                status,
                Phase.REVOKED,
                "Withdrawn",
                f"Withdrawn by {deciding.username} before approval: "
                f"{deciding.comment or 'no reason given'}.",
                generation,
            )
            return
        if state.outcome == ApprovalOutcome.DENIED and deciding is not None:
            self._set_pending(key, False)
            await self.grantor.transition(
                key,
                role,
                status,
                Phase.DENIED,
                "DeniedByApprover",
                f"Denied by {deciding.username}: {deciding.comment or 'no reason given'}.",
                generation,
                event_type="Warning",
                decidedBy=deciding.username,
            )
            return
        if state.outcome == ApprovalOutcome.APPROVED:
            await self._approve(key, request, status, policy, state.approved_by, generation)
            return
        if now >= deadline:
            self._set_pending(key, False)
            timeout = format_duration(compute_approval_timeout(policy))
            await self.grantor.transition(
                key,
                role,
                status,
                Phase.EXPIRED,
                "ApprovalTimeout",
                f"No approval within {timeout}; the request expired without access.",
                generation,
                event_type="Warning",
            )
            return
        if fresh:
            await self.grantor.kube.patch_status(
                key, {"status": {"approvals": [a.to_wire() for a in state.approvals]}}
            )
        self.grantor.scheduler.schedule(key, deadline, APPROVAL_TIMEOUT)

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
        self.grantor.scheduler.cancel(key, APPROVAL_TIMEOUT)
        role = request.spec.role
        labels = None
        if policy.spec.namespace_selector is not None:
            labels = await self.grantor.kube.get_namespace_labels(key.namespace or "")
        decision = compute_decision(request, [policy], labels)
        if decision.outcome not in (Outcome.GRANT, Outcome.PENDING) or decision.duration is None:
            await self.grantor.transition(
                key,
                role,
                status,
                Phase.DENIED,
                decision.reason,
                f"Approved, but AccessPolicy {policy.metadata.name} no longer allows it: "
                f"{decision.message}",
                generation,
                event_type="Warning",
            )
            return
        now = self.grantor.clock()
        approved = await self.grantor.transition(
            key,
            role,
            status,
            Phase.APPROVED,
            "Approved",
            f"Approved by {', '.join(approved_by)} ({len(approved_by)} of "
            f"{policy.spec.approval.required} required).",
            generation,
            decidedBy=",".join(approved_by),
        )
        if request.metadata.creation_timestamp is not None:
            waited = (now - request.metadata.creation_timestamp).total_seconds()
            metrics.approval_duration_seconds.observe(max(0.0, waited))
        assert isinstance(approved, AccessRequestStatus)
        await self.grantor.grant(request.model_copy(update={"status": approved}), decision)

    async def resume(self, key: GrantKey, body: Mapping[str, Any]) -> None:
        """After a restart: a pending request's deadline goes back to the scheduler."""
        from lapse.grantor import parse_status

        if parse_status(KIND, body).phase != Phase.PENDING:
            return
        self._set_pending(key, True)
        await self.evaluate(key)
