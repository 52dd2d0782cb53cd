from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lapse.core.bindings import EXPIRES_AT_ANNOTATION, build_binding, compute_binding_refs
from lapse.core.grants import compute_request_grant
from lapse.core.lifecycle import compute_transition
from lapse.core.models import AccessRequestStatus, Phase, UserInfo
from lapse.core.sweep import SweepReason, compute_sweep_reason
from tests.unit.builders import NOW, make_request

EXPIRES = NOW + timedelta(minutes=10)


def binding(expires: str | None = None) -> dict[str, Any]:
    grant = compute_request_grant(make_request(), UserInfo(username="alice"), "p", EXPIRES)
    (ref,) = compute_binding_refs(grant)
    manifest = build_binding(grant, ref)
    if expires is not None:
        manifest["metadata"]["annotations"][EXPIRES_AT_ANNOTATION] = expires
    return manifest


def active(expires_at: Any = EXPIRES) -> AccessRequestStatus:
    return AccessRequestStatus(phase=Phase.ACTIVE, expires_at=expires_at)


def test_keeps_a_live_grant() -> None:
    assert compute_sweep_reason(binding(), {"uid-fix": active()}, NOW) is None


def test_removes_expired() -> None:
    later = EXPIRES + timedelta(seconds=1)
    assert compute_sweep_reason(binding(), {"uid-fix": active()}, later) == SweepReason.EXPIRED


def test_removes_orphans_and_ended() -> None:
    assert compute_sweep_reason(binding(), {}, NOW) == SweepReason.ORPHANED
    assert compute_sweep_reason(binding(), {"other": active()}, NOW) == SweepReason.ORPHANED
    ended = compute_transition(active(), Phase.REVOKED, "X", ".", NOW, 1)
    assert compute_sweep_reason(binding(), {"uid-fix": ended}, NOW) == SweepReason.ENDED


def test_extended_annotation_never_extends() -> None:
    stretched = binding("2099-01-01T00:00:00Z")
    later = EXPIRES + timedelta(seconds=1)
    assert compute_sweep_reason(stretched, {"uid-fix": active()}, later) == SweepReason.EXPIRED


def test_shortened_annotation_is_trusted() -> None:
    shortened = binding("2000-01-01T00:00:00Z")
    assert compute_sweep_reason(shortened, {"uid-fix": active()}, NOW) == SweepReason.EXPIRED


def test_grant_in_flight_kept_until_its_annotation_passes() -> None:
    in_flight = {"uid-fix": AccessRequestStatus()}
    assert compute_sweep_reason(binding(), in_flight, NOW) is None
    assert compute_sweep_reason(binding(), in_flight, EXPIRES) == SweepReason.EXPIRED


def test_lookalike_never_removed() -> None:
    lookalike = binding()
    del lookalike["metadata"]["ownerReferences"]
    assert compute_sweep_reason(lookalike, {}, NOW + timedelta(days=999)) is None


@given(
    annotation=st.integers(min_value=-3600, max_value=3600),
    status=st.integers(min_value=-3600, max_value=3600),
    now=st.integers(min_value=-3600, max_value=3600),
)
def test_removed_once_the_earlier_deadline_passes(annotation: int, status: int, now: int) -> None:
    at = (NOW + timedelta(seconds=annotation)).isoformat().replace("+00:00", "Z")
    owners = {"uid-fix": active(NOW + timedelta(seconds=status))}
    reason = compute_sweep_reason(binding(at), owners, NOW + timedelta(seconds=now))
    assert (reason == SweepReason.EXPIRED) is (now >= min(annotation, status))


def created(manifest: dict[str, Any], at: Any) -> dict[str, Any]:
    manifest["metadata"]["creationTimestamp"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return manifest


def test_binding_newer_than_the_owner_listing_is_not_orphaned() -> None:
    # A request granted while the sweep ran: its owner is missing from the older listing.
    listed_at = NOW + timedelta(seconds=5, milliseconds=300)
    fresh = created(binding(), NOW + timedelta(seconds=6))
    assert compute_sweep_reason(fresh, {}, NOW + timedelta(seconds=7), listed_at) is None


def test_binding_stamped_in_the_listings_second_is_not_orphaned() -> None:
    # creationTimestamp has whole seconds: 12:00:05 may be 12:00:05.9, after a 12:00:05.3 listing.
    listed_at = NOW + timedelta(seconds=5, milliseconds=300)
    same_second = created(binding(), NOW + timedelta(seconds=5))
    assert compute_sweep_reason(same_second, {}, NOW + timedelta(seconds=7), listed_at) is None


def test_binding_without_a_creation_stamp_is_not_orphaned_by_a_listing() -> None:
    assert compute_sweep_reason(binding(), {}, NOW, NOW) is None


def test_binding_older_than_the_owner_listing_is_orphaned() -> None:
    listed_at = NOW + timedelta(seconds=5)
    old = created(binding(), NOW)
    assert compute_sweep_reason(old, {}, listed_at, listed_at) == SweepReason.ORPHANED
    ended = compute_transition(active(), Phase.REVOKED, "X", ".", NOW, 1)
    assert compute_sweep_reason(old, {"uid-fix": ended}, listed_at, listed_at) == SweepReason.ENDED
