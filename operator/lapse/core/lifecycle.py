"""Status transitions: phase, reason, message, conditions and history move together.

Each transition is one new status value, written with one status patch, so what a client reads
is always a consistent phase with its conditions and the history that led there. Ended is
final: no function here turns an ended status into anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from lapse.core.conditions import ConditionStatus, compute_conditions
from lapse.core.durations import format_duration
from lapse.core.models import BindingRef, GrantStatus, Phase, Subject, Transition, UserInfo

CONDITION_APPROVED = "Approved"
CONDITION_ACTIVE = "Active"

S = TypeVar("S", bound=GrantStatus)


class FinalPhaseError(ValueError):
    """An ended object was asked to change phase; asking again means a new object."""


# What each phase says about the two conditions; None leaves a condition as it was.
_CONDITIONS: dict[Phase, tuple[ConditionStatus | None, ConditionStatus]] = {
    Phase.PENDING: ("Unknown", "False"),
    Phase.APPROVED: ("True", "False"),
    Phase.SCHEDULED: ("True", "False"),
    Phase.ACTIVE: ("True", "True"),
    Phase.EXPIRED: (None, "False"),
    Phase.REVOKED: (None, "False"),
    Phase.DENIED: ("False", "False"),
    Phase.INVALID: ("False", "False"),
}


def compute_transition(
    status: S,
    phase: Phase,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
    **changes: Any,
) -> S:
    """The status after entering `phase`; `changes` sets further status fields by name."""
    if status.phase is not None and status.phase.ended:
        raise FinalPhaseError(f"{status.phase} is final; it cannot become {phase}")
    approved, active = _CONDITIONS[phase]
    conditions = list(status.conditions)
    if approved is not None:
        conditions = compute_conditions(
            conditions, CONDITION_APPROVED, approved, reason, message, now, generation
        )
    conditions = compute_conditions(
        conditions, CONDITION_ACTIVE, active, reason, message, now, generation
    )
    history = [*status.history, Transition(at=now, phase=phase, reason=reason, message=message)]
    update: dict[str, Any] = {
        "phase": phase,
        "reason": reason,
        "message": message,
        "conditions": conditions,
        "history": history,
        "observed_generation": generation,
        **changes,
    }
    if phase.ended:
        update.setdefault("ended_at", now)
    return status.model_copy(update=update)


def compute_granted(
    status: S,
    *,
    now: datetime,
    generation: int | None,
    message: str,
    requester: UserInfo,
    subject: Subject,
    policy: str | None,
    duration: timedelta,
    granted_at: datetime,
    bindings: Sequence[BindingRef],
) -> S:
    """Active from `granted_at` for `duration`: the expiry is decided here, once."""
    return compute_transition(
        status,
        Phase.ACTIVE,
        "Granted",
        message,
        now,
        generation,
        requester=requester,
        subject=subject,
        policy=policy,
        duration=format_duration(duration),
        granted_at=granted_at,
        # A grant decided ahead keeps the start it was scheduled for: its clock began then.
        starts_at=status.starts_at or granted_at,
        expires_at=granted_at + duration,
        bindings=list(bindings),
    )


def is_due(status: GrantStatus, now: datetime) -> bool:
    return status.expires_at is not None and status.expires_at <= now


def build_status_patch(status: GrantStatus) -> dict[str, Any]:
    """A merge patch for the status subresource carrying the whole status but its footholds,
    activity and trail: the foothold webhook appends to those while a grant runs, under a
    resourceVersion precondition, the activity recorder rewrites its record as audit events
    arrive, and the exporter appends to the trail; a transition written from an older read
    must never drop any of them."""
    return {
        "status": status.model_copy(
            update={"footholds": None, "activity": None, "trail": None}
        ).to_wire()
    }
