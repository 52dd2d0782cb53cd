"""Conditions per the Kubernetes API conventions.

`lastTransitionTime` moves only when a condition's status flips, like cert-manager's
`SetCertificateCondition`; a new reason or message alone keeps the old time, so clients can tell
how long a state has held.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from lapse.core.models import Condition

ConditionStatus = Literal["True", "False", "Unknown"]


def compute_conditions(
    existing: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """The conditions with `type_` set; others are kept in their order."""
    previous = next((c for c in existing if c.type == type_), None)
    since = previous.last_transition_time if previous and previous.status == status else now
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    if previous is None:
        return [*existing, updated]
    return [updated if c.type == type_ else c for c in existing]


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)
