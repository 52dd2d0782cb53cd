"""Access reviews from objects and from exported trails: who held what, when, on whose say-so."""

from __future__ import annotations

from datetime import timedelta

from lapse.core.accessreview import ReviewFilters, build_access_review
from lapse.core.grants import GrantKey
from lapse.core.models import AccessRequest, BreakGlass, Phase
from tests.unit.builders import make_request
from tests.unit.trails import ADMIN, at, build_stream, glass_status, request_status


def request(name: str, **status: object) -> AccessRequest:
    made = make_request(name=name, user=str(status.get("user", "alice")))
    return made.model_copy(update={"status": request_status(**status)})  # type: ignore[arg-type]


def glass(name: str = "inc-4711", **status: object) -> BreakGlass:
    body = {
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "spec": {
            "role": {"kind": "ClusterRole", "name": "cluster-admin"},
            "duration": "30m",
            "reason": "Database down.",
            "incident": "INC-4711",
        },
    }
    made = BreakGlass.model_validate(body)
    return made.model_copy(update={"status": glass_status(**status)})  # type: ignore[arg-type]


def test_rows_from_objects() -> None:
    review = build_access_review(
        grants=[
            request("self", policy="payments-self-service"),
            request("four-eyes", approvers=["bob", "carol"], policy="payments-four-eyes"),
            request("merged", pull_request="https://git.example/pr/7", user="deployer"),
            glass(),
        ],
        since=at(-60),
        until=at(24 * 60),
        cluster="prod",
    )
    rows = {r.name: r for r in review.rows}
    assert rows["self"].approval == "self-service (policy payments-self-service)"
    assert rows["four-eyes"].approval == "bob, carol"
    assert rows["four-eyes"].approved_by == ["bob", "carol"]
    assert rows["merged"].approval == "pull request https://git.example/pr/7"
    assert rows["self"].ended == "Expired" and rows["self"].duration_seconds == 3600
    assert rows["self"].target_namespaces == ["payments"]
    assert rows["self"].subject == "User:alice" and rows["self"].role == "ClusterRole/edit"
    bg = rows["inc-4711"]
    assert (bg.review_verdict, bg.reviewer, bg.unreviewed) == ("Justified", "dave", False)
    assert bg.incident == "INC-4711" and bg.target_namespaces == []
    assert bg.ended == "Revoked" and bg.end_reason == "Revoked: fixed"
    assert bg.activity is not None and bg.activity.events == 12
    assert bg.cluster == "prod"
    assert review.summary.grants == 4
    assert review.summary.subjects == 3
    assert review.summary.break_glasses == 1 and review.summary.unreviewed == 0


def test_only_grants_overlapping_the_period() -> None:
    grants = [request("early", lasted=10), request("late", granted=120), request("never")]
    never = grants[2].status.model_copy(update={"granted_at": None, "phase": Phase.DENIED})
    grants[2] = grants[2].model_copy(update={"status": never})
    review = build_access_review(grants=grants, since=at(30), until=at(200))
    assert [r.name for r in review.rows] == ["late"]
    # Access still held counts up to the end of the period.
    active = request("active", ended=None)
    (row,) = build_access_review(grants=[active], since=at(0), until=at(31)).rows
    assert row.ended is None and row.ended_at is None and row.duration_seconds == 30 * 60


def test_unreviewed_break_glass_is_flagged() -> None:
    review = build_access_review(grants=[glass(reviewer=None)], since=at(-1), until=at(60 * 24))
    (row,) = review.rows
    assert row.unreviewed and row.review_verdict is None
    assert review.summary.unreviewed == 1


def test_filters() -> None:
    grants: list[AccessRequest | BreakGlass] = [request("a"), request("b", user="bob"), glass()]

    def names(**given: str) -> list[str]:
        review = build_access_review(
            grants=grants, filters=ReviewFilters(**given), since=at(-1), until=at(600)
        )
        return sorted(r.name for r in review.rows)

    assert names(subject="bob") == ["b"]
    assert names(subject="User:alice") == ["a"]
    assert names(role="edit") == ["a", "b"]
    assert names(role="ClusterRole/cluster-admin") == ["inc-4711"]
    # A namespace's review includes cluster-wide access, which reached it too.
    assert names(namespace="payments") == ["a", "b", "inc-4711"]
    assert names(namespace="ledger") == ["inc-4711"]


def test_rows_from_the_trail() -> None:
    key = GrantKey("AccessRequest", "payments", "gone", "uid-gone")
    records = build_stream(key, request_status(approvers=["bob"]), retired=True)
    glass_key = GrantKey("BreakGlass", None, "inc-1", "uid-inc-1")
    status = glass_status()
    activity = {"activity": status.activity.to_wire()} if status.activity else {}
    glass_records = build_stream(
        glass_key, status, role=ADMIN, extra={"incident": "INC-1", **activity}
    )
    # Delivered twice and out of order: the rows do not care.
    review = build_access_review(
        grants=[],
        records=[*reversed(records), *glass_records, *glass_records],
        since=at(0),
        until=at(600),
    )
    rows = {r.name: r for r in review.rows}
    gone = rows["gone"]
    assert gone.source == "trail"
    assert gone.approval == "bob" and gone.ended == "Expired"
    assert gone.end_reason == "Expired: Done."
    assert gone.granted_at == at(1) and gone.ended_at == at(61)
    assert gone.subject == "User:alice" and gone.target_namespaces == ["payments"]
    bg = rows["inc-1"]
    assert bg.kind == "BreakGlass" and bg.incident == "INC-1"
    assert (bg.review_verdict, bg.reviewer) == ("Justified", "dave")
    assert bg.ended == "Revoked" and bg.duration_seconds == 20 * 60
    assert bg.activity is not None and bg.activity.events == 12
    assert bg.approval == "break-glass (policy sre-break-glass)"


def test_the_object_wins_over_its_trail() -> None:
    live = request("fix", approvers=["bob"])
    assert live.metadata.uid is not None
    key = GrantKey("AccessRequest", "payments", "fix", live.metadata.uid)
    records = build_stream(key, request_status(ended=None))
    review = build_access_review(
        grants=[live], records=records, since=at(0), until=at(0) + timedelta(days=1)
    )
    (row,) = review.rows
    assert row.source == "cluster" and row.ended == "Expired"


def test_wire_keys_are_stable() -> None:
    review = build_access_review(grants=[glass()], since=at(-1), until=at(600))
    wire = review.to_wire()
    assert list(wire) == ["since", "until", "filters", "summary", "rows"]
    assert list(wire["rows"][0])[:6] == ["cluster", "kind", "namespace", "name", "uid", "subject"]
    assert wire["rows"][0]["grantedAt"] == "2026-11-24T14:00:00Z"
