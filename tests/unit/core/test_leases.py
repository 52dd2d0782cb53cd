"""A released lease is taken at once; a held one only after its duration, as observed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lapse.core.leases import (
    LeaseAction,
    build_lease,
    build_release,
    compute_lease_action,
    parse_lease,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
DURATION = timedelta(seconds=15)


def held_by(holder: str) -> dict[str, object]:
    lease = build_lease("lapse-leader", "lapse-system", holder, NOW, DURATION, None)
    lease["metadata"]["resourceVersion"] = "7"  # type: ignore[index]
    return lease


def test_a_live_lease_of_another_is_waited_for_its_whole_duration() -> None:
    lease = parse_lease(held_by("a"))
    assert compute_lease_action(lease, "b", NOW + timedelta(seconds=14), NOW) is LeaseAction.WAIT
    assert compute_lease_action(lease, "b", NOW + DURATION, NOW) is LeaseAction.ACQUIRE


def test_a_released_lease_is_taken_at_the_next_attempt() -> None:
    held = parse_lease(held_by("a"))
    assert held is not None
    released = build_release(held, "lapse-leader", "lapse-system")
    assert released["spec"]["holderIdentity"] is None
    # A compare-and-swap: a lease someone took meanwhile is not given away.
    assert released["metadata"]["resourceVersion"] == "7"
    assert released["spec"]["leaseTransitions"] == held.transitions
    after = parse_lease(released)
    assert compute_lease_action(after, "b", NOW, NOW) is LeaseAction.ACQUIRE
    taken = build_lease("lapse-leader", "lapse-system", "b", NOW, DURATION, after)
    assert taken["spec"]["holderIdentity"] == "b"
    assert taken["spec"]["leaseTransitions"] == held.transitions + 1
