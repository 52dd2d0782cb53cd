"""Matching audit events to grants, and the bounded record they fold into."""

from __future__ import annotations

from typing import Any

from lapse.core.activity import (
    MAX_WRITES,
    ActivityTally,
    build_activity_grant,
    compute_activity_summary,
    compute_event_keys,
    compute_matches,
    parse_audit_event,
)
from tests.unit.builders import START
from tests.unit.builders import audit_event as event
from tests.unit.builders import audit_time as _time


def glass(namespaces: list[str], phase: str = "Active", ended: float | None = None) -> Any:
    status: dict[str, Any] = {
        "phase": phase,
        "subject": {"kind": "User", "name": "carol"},
        "grantedAt": _time(0),
        "expiresAt": _time(1800),
    }
    if ended is not None:
        status["endedAt"] = _time(ended)
    body = {
        "metadata": {"name": "inc-4711", "uid": "u1"},
        "spec": {"namespaces": namespaces},
        "status": status,
    }
    grant = build_activity_grant("BreakGlass", body)
    assert grant is not None
    return grant


def matches(item: dict[str, Any], grant: Any) -> bool:
    parsed = parse_audit_event(item)
    assert parsed is not None
    return grant.subject_key in compute_event_keys(parsed) and bool(
        compute_matches(parsed, [grant])
    )


def test_the_acting_user_is_the_impersonated_one() -> None:
    grant = glass(["payments"])
    assert matches(event("delete", "pods", user="admin", impersonated="carol"), grant)
    assert not matches(event("delete", "pods", user="dave"), grant)
    assert not matches(event("delete", "pods", user="admin", impersonated="dave"), grant)


def test_a_subject_impersonating_someone_else_is_still_using_the_grant() -> None:
    assert matches(event("get", "secrets", user="carol", impersonated="bob"), glass([]))


def test_outside_the_window_or_the_namespaces_is_not_the_grant() -> None:
    grant = glass(["payments"], phase="Revoked", ended=600)
    assert matches(event("delete", "pods", at=599), grant)
    assert not matches(event("delete", "pods", at=601), grant)
    assert not matches(event("delete", "pods", at=-1), grant)
    assert not matches(event("delete", "pods", namespace="ledger"), grant)
    assert not matches(event("delete", "nodes", namespace=None), grant)
    assert matches(event("delete", "namespaces", namespace=None, name="payments"), grant)
    assert matches(event("delete", "nodes", namespace=None), glass([]))


def test_only_completed_requests_count() -> None:
    assert parse_audit_event(event("get", "pods", stage="RequestReceived")) is None
    assert parse_audit_event(event("get", "pods", stage="ResponseStarted")) is None


def test_a_pending_grant_has_no_window() -> None:
    body = {"metadata": {"name": "x", "uid": "u"}, "spec": {}, "status": {"phase": "Pending"}}
    assert build_activity_grant("AccessRequest", body) is None


def test_the_record_sorts_what_was_done() -> None:
    tally = ActivityTally()
    for item in (
        event("delete", "pods", at=10),
        event("patch", "deployments", subresource="scale", name="api", at=20),
        event("get", "secrets", name="db-password", at=30),
        event("create", "rolebindings", code=403, name=None, at=40),
        event("create", "pods", subresource="exec", at=50),
        event("get", "pods", at=5),
        event("delete", "pods", code=404, name="gone", at=45),
    ):
        parsed = parse_audit_event(item)
        assert parsed is not None
        assert tally.add(parsed)
    record = tally.build(START)
    assert [(e.verb, e.resource, e.name) for e in record.writes] == [
        ("delete", "pods", "web-1"),
        ("patch", "deployments/scale", "api"),
    ]
    assert [e.name for e in record.secret_reads] == ["db-password"]
    assert [(e.verb, e.resource, e.code) for e in record.denied] == [
        ("create", "rolebindings", 403)
    ]
    assert [e.resource for e in record.connects] == ["pods/exec"]
    assert record.events == 7
    assert {(c.verb, c.resource): c.count for c in record.counts}[("delete", "pods")] == 2
    assert compute_activity_summary(record) == (
        "7 requests, 2 writes, 1 Secret read, 1 exec session, 1 refused"
    )


def test_a_batch_sent_again_counts_once_even_after_a_restart() -> None:
    tally = ActivityTally()
    parsed = parse_audit_event(event("delete", "pods", audit_id="a-1"))
    assert parsed is not None
    assert tally.add(parsed)
    assert not tally.add(parsed)
    again = ActivityTally.of(tally.build(START))
    assert not again.add(parsed)
    assert again.build(START).events == 1


def test_the_record_is_bounded_and_says_how_much_it_left_out() -> None:
    tally = ActivityTally()
    for i in range(MAX_WRITES + 25):
        parsed = parse_audit_event(event("delete", "pods", name=f"p{i}", at=i))
        assert parsed is not None
        tally.add(parsed)
    record = tally.build(START)
    assert len(record.writes) == MAX_WRITES
    assert record.omitted == 25
    assert record.events == MAX_WRITES + 25
    assert "25 more in the audit log" in compute_activity_summary(record)
