"""The break-glass rules: the decision without approval wait, the review and its deadlines."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from lapse.core.actions import Action, compute_action_refusal
from lapse.core.breakglass import (
    REVIEW_OVERDUE,
    ReviewStep,
    compute_audit_fields,
    compute_authority,
    compute_breakglass_decision,
    compute_breakglass_refusal,
    compute_next_review_deadline,
    compute_overdue,
    compute_review_schedule,
    compute_review_step,
    compute_reviewed,
    is_overdue,
    parse_verdict,
)
from lapse.core.conditions import find_condition
from lapse.core.models import (
    AccessPolicy,
    BreakGlass,
    BreakGlassReview,
    BreakGlassStatus,
    Phase,
    UserInfo,
)
from lapse.core.policy import Outcome
from tests.unit.builders import NOW

SRE = UserInfo(username="sre", groups=["sre-oncall"])
LEAD = UserInfo(username="lead", groups=["sre-leads"])


def policy(name: str = "sre", **rules: Any) -> AccessPolicy:
    body: dict[str, Any] = {
        "requesters": {"groups": ["sre-oncall"]},
        "roles": [
            {"kind": "ClusterRole", "name": "cluster-admin"},
            {"kind": "ClusterRole", "name": "admin"},
        ],
        "maxDuration": "1h",
        "requireIncident": True,
        "review": {"approvers": {"groups": ["sre-leads"]}, "deadline": "24h"},
    }
    body.update(rules)
    return AccessPolicy.model_validate({"metadata": {"name": name}, "spec": {"breakGlass": body}})


def glass(
    role: str = "cluster-admin",
    duration: str = "30m",
    namespaces: tuple[str, ...] = (),
    incident: str | None = "INC-1",
    requester: UserInfo | None = SRE,
    status: dict[str, Any] | None = None,
) -> BreakGlass:
    spec: dict[str, Any] = {
        "role": {"kind": "ClusterRole", "name": role},
        "duration": duration,
        "reason": "Failover.",
        "namespaces": list(namespaces),
        "incident": incident,
        "requester": requester.model_dump() if requester else None,
    }
    return BreakGlass.model_validate(
        {"metadata": {"name": "bg", "uid": "uid-bg"}, "spec": spec, "status": status or {}}
    )


def test_grants_at_once_within_policy() -> None:
    decision = compute_breakglass_decision(glass(), [policy()], set())
    assert decision.outcome == Outcome.GRANT
    assert decision.policy == "sre" and decision.duration == timedelta(minutes=30)
    assert decision.review is not None and decision.review.deadline == "24h"
    assert "cluster-wide" in decision.message


def test_duration_exactly_at_the_maximum_is_granted() -> None:
    assert compute_breakglass_decision(glass(duration="1h"), [policy()]).outcome == Outcome.GRANT


@pytest.mark.parametrize(
    ("case", "reason", "words"),
    [
        (
            glass(requester=UserInfo(username="dev", groups=["devs"])),
            "NotAllowedToBreakGlass",
            "dev may not break glass",
        ),
        (glass(role="edit"), "RoleNotAllowed", "admin, cluster-admin"),
        (glass(incident=None), "IncidentRequired", "requires an incident reference"),
        (glass(duration="1h1s"), "DurationExceedsPolicy", "exceeds the 1h maximum"),
        (glass(namespaces=("payments", "gone")), "NamespaceNotFound", "gone does not exist"),
    ],
    ids=["group", "role", "incident", "duration", "namespace"],
)
def test_refusals_name_the_first_failed_check(case: BreakGlass, reason: str, words: str) -> None:
    decision = compute_breakglass_decision(case, [policy()], {"payments"})
    assert decision.outcome == Outcome.DENY
    assert decision.reason == reason
    assert words in decision.message


def test_over_the_maximum_is_refused_not_capped() -> None:
    decision = compute_breakglass_decision(glass(duration="2h"), [policy()])
    assert decision.outcome == Outcome.DENY and decision.duration is None
    assert "refuses rather than shortening" in decision.message


def test_no_policy_no_break_glass_and_plain_policies_do_not_count() -> None:
    plain = AccessPolicy.model_validate(
        {"metadata": {"name": "p"}, "spec": {"requesters": {"groups": ["sre-oncall"]}}}
    )
    for policies in ([], [plain]):
        assert compute_breakglass_decision(glass(), policies).outcome == Outcome.DENY


def test_incident_optional_when_the_policy_says_so() -> None:
    decision = compute_breakglass_decision(glass(incident=None), [policy(requireIncident=False)])
    assert decision.outcome == Outcome.GRANT


def test_a_later_policy_can_allow_what_an_earlier_refuses() -> None:
    strict = policy("a-strict", maxDuration="10m")
    roomy = policy("b-roomy", maxDuration="2h")
    decision = compute_breakglass_decision(glass(duration="90m"), [strict, roomy])
    assert decision.outcome == Outcome.GRANT and decision.policy == "b-roomy"


def test_missing_requester_is_invalid() -> None:
    decision = compute_breakglass_decision(glass(requester=None), [policy()])
    assert decision.outcome == Outcome.INVALID and decision.reason == "MissingRequester"


def test_namespaces_unchecked_when_unknown() -> None:
    decision = compute_breakglass_decision(glass(namespaces=("x",)), [policy()], None)
    assert decision.outcome == Outcome.GRANT


def test_create_refusal_is_the_same_decision() -> None:
    spec = glass().spec.to_wire()
    assert compute_breakglass_refusal(spec, SRE, [policy()], set()) is None
    refusal = compute_breakglass_refusal({**spec, "duration": "3h"}, SRE, [policy()], set())
    assert refusal is not None and "exceeds the 1h maximum" in refusal
    assert compute_breakglass_refusal(spec, UserInfo(username=""), [policy()], set()) is not None
    broken = compute_breakglass_refusal({"duration": "3h"}, SRE, [policy()], set())
    assert broken is not None and broken.startswith("spec.role")


def granted(**status: Any) -> BreakGlassStatus:
    base: dict[str, Any] = {
        "phase": "Active",
        "requester": SRE.model_dump(),
        "subject": {"kind": "User", "name": "sre"},
        "policy": "sre",
        "grantedAt": NOW.isoformat(),
        "expiresAt": (NOW + timedelta(minutes=30)).isoformat(),
    }
    base.update(status)
    return BreakGlassStatus.model_validate(base)


def test_review_schedule_fixed_at_activation() -> None:
    review = BreakGlassReview(deadline="24h", revoke_if_unreviewed_after="2h")
    status = compute_review_schedule(granted(), review, NOW, 1)
    assert status.review_deadline == NOW + timedelta(hours=24)
    assert status.revoke_unreviewed_at == NOW + timedelta(hours=2)
    condition = find_condition(status.conditions, "Reviewed")
    assert condition is not None and condition.status == "False"
    plain = compute_review_schedule(granted(), BreakGlassReview(), NOW, 1)
    assert plain.revoke_unreviewed_at is None


def test_review_steps_over_time() -> None:
    review = BreakGlassReview(deadline="1h", revoke_if_unreviewed_after="2h")
    status = compute_review_schedule(granted(), review, NOW, 1)
    assert compute_review_step(status, NOW) == ReviewStep.NOTHING
    assert compute_next_review_deadline(status, NOW) == NOW + timedelta(hours=1)
    later = NOW + timedelta(hours=1)
    assert is_overdue(status, later)
    assert compute_review_step(status, later) == ReviewStep.RAISE
    flagged = compute_overdue(status, later, 1)
    assert find_condition(flagged.conditions, "Reviewed").reason == REVIEW_OVERDUE  # type: ignore[union-attr]
    # Raised once: the flag in status survives a restart.
    assert compute_review_step(flagged, later) == ReviewStep.NOTHING
    assert compute_next_review_deadline(flagged, later) == NOW + timedelta(hours=2)
    assert compute_review_step(flagged, NOW + timedelta(hours=2)) == ReviewStep.REVOKE
    ended = flagged.model_copy(update={"phase": Phase.EXPIRED})
    assert compute_review_step(ended, NOW + timedelta(hours=2)) == ReviewStep.NOTHING
    assert compute_next_review_deadline(ended, NOW) is None
    assert is_overdue(ended, later)


def test_a_review_ends_all_watching() -> None:
    status = compute_review_schedule(granted(), BreakGlassReview(deadline="1h"), NOW, 1)
    reviewed = compute_reviewed(status, LEAD, "unjustified:  used the wrong runbook ", NOW, NOW, 1)
    assert reviewed.review is not None
    assert reviewed.review.verdict == "Unjustified"
    assert reviewed.review.comment == "used the wrong runbook"
    assert reviewed.review.reviewer == LEAD
    assert not is_overdue(reviewed, NOW + timedelta(days=2))
    assert compute_next_review_deadline(reviewed, NOW) is None
    condition = find_condition(reviewed.conditions, "Reviewed")
    assert condition is not None and condition.status == "True"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Justified: ok", ("Justified", "ok")),
        ("UNJUSTIFIED: no", ("Unjustified", "no")),
        ("Justified", ("Justified", "")),
        ("Maybe: hm", None),
        ("", None),
    ],
)
def test_parse_verdict(text: str, expected: tuple[str, str] | None) -> None:
    assert parse_verdict(text) == expected


def status_body(**status: Any) -> dict[str, Any]:
    return granted(**status).to_wire()


def test_who_may_review() -> None:
    active = glass(status=status_body())
    authority = compute_authority(active, [policy()], {"lapse-admins"})
    assert compute_action_refusal(Action.REVIEW, LEAD, authority) is None
    own = compute_action_refusal(
        Action.REVIEW, UserInfo(username="sre", groups=["sre-leads"]), authority
    )
    assert own is not None and "their own" in own
    outsider = compute_action_refusal(Action.REVIEW, UserInfo(username="x"), authority)
    assert outsider is not None and "not an approver" in outsider
    admin = compute_action_refusal(
        Action.REVIEW, UserInfo(username="a", groups=["lapse-admins"]), authority
    )
    assert admin is not None
    gone = compute_authority(active, [], {"lapse-admins"})
    assert compute_action_refusal(Action.REVIEW, LEAD, gone) is not None


def test_review_once_and_only_after_a_grant() -> None:
    review = {"reviewer": LEAD.model_dump(), "verdict": "Justified", "at": NOW.isoformat()}
    done = glass(status=status_body(review=review))
    refusal = compute_action_refusal(Action.REVIEW, LEAD, compute_authority(done, [policy()], ()))
    assert refusal is not None and "already reviewed by lead" in refusal
    denied = glass(status={"phase": "Denied", "policy": "sre"})
    refusal = compute_action_refusal(Action.REVIEW, LEAD, compute_authority(denied, [policy()], ()))
    assert refusal is not None and "nothing to review" in refusal
    expired = glass(status=status_body(phase="Expired"))
    authority = compute_authority(expired, [policy()], ())
    assert compute_action_refusal(Action.REVIEW, LEAD, authority) is None


def test_who_may_revoke() -> None:
    active = glass(status=status_body())
    authority = compute_authority(active, [policy()], {"lapse-admins"})
    for user in (SRE, LEAD, UserInfo(username="a", groups=["lapse-admins"])):
        assert compute_action_refusal(Action.REVOKE, user, authority) is None
    assert compute_action_refusal(Action.REVOKE, UserInfo(username="eve"), authority) is not None
    ended = glass(status=status_body(phase="Revoked"))
    refusal = compute_action_refusal(Action.REVOKE, SRE, compute_authority(ended, [policy()], ()))
    assert refusal is not None and "no access to revoke" in refusal


def test_audit_lines_carry_the_incident() -> None:
    assert compute_audit_fields("BreakGlass", {"spec": {"incident": "INC-9"}}) == {
        "incident": "INC-9"
    }
    assert compute_audit_fields("AccessRequest", {"spec": {"incident": "INC-9"}}) == {}
