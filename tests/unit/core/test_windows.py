"""When grants decided ahead begin and end, and how far an extension may stretch a grant."""

from __future__ import annotations

from datetime import timedelta

from lapse.core.models import AccessRequest
from lapse.core.windows import (
    compute_extension_chain,
    compute_extension_refusal,
    compute_lead_refusal,
    compute_max_total_duration,
    compute_pending_deadline,
    compute_scheduled_window,
    is_deferred,
)
from tests.unit.builders import NOW, make_policy, make_request


def created(request: AccessRequest, **status: object) -> AccessRequest:
    meta = request.metadata.model_copy(update={"creation_timestamp": NOW})
    merged = {**request.status.model_dump(), **status}
    return request.model_copy(
        update={"metadata": meta, "status": type(request.status).model_validate(merged)}
    )


def active(name: str = "fix", hours: float = 1, **status: object) -> AccessRequest:
    return created(
        make_request(name, duration=f"{int(hours * 60)}m"),
        phase="Active",
        granted_at=NOW,
        expires_at=NOW + timedelta(hours=hours),
        subject={"kind": "User", "name": "alice"},
        **status,
    )


def extension(name: str = "fix-more", by: str = "30m", **spec: object) -> AccessRequest:
    return created(make_request(name, duration=by, extends="fix", **spec))


def test_a_start_in_the_future_defers_the_grant_and_fixes_its_window() -> None:
    later = created(make_request(start_at=NOW + timedelta(hours=2)))
    assert is_deferred(later)
    window = compute_scheduled_window(later, timedelta(hours=1), NOW)
    assert (window.starts_at, window.expires_at) == (
        NOW + timedelta(hours=2),
        NOW + timedelta(hours=3),
    )
    # Approved after the start: what is left of the window, never more.
    late = compute_scheduled_window(later, timedelta(hours=1), NOW + timedelta(hours=2, minutes=20))
    assert late.expires_at == NOW + timedelta(hours=3)


def test_a_start_at_or_before_creation_is_now() -> None:
    now = created(make_request(start_at=NOW))
    assert not is_deferred(now)
    assert compute_scheduled_window(now, timedelta(hours=1), NOW).starts_at == NOW


def test_lead_time_is_bounded_by_the_policy() -> None:
    policy = make_policy(maxLeadTime="24h")
    ok = created(make_request(start_at=NOW + timedelta(hours=24)))
    far = created(make_request(start_at=NOW + timedelta(hours=25)))
    assert compute_lead_refusal(ok, policy) is None
    refusal = compute_lead_refusal(far, policy)
    assert refusal is not None and refusal.reason == "LeadTimeExceedsPolicy"
    assert "24h" in refusal.message and "25h" in refusal.message


def test_a_pending_request_stops_waiting_when_its_window_ends() -> None:
    policy = make_policy(approval={"mode": "Approvers", "timeout": "24h"})
    soon = created(make_request(start_at=NOW + timedelta(hours=1)))
    assert compute_pending_deadline(soon, policy, timedelta(hours=2)) == NOW + timedelta(hours=3)
    plain = created(make_request())
    assert compute_pending_deadline(plain, policy, timedelta(hours=2)) == NOW + timedelta(hours=24)


def test_an_extension_of_an_active_grant_is_allowed_within_the_limits() -> None:
    policy = make_policy()
    assert compute_extension_refusal(extension(), active(), policy, timedelta(minutes=30)) is None
    chain = compute_extension_chain("fix", active().status)
    assert chain is not None and (chain.root, chain.extensions) == ("fix", 1)


def test_the_default_total_is_twice_max_duration() -> None:
    assert compute_max_total_duration(make_policy(maxDuration="4h")) == timedelta(hours=8)
    assert compute_max_total_duration(make_policy(maxTotalDuration="5h")) == timedelta(hours=5)


def test_refusals_name_the_rule() -> None:
    policy = make_policy(maxTotalDuration="1h30m", maxExtensions=1)
    by = timedelta(minutes=45)
    cases = {
        "ExtendedNotFound": (extension(), None),
        "ExtendedNotActive": (extension(), created(make_request("fix"), phase="Expired")),
        "AlreadyExtended": (extension(), active(extended_by="other")),
        "ExtensionMismatch": (created(make_request("x", role="view", extends="fix")), active()),
        "ExceedsMaxTotalDuration": (extension(), active()),
        "TooManyExtensions": (
            extension(),
            active(chain={"root": "first", "startedAt": NOW, "extensions": 1}),
        ),
        "InvalidExtension": (extension(start_at=NOW + timedelta(hours=1)), active()),
    }
    for reason, (asking, extended) in cases.items():
        refusal = compute_extension_refusal(asking, extended, policy, by)
        assert refusal is not None and refusal.reason == reason, (reason, refusal)
    total = compute_extension_refusal(extension(), active(), policy, by)
    assert total is not None and "1h30m" in total.message and "1h45m" in total.message


def test_an_extension_for_someone_else_is_refused() -> None:
    bob = created(make_request("bobs", user="bob", extends="fix"))
    refusal = compute_extension_refusal(bob, active(), make_policy(), timedelta(minutes=10))
    assert refusal is not None and "same subject" in refusal.message
