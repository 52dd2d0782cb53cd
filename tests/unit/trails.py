"""Builders for exported audit trails: real streams of signed records, made the way the
exporter makes them (`lapse.core.trail`) from real status models, for the tests of what
reads them back (`lapse.core.trailcheck`, `lapse.core.accessreview`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from lapse.core.grants import GrantKey
from lapse.core.models import (
    AccessRequestStatus,
    ActivityRecord,
    ApprovalRecord,
    BindingRef,
    BreakGlassStatus,
    GrantStatus,
    Phase,
    Review,
    RoleRef,
    Subject,
    Transition,
    UserInfo,
)
from lapse.core.trail import (
    build_retired_fact,
    build_trail_record,
    compute_facts,
    compute_genesis,
    compute_record_hash,
)
from lapse.core.trailcheck import Located

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
T0 = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
EDIT = RoleRef(kind="ClusterRole", name="edit")
ADMIN = RoleRef(kind="ClusterRole", name="cluster-admin")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def request_status(
    *,
    user: str = "alice",
    approvers: Sequence[str] = (),
    ended: Phase | None = Phase.EXPIRED,
    granted: float = 1,
    lasted: float = 60,
    policy: str = "payments-self-service",
    namespace: str = "payments",
    pull_request: str | None = None,
) -> AccessRequestStatus:
    history = [Transition(at=at(0), phase=Phase.PENDING, reason="Pending")] if approvers else []
    history.append(Transition(at=at(granted), phase=Phase.ACTIVE, reason="Granted"))
    end = at(granted + lasted)
    if ended is not None:
        history.append(Transition(at=end, phase=ended, reason=ended.value, message="Done."))
    return AccessRequestStatus(
        phase=ended or Phase.ACTIVE,
        requester=UserInfo(username=user),
        subject=Subject(kind="User", name=user),
        policy=policy,
        granted_at=at(granted),
        expires_at=at(granted + lasted),
        ended_at=end if ended else None,
        bindings=[BindingRef(kind="RoleBinding", name="lapse-edit-x", namespace=namespace)],
        history=history,
        approvals=[
            ApprovalRecord(user=UserInfo(username=a), decision="Approve", at=at(0.5))
            for a in approvers
        ],
        pull_request=pull_request,
    )


def glass_status(
    *, reviewer: str | None = "dave", verdict: str = "Justified", activity: bool = True
) -> BreakGlassStatus:
    return BreakGlassStatus(
        phase=Phase.REVOKED,
        requester=UserInfo(username="carol"),
        subject=Subject(kind="User", name="carol"),
        policy="sre-break-glass",
        granted_at=at(0),
        expires_at=at(30),
        ended_at=at(20),
        history=[
            Transition(at=at(0), phase=Phase.ACTIVE, reason="Activated"),
            Transition(at=at(20), phase=Phase.REVOKED, reason="Revoked", message="fixed"),
        ],
        review=(
            Review(
                reviewer=UserInfo(username=reviewer),
                verdict=verdict,
                comment="runbook followed",
                at=at(40),
            )
            if reviewer
            else None
        ),
        activity=(
            ActivityRecord(events=12, first_at=at(1), last_at=at(19), updated_at=at(20))
            if activity
            else None
        ),
    )


def build_stream(
    key: GrantKey,
    status: GrantStatus,
    *,
    role: RoleRef = EDIT,
    signing_key: bytes = KEY,
    retired: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every record of one owner, signed and chained as the exporter writes them."""
    facts = compute_facts(key.kind, status)
    if retired:
        facts.append(build_retired_fact(at=at(24 * 60), records=len(facts), ended_at=None))
    records: list[dict[str, Any]] = []
    prev = compute_genesis(key.uid)
    for seq, fact in enumerate(facts, start=1):
        record = build_trail_record(
            key=key,
            status=status,
            role=role,
            fact=fact,
            seq=seq,
            prev=prev,
            signing_key=signing_key,
            extra=extra,
        )
        records.append(record)
        prev = compute_record_hash(record)
    return records


def located(records: Sequence[Mapping[str, Any]], file: str = "trail.log") -> list[Located]:
    return [Located(record, file, line) for line, record in enumerate(records, start=1)]


def lines(records: Sequence[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)
