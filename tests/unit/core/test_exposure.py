"""What exposure does to a policy's status, a GitOps approval, an approval and a grant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from lapse.core.exposure import (
    GRANT_THROUGH,
    compute_acting_as,
    compute_applier_check,
    compute_exposure_conditions,
    compute_forged,
    compute_policy_exposure,
    compute_roles,
)
from lapse.core.models import AccessPolicy, UserInfo
from lapse.core.policy import Decision, Outcome
from lapse.core.rbac import Held, Snapshot, Trusted, compute_holdings, parse_rules
from tests.unit.core.test_rbac import EDIT, binding, snapshot, user

APPLIER = "system:serviceaccount:argocd:argocd-application-controller"
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)
GITOPS = Decision(Outcome.GRANT, "GitOpsApproved", "ok", policy="gitops", duration=timedelta(1))


def policy(**approval: Any) -> AccessPolicy:
    return AccessPolicy.model_validate(
        {
            "metadata": {"name": "gitops", "generation": 3},
            "spec": {
                "approval": {
                    "mode": "Approvers",
                    "approvers": {"users": ["lead"], "groups": ["leads"]},
                    "trustedAppliers": {"users": [APPLIER]},
                    **approval,
                }
            },
        }
    )


def alice_in_argocd() -> Snapshot:
    return snapshot(
        {"ClusterRole/edit": EDIT},
        [binding("RoleBinding", "alice-edit", "ClusterRole/edit", [user("alice")], "argocd")],
    )


def test_an_exposed_applier_makes_the_policy_exposed_and_holds_gitops() -> None:
    state = alice_in_argocd()
    records = compute_policy_exposure(policy(), state, Trusted(), compute_holdings(state))
    assert {r.role for r in records} == {"Applier"}
    assert all(r.actor == "User alice" and not r.accepted for r in records)
    (condition,) = compute_exposure_conditions(records, [], now=NOW, generation=3)
    assert (condition.status, condition.reason) == ("True", "ApplierExposed")
    assert "User alice can impersonate it" in condition.message
    held = compute_applier_check(GITOPS, policy(), UserInfo(username=APPLIER), records)
    assert (held.outcome, held.reason) == (Outcome.PENDING, "ApplierExposed")
    assert held.duration == GITOPS.duration


def test_accepted_actors_are_listed_but_hold_nothing_up() -> None:
    state = alice_in_argocd()
    accepting = policy(exposureAccepted={"users": ["alice"]})
    records = compute_policy_exposure(accepting, state, Trusted(), compute_holdings(state))
    assert records and all(r.accepted for r in records)
    (condition,) = compute_exposure_conditions(records, [], now=NOW, generation=3)
    assert (condition.status, condition.reason) == ("False", "NotExposed")
    assert compute_applier_check(GITOPS, accepting, UserInfo(username=APPLIER), records) == GITOPS


def test_the_condition_keeps_its_transition_time_while_it_holds() -> None:
    state = alice_in_argocd()
    records = compute_policy_exposure(policy(), state, Trusted(), compute_holdings(state))
    first = compute_exposure_conditions(records, [], now=NOW, generation=3)
    later = compute_exposure_conditions(records, first, now=NOW + timedelta(hours=1), generation=3)
    assert later[0].last_transition_time == NOW
    cleared = compute_exposure_conditions([], later, now=NOW + timedelta(hours=2), generation=3)
    assert cleared[0].last_transition_time == NOW + timedelta(hours=2)


def test_an_impersonated_applier_is_unverified() -> None:
    held = compute_applier_check(
        GITOPS, policy(), UserInfo(username=APPLIER), [], unverified="no UID"
    )
    assert (held.outcome, held.reason) == (Outcome.PENDING, "ApplierUnverified")


def test_an_approval_the_requester_could_forge() -> None:
    impersonate_lead = [
        {
            "verbs": ["impersonate"],
            "apiGroups": [""],
            "resources": ["users"],
            "resourceNames": ["lead"],
        }
    ]
    state = snapshot(
        {"ClusterRole/imp": impersonate_lead},
        [binding("ClusterRoleBinding", "imp", "ClusterRole/imp", [user("mallory")])],
    )
    holdings = compute_holdings(state)
    lead = UserInfo(username="lead")
    mallory = UserInfo(username="mallory")
    path = compute_forged(lead, policy(), state, Trusted(), holdings, [mallory])
    assert path is not None and path.way == "impersonate it"
    assert (
        compute_forged(lead, policy(), state, Trusted(), holdings, [UserInfo(username="x")]) is None
    )
    # Counted through the group only: the group must be impersonated too.
    member = UserInfo(username="carol", groups=["leads"])
    assert compute_forged(member, policy(), state, Trusted(), holdings, [mallory]) is None


def test_a_grant_of_edit_where_the_applier_lives_acts_as_it() -> None:
    empty = snapshot({"ClusterRole/edit": EDIT}, [])
    rules = [Held(r, "argocd", GRANT_THROUGH, True) for r in parse_rules(EDIT)]
    found = compute_acting_as(rules, [], empty, compute_roles([policy()]))
    assert [(a.role, a.policies) for a in found] == [("Applier", ("gitops",))]
    assert (
        "ServiceAccount argocd/argocd-application-controller, a trusted applier"
        in found[0].describe()
    )
    elsewhere = [Held(r, "shop", GRANT_THROUGH, True) for r in parse_rules(EDIT)]
    assert compute_acting_as(elsewhere, [], empty, compute_roles([policy()])) == []
