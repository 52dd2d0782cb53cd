"""Approvals of AccessRequests: who may decide, and what the verified decisions add up to.

Four eyes: a request waits until `required` distinct approvers approved it; one denial ends it.
Only records whose signature verified reach this module, and each is judged again against the
policy the request was evaluated under, so a record that was admitted while an approver still
was one — or that slipped past the webhook — is only counted when the rule still holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from lapse.core.actions import Action, Authority, DecisionRecord, compute_action_refusal
from lapse.core.durations import DurationError, parse_duration
from lapse.core.models import (
    AccessPolicy,
    ApprovalMode,
    ApprovalRecord,
    ApprovalRequirement,
    Identities,
    Phase,
    Subject,
    UserInfo,
)

PULL_REQUEST_ANNOTATION = "lapse.dev/pull-request"
COMMIT_ANNOTATION = "lapse.dev/commit"
DEFAULT_TIMEOUT = timedelta(hours=24)
REQUEST_ACTIONS = frozenset({Action.APPROVE, Action.DENY, Action.REVOKE})


class ApprovalOutcome(StrEnum):
    PENDING = "Pending"
    APPROVED = "Approved"
    DENIED = "Denied"
    REVOKED = "Revoked"


@dataclass(frozen=True)
class ApprovalState:
    outcome: ApprovalOutcome
    # Counted approvals, one per approver, plus the denial or withdrawal that ended it, if any.
    approvals: tuple[ApprovalRecord, ...]
    required: int
    deciding: DecisionRecord | None = None
    # Verified records that do not count: the same approver again, or no longer allowed.
    ignored: int = 0

    @property
    def approved_by(self) -> list[str]:
        return [a.user.username for a in self.approvals if a.decision == "Approve"]


def describe_identities(identities: Identities) -> str:
    named = [f"group {g}" for g in identities.groups] + [f"user {u}" for u in identities.users]
    return ", ".join(named) or "nobody"


def build_approval_requirement(
    reason: str, policy: AccessPolicy | None, created_at: datetime | None
) -> ApprovalRequirement | None:
    """What a first decision by `policy` asks for; None when no policy decided it."""
    if reason == "GitOpsApproved":
        return ApprovalRequirement(mode="GitOps")
    if policy is None:
        return None
    approval = policy.spec.approval
    if approval.mode == ApprovalMode.AUTO:
        return ApprovalRequirement(mode="Auto")
    return ApprovalRequirement(
        mode="Approvers",
        required=approval.required,
        approvers=approval.approvers,
        deadline=compute_approval_deadline(created_at, policy) if created_at else None,
    )


def build_request_authority(
    phase: Phase | None,
    name: str,
    policy: AccessPolicy | None,
    requester: UserInfo | None,
    subject: Subject | None,
    admin_groups: frozenset[str],
) -> Authority:
    """Who may act on an AccessRequest in `phase`, under `policy` (None when none matches)."""
    closed: dict[Action, str] = {}
    if phase is not None and phase not in (Phase.PENDING,):
        for action in (Action.APPROVE, Action.DENY):
            closed[action] = f"AccessRequest {name} is {phase} and no longer awaits a decision"
    if phase is not None and phase.ended:
        closed[Action.REVOKE] = f"AccessRequest {name} is {phase} already"
    return Authority(
        actions=REQUEST_ACTIONS,
        requester=requester,
        subject=subject,
        approvers=policy.spec.approval.approvers if policy is not None else None,
        approvers_of=f"AccessPolicy {policy.metadata.name}" if policy else "any AccessPolicy",
        admin_groups=admin_groups,
        closed=closed,
        on_call=policy.spec.break_glass.requesters
        if policy is not None and policy.spec.break_glass is not None
        else None,
    )


def to_approval_record(record: DecisionRecord) -> ApprovalRecord:
    return ApprovalRecord(
        user=record.user,
        decision="Approve" if record.action == Action.APPROVE else "Deny",
        at=datetime.fromisoformat(record.at.replace("Z", "+00:00")),
        comment=record.comment or None,
    )


def compute_approval_state(
    records: Sequence[DecisionRecord],
    policy: AccessPolicy,
    requester: UserInfo,
    subject: Subject | None,
    admin_groups: frozenset[str] = frozenset(),
) -> ApprovalState:
    """Walk the verified records in order: the first to reach the count or to deny decides."""
    authority = build_request_authority(Phase.PENDING, "", policy, requester, subject, admin_groups)
    required = policy.spec.approval.required
    counted: list[ApprovalRecord] = []
    seen: set[str] = set()
    ignored = 0
    for record in records:
        if compute_action_refusal(record.action, record.user, authority) is not None:
            ignored += 1
            continue
        if record.action == Action.REVOKE:
            return ApprovalState(ApprovalOutcome.REVOKED, tuple(counted), required, record, ignored)
        if record.action == Action.DENY:
            denial = to_approval_record(record)
            return ApprovalState(
                ApprovalOutcome.DENIED, (*counted, denial), required, record, ignored
            )
        if record.action != Action.APPROVE:
            ignored += 1
            continue
        if record.username in seen:
            ignored += 1
            continue
        seen.add(record.username)
        counted.append(to_approval_record(record))
        if len(counted) >= required:
            return ApprovalState(
                ApprovalOutcome.APPROVED, tuple(counted), required, record, ignored
            )
    return ApprovalState(ApprovalOutcome.PENDING, tuple(counted), required, None, ignored)


def compute_revocation(
    records: Sequence[DecisionRecord], authority: Authority
) -> DecisionRecord | None:
    """The first verified revoke that `authority` allows, if any."""
    for record in records:
        if record.action == Action.REVOKE and (
            compute_action_refusal(record.action, record.user, authority) is None
        ):
            return record
    return None


def compute_approval_timeout(policy: AccessPolicy | None) -> timedelta:
    if policy is None:
        return DEFAULT_TIMEOUT
    try:
        return parse_duration(policy.spec.approval.timeout)
    except DurationError:
        return DEFAULT_TIMEOUT


def compute_approval_deadline(created_at: datetime, policy: AccessPolicy | None) -> datetime:
    return created_at + compute_approval_timeout(policy)


def compute_gitops_ledger_key(
    namespace: str | None, name: str, commit: str | None, spec: Mapping[str, Any]
) -> str:
    """One GitOps approval: the same file at the same commit is approved once, however often
    it is re-created."""
    canonical = json.dumps(
        {"namespace": namespace or "", "name": name, "commit": commit or "", "spec": spec},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:40]


def compute_ledger_prune(
    entries: Mapping[str, str], now: datetime, retention: timedelta
) -> list[str]:
    """Ledger keys whose entry is older than `retention` (or unreadable): consumed, and not
    replayed since (a replay refused renews the entry, `replayedAt`)."""
    stale: list[str] = []
    for key, value in entries.items():
        try:
            entry = json.loads(value)
            at = datetime.fromisoformat(
                (entry.get("replayedAt") or entry["consumedAt"]).replace("Z", "+00:00")
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            stale.append(key)
            continue
        if now - at > retention:
            stale.append(key)
    return stale
