"""Decisions on an AccessRequest: admitted and signed at the webhook, verified in the operator.

Approve, deny and revoke arrive as annotations. The admission half (`admit`) checks who acts and
turns each into a record signed with the operator's key; the operator half (`verified`) reads
only records whose signatures verify, and warns — once per forged value — about anything that
does not. The rules themselves live in `lapse.core.actions` and `lapse.core.approvals`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from lapse import metrics
from lapse.core.actions import (
    DECISIONS_ANNOTATION,
    Action,
    ActionAdmission,
    DecisionRecord,
    ObjectIdentity,
    compute_action_admission,
    compute_raw_actions,
    compute_verified_decisions,
)
from lapse.core.approvals import build_request_authority
from lapse.core.exposure import describe_forgery
from lapse.core.grants import GrantKey, compute_subject
from lapse.core.kinds import ACCESS_REQUEST
from lapse.core.models import AccessPolicy, AccessRequest, AccessRequestStatus, UserInfo
from lapse.core.owners import parse_role, parse_status
from lapse.core.policy import compute_decision
from lapse.exposure import ExposureKeeper
from lapse.policies import PolicyReader
from lapse.reporting import Reporter


def identity_of(body: Mapping[str, Any]) -> ObjectIdentity:
    metadata = body.get("metadata") or {}
    return ObjectIdentity(
        kind=str(body.get("kind") or ACCESS_REQUEST.kind),
        namespace=metadata.get("namespace"),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
    )


class RequestDecisions:
    def __init__(
        self,
        reporter: Reporter,
        *,
        key: bytes,
        admin_groups: frozenset[str],
        policies: PolicyReader,
        exposure: ExposureKeeper | None = None,
    ) -> None:
        self.reporter = reporter
        self.policies = policies
        self.key = key
        self.admin_groups = admin_groups
        self.exposure = exposure
        self._warned: set[tuple[GrantKey, str]] = set()

    async def admit(
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
        known = {p.metadata.name: p for p in policies}
        # A request decided under a policy the index has not seen yet (it lags after an API
        # server restart) is judged by that policy read afresh, never refused for the lag.
        policy = await self.policies.named(policies, status.policy)
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
        admission = compute_action_admission(
            metadata.get("annotations") or {},
            (new.get("metadata") or {}).get("annotations") or {},
            actor,
            authority,
            identity_of(old),
            self.key,
            now,
        )
        approving = [r for r in admission.records if r.action == Action.APPROVE]
        if self.exposure is None or not approving or policy is None or requester is None:
            return admission
        forged = self.exposure.forged([actor], policy, requester, subject)
        if actor.username not in forged:
            return admission
        return ActionAdmission(
            refusal=f"Lapse cannot count an approval by {actor.username} on this request: "
            f"{describe_forgery(actor.username, forged[actor.username])}. Another approver must "
            "decide, or that right must go."
        )

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
        metrics.tamper_total.labels(action="ignored").inc()
        await self.reporter.event(key, "Warning", reason, text)
        self.reporter.audit(
            reason[0].lower() + "".join(f"-{c.lower()}" if c.isupper() else c for c in reason[1:]),
            key,
            parse_status(key.kind, body),
            parse_role(body),
            reason,
            text,
        )
