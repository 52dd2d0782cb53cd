"""Which bindings the sweep removes, and why: the safety net under the expiry scheduler.

The sweep sees every binding Lapse manages and the status of every owner (at start-up; later
the active grants the operator knows, with a fresh read of the owner of any binding that looks
wrong), so after an outage it finds what lapsed while nobody watched. It trusts the earlier of
the binding's annotation and the owner's status: a tampered annotation can only shorten access,
never extend it.

A listing of owners is a snapshot, and a binding created after it (a grant made while the sweep
ran) has an owner the snapshot cannot show: such a binding is never called orphaned on the
strength of that snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from lapse.core.bindings import binding_expiry, compute_owner_uid, parse_time
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


def compute_listed_before(binding: Mapping[str, Any], listed_at: datetime) -> bool:
    """Whether `binding` existed when owners were listed at `listed_at`.

    `creationTimestamp` has whole seconds, so a binding stamped in the listing's own second may
    be newer than the listing and counts as not yet listed; one without a readable stamp too.
    """
    created = parse_time((binding.get("metadata") or {}).get("creationTimestamp"))
    return created is not None and created < listed_at.replace(microsecond=0)


def compute_sweep_reason(
    binding: Mapping[str, Any],
    owners: Mapping[str, GrantStatus],
    now: datetime,
    listed_at: datetime | None = None,
) -> SweepReason | None:
    """Why `binding` must go, or None to keep it.

    `owners` maps the UID of every live owner of the binding's kind to its status, as listed at
    `listed_at` (None: read after the binding, so it is complete for it); a binding that is not
    Lapse's (see `compute_owner_uid`) is never removed.
    """
    uid = compute_owner_uid(binding)
    if uid is None:
        return None
    status = owners.get(uid)
    if status is None:
        if listed_at is not None and not compute_listed_before(binding, listed_at):
            # Its owner may have been created after the listing: the next sweep will know.
            return None
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
