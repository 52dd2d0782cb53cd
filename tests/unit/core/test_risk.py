"""The risk summary over the bootstrap roles, aggregation, wildcards and odd rules."""

from __future__ import annotations

from typing import Any

import pytest

from kubeapi.rbac import aggregate, bootstrap_objects
from lapse.core.models import AccessPolicy, RiskSummary
from lapse.core.policy import Decision, Outcome
from lapse.core.risk import (
    build_risk_summary,
    compute_capabilities,
    compute_capability_decision,
    compute_permissions,
)


def bootstrap(name: str) -> list[dict[str, Any]]:
    """A bootstrap ClusterRole's rules as an API server holds them, aggregation included."""
    roles = [o for o in bootstrap_objects() if o["kind"] == "ClusterRole"]
    aggregated = aggregate(roles)
    if name in aggregated:
        return aggregated[name]
    return next(r for r in roles if r["metadata"]["name"] == name)["rules"]


def test_view_reads_and_flags_nothing_dangerous() -> None:
    rules = bootstrap("view")
    assert compute_capabilities(rules) == []
    summary = build_risk_summary("ClusterRole view", rules).summary
    assert "read pods" in summary and "secrets" not in summary


def test_edit_names_secrets_exec_workloads_tokens_and_impersonation() -> None:
    caps = compute_capabilities(bootstrap("edit"))
    for name in ("ReadSecrets", "ExecIntoPods", "RunWorkloads", "MintTokens", "Impersonate"):
        assert name in caps
    assert "WriteRBAC" not in caps


def test_admin_adds_rbac_and_cluster_admin_is_wildcards() -> None:
    assert "WriteRBAC" in compute_capabilities(bootstrap("admin"))
    caps = compute_capabilities(bootstrap("cluster-admin"))
    assert "Wildcards" in caps
    assert build_risk_summary(
        "ClusterRole cluster-admin", bootstrap("cluster-admin")
    ).summary.startswith("ClusterRole cluster-admin gives: do anything with *")


def test_phrases_and_what_is_new_for_the_subject() -> None:
    rules = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create"]},
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["one"]},
        {"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
    ]
    texts = [p.text for p in compute_permissions(rules)]
    assert texts == [
        "read pods", "read deployments.apps", "write deployments.apps", "create pods/exec",
        "read secrets",
    ]  # fmt: skip
    summary = build_risk_summary("Role x", rules, held=["read pods", "read deployments.apps"])
    # The most telling first: what a reviewer must not miss, then writes, then reads.
    assert summary.adds == ["create pods/exec", "read secrets", "write deployments.apps"]
    assert summary.already_had == ["read pods", "read deployments.apps"]
    assert summary.summary.startswith(
        "Role x adds: create pods/exec, read secrets, write deployments.apps; "
        "already had: read pods, read deployments.apps."
    )
    partly = build_risk_summary("Role x", rules, held=[], checked=["create pods/exec"])
    assert partly.adds == ["create pods/exec"]
    assert "and 4 more not compared with what is held" in partly.summary
    # A rule limited to named Secrets still reads Secrets: flagged all the same.
    assert "ReadSecrets" in summary.capabilities


def policy(**capabilities: list[str]) -> AccessPolicy:
    return AccessPolicy.model_validate(
        {"metadata": {"name": "p"}, "spec": {"capabilities": capabilities}}
    )


@pytest.mark.parametrize(
    ("rules", "outcome", "reason"),
    [
        ({"refuse": ["ReadSecrets"]}, Outcome.DENY, "CapabilityRefused"),
        ({"requireApproval": ["MintTokens"]}, Outcome.PENDING, "CapabilityNeedsApproval"),
        ({"requireApproval": ["WriteRBAC"]}, Outcome.GRANT, "Granted"),
    ],
)
def test_policies_act_on_capabilities(
    rules: dict[str, list[str]], outcome: Outcome, reason: str
) -> None:
    risk = RiskSummary(capabilities=["ReadSecrets", "MintTokens"], summary="…")
    granted = Decision(Outcome.GRANT, "Granted", "ok", policy="p")
    decided = compute_capability_decision(granted, policy(**rules), risk, "ClusterRole edit")
    assert (decided.outcome, decided.reason) == (outcome, reason)
    gitops = Decision(Outcome.GRANT, "GitOpsApproved", "ok", policy="p")
    merged = compute_capability_decision(
        gitops, policy(requireApproval=["MintTokens"]), risk, "ClusterRole edit"
    )
    assert merged.outcome == Outcome.GRANT


@pytest.mark.parametrize("reason", ["Granted", "AutoApproved", "GitOpsApproved"])
def test_a_grant_that_acts_as_an_approver_waits_for_one_however_it_was_approved(
    reason: str,
) -> None:
    risk = RiskSummary(capabilities=["MintTokens", "ActAsApprover"], summary="…")
    decided = compute_capability_decision(
        Decision(Outcome.GRANT, reason, "ok", policy="p"), policy(), risk, "ClusterRole edit"
    )
    assert (decided.outcome, decided.reason) == (Outcome.PENDING, "GrantActsAsApprover")
    refused = compute_capability_decision(
        Decision(Outcome.GRANT, reason, "ok", policy="p"),
        policy(refuse=["ActAsApprover"]),
        risk,
        "ClusterRole edit",
    )
    assert (refused.outcome, refused.reason) == (Outcome.DENY, "CapabilityRefused")
