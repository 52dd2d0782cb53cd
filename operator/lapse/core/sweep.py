"""Which bindings the sweep removes, and why: the safety net under the expiry scheduler.

The sweep sees every binding Lapse manages and the status of every owner, so after an outage
it finds what lapsed while nobody watched. It trusts the earlier of the binding's annotation
and the owner's status: a tampered annotation can only shorten access, never extend it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from lapse.core.bindings import binding_expiry, compute_owner_uid
from lapse.core.models import GrantStatus, Phase


class SweepReason(StrEnum):
    EXPIRED = "expired"
    ORPHANED = "orphaned"
    ENDED = "ended"


def compute_deadline(binding: Mapping[str, Any], status: GrantStatus | None) -> datetime | None:
    """The earlier of the binding's annotation and the owner's `expiresAt`."""
    candidates = [binding_expiry(binding), status.expires_at if status else None]
    known = [c for c in candidates if c is not None]
    return min(known) if known else None


def compute_sweep_reason(
    binding: Mapping[str, Any],
    owners: Mapping[str, GrantStatus],
    now: datetime,
) -> SweepReason | None:
    """Why `binding` must go, or None to keep it.

    `owners` maps the UID of every live owner of the binding's kind to its status; a binding
    that is not Lapse's (see `compute_owner_uid`) is never removed.
    """
    uid = compute_owner_uid(binding)
    if uid is None:
        return None
    status = owners.get(uid)
    if status is None:
        return SweepReason.ORPHANED
    if status.phase is not None and status.phase.ended:
        return SweepReason.ENDED
    deadline = compute_deadline(binding, status)
    if deadline is None and status.phase == Phase.ACTIVE:
        # An active grant without any readable expiry cannot be trusted to end: end it now.
        return SweepReason.EXPIRED
    if deadline is not None and deadline <= now:
        return SweepReason.EXPIRED
    return None
