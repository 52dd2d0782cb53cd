"""What the web page shows: which requests wait for whom, what the forms offer, a story's order.

Pure functions of the models and the user's identity; the browser tests prove the page
renders them, these fix every case of the rules.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from lapse.core.models import AccessRequest, BreakGlass, UserInfo
from lapse.ui.views import grant_view, mine, offers, story, waits_for
from tests.unit.builders import NOW, make_policy, make_request

ALICE = UserInfo(username="alice", groups=["payments-devs"])
BOB = UserInfo(username="bob", groups=["payments-leads"])
CAROL = UserInfo(username="carol", groups=["sre-oncall"])


def stamp(**delta: float) -> str:
    return (NOW + timedelta(**delta)).isoformat().replace("+00:00", "Z")


def pending(**status: Any) -> AccessRequest:
    base = make_request()
    body = base.model_dump(by_alias=True, mode="json", exclude_none=True)
    body["status"] = {
        "phase": "Pending",
        "approval": {
            "mode": "Approvers",
            "required": 1,
            "approvers": {"groups": ["payments-leads"]},
        },
        **status,
    }
    return AccessRequest.model_validate(body)


def test_a_pending_request_waits_for_its_approvers_only() -> None:
    request = pending()
    assert waits_for(request, BOB)
    assert not waits_for(request, CAROL)
    assert not waits_for(request, None)


def test_it_never_waits_for_its_own_requester_even_one_named_as_approver() -> None:
    request = pending(
        approval={"mode": "Approvers", "required": 1, "approvers": {"users": ["alice"]}}
    )
    assert not waits_for(request, ALICE)
    assert mine(request, ALICE)


def test_it_never_waits_for_the_subject_it_grants() -> None:
    request = pending(subject={"kind": "User", "name": "bob"})
    assert not waits_for(request, BOB)
    assert mine(request, BOB)


def test_it_no_longer_waits_for_an_approver_who_decided() -> None:
    decided = [{"user": {"username": "bob"}, "decision": "Approve", "at": stamp()}]
    two = {"mode": "Approvers", "required": 2, "approvers": {"groups": ["payments-leads"]}}
    assert not waits_for(pending(approvals=decided, approval=two), BOB)


@pytest.mark.parametrize("phase", ["Active", "Denied", "Expired", "Approved"])
def test_only_a_pending_request_waits(phase: str) -> None:
    request = pending()
    request = request.model_copy(
        update={"status": request.status.model_copy(update={"phase": phase})}
    )
    assert not waits_for(request, BOB)


def test_a_self_service_request_waits_for_nobody() -> None:
    assert not waits_for(pending(approval={"mode": "Auto"}), BOB)


def test_the_view_carries_countdown_and_risk_fields() -> None:
    request = pending(
        risk={"summary": "edit adds: read secrets", "capabilities": ["ReadSecrets"]},
        expiresAt=stamp(hours=1),
    )
    view = grant_view(request, BOB)
    assert view["phase"] == "Pending"
    assert view["waitsForMe"] is True
    assert view["mine"] is False
    assert view["risk"] == "edit adds: read secrets"
    assert view["capabilities"] == ["ReadSecrets"]
    assert view["expiresAt"] == stamp(hours=1)
    assert view["role"] == "ClusterRole edit"


def test_a_break_glass_view_says_whether_its_review_is_due() -> None:
    glass = BreakGlass.model_validate(
        {
            "metadata": {"name": "inc-1", "uid": "u1"},
            "spec": {"role": {"kind": "ClusterRole", "name": "admin"}, "duration": "30m",
                     "reason": "db down", "incident": "INC-1",
                     "requester": {"username": "carol", "groups": ["sre-oncall"]}},
            "status": {"phase": "Active", "reviewDeadline": stamp(hours=24)},
        }
    )  # fmt: skip
    view = grant_view(glass, CAROL)
    assert view["reviewDue"] is True and view["mine"] is True
    assert view["namespaces"] == [] and view["incident"] == "INC-1"
    body = glass.model_dump(by_alias=True, mode="json", exclude_none=True)
    body["status"]["review"] = {
        "reviewer": {"username": "dave"},
        "verdict": "Justified",
        "at": stamp(hours=1),
    }
    assert grant_view(BreakGlass.model_validate(body), CAROL)["reviewDue"] is False


def test_the_forms_offer_what_the_policies_naming_the_user_allow() -> None:
    policies = [
        make_policy("self", maxDuration="2h", defaultDuration="30m"),
        make_policy("other", requesters={"groups": ["someone-else"]}),
        make_policy(
            "glass", roles=[], requesters={},
            breakGlass={"requesters": {"groups": ["sre-oncall"]},
                        "roles": [{"kind": "ClusterRole", "name": "cluster-admin"}],
                        "maxDuration": "1h"},
        ),
    ]  # fmt: skip
    mine_offers = offers(policies, ALICE)
    assert [o["policy"] for o in mine_offers["requests"]] == ["self"]
    offered = mine_offers["requests"][0]
    assert [r["name"] for r in offered["roles"]] == ["view", "edit"]
    assert offered["namespaces"] == ["payments"]
    assert offered["durations"] == ["30m", "15m", "1h", "2h"]
    assert mine_offers["breakGlass"] == []
    glass = offers(policies, CAROL)["breakGlass"]
    assert glass[0]["roles"] == ["cluster-admin"]
    assert glass[0]["durations"] == ["15m", "30m", "1h"]
    assert offers(policies, None) == {"requests": [], "breakGlass": []}


def test_a_story_is_in_time_order_across_phases_decisions_and_events() -> None:
    request = pending(
        history=[{"at": stamp(seconds=0), "phase": "Pending", "reason": "AwaitingApproval"},
                 {"at": stamp(seconds=20), "phase": "Active", "reason": "Granted"}],
        approvals=[{"user": {"username": "bob"}, "decision": "Approve", "at": stamp(seconds=10),
                    "comment": "ok"}],
    )  # fmt: skip
    events = [{"type": "Normal", "reason": "Granted", "lastTimestamp": stamp(seconds=21),
               "message": "granted"}]  # fmt: skip
    titles = [entry["title"] for entry in story(request, events)]
    assert titles == [
        "Pending (AwaitingApproval)",
        "bob approved",
        "Active (Granted)",
        "Normal Granted",
    ]
    assert [e["source"] for e in story(request, None)] == ["phase", "decision", "phase"]
