"""What a grant really gives, as requesters and approvers see it before anything is decided."""

from __future__ import annotations

import json

from tests.e2e.conftest import Team
from tests.e2e.test_cli import approver_policy, approvers, lapse


def test_an_edit_grant_names_secrets_exec_tokens_and_impersonation(team: Team) -> None:
    team.policy()
    team.ask("risky", duration="1h")
    risk = team.wait_phase("risky", "Active")["status"]["risk"]
    for capability in ("ReadSecrets", "ExecIntoPods", "MintTokens", "Impersonate"):
        assert capability in risk["capabilities"], risk
    # Granted at once by the policy: the summary says what the role gives, compared with
    # nothing the subject holds (no approver reads it before the grant).
    assert risk["summary"].startswith("ClusterRole edit gives: "), risk["summary"]
    assert risk.get("alreadyHad", []) == [] and "read secrets" in risk["adds"], risk
    explained = lapse(team, "explain", "risky", "-n", team.namespace).stdout
    assert "ClusterRole edit gives: " in explained
    assert "It can read Secrets; exec, attach or port-forward into pods;" in explained


def test_the_approver_is_told_what_the_subject_already_had(team: Team) -> None:
    approvers(team.cluster, team)
    approver_policy(team)
    # alice holds edit here already, through a binding of her own, outside Lapse.
    team.cluster.kubectl(
        "create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice",
        "-n", team.namespace,
    )  # fmt: skip
    team.ask("more", role="admin", duration="1h")
    risk = team.wait_phase("more", "Pending")["status"]["risk"]
    assert "read secrets" in risk["alreadyHad"], risk
    assert "create pods/exec" in risk["alreadyHad"]
    assert "write rolebindings.rbac.authorization.k8s.io" in risk["adds"], risk
    assert "read secrets" not in risk["adds"]
    assert risk["summary"].startswith("ClusterRole admin adds: "), risk["summary"]


def test_a_policy_that_refuses_secrets_access_refuses_edit(team: Team) -> None:
    name = team.policy()
    team.cluster.kubectl(
        "patch", "accesspolicy", name, "--type=merge",
        "-p", '{"spec":{"capabilities":{"refuse":["ReadSecrets"]}}}',
    )  # fmt: skip
    team.ask("secrets", duration="1h")
    body = team.wait_phase("secrets", "Denied")
    assert body["status"]["reason"] == "CapabilityRefused"
    assert "ClusterRole edit can read Secrets" in body["status"]["message"]
    assert f"AccessPolicy {name} does not grant that (ReadSecrets)" in body["status"]["message"]
    team.ask("looking", role="view", duration="1h")
    team.wait_phase("looking", "Active")


def test_tokens_need_an_approver_and_the_approver_sees_what_they_approve(team: Team) -> None:
    leads = approvers(team.cluster, team)
    name = team.policy(approval={"approvers": {"groups": [leads]}})
    rules = {"spec": {"capabilities": {"requireApproval": ["MintTokens"]}}}
    team.cluster.kubectl("patch", "accesspolicy", name, "--type=merge", "-p", json.dumps(rules))
    team.ask("tokens", duration="1h")
    body = team.wait_phase("tokens", "Pending")
    assert body["status"]["reason"] == "CapabilityNeedsApproval"
    assert (
        "AccessPolicy " + name + " wants an approver for that (MintTokens)"
        in (body["status"]["message"])
    )
    approved = lapse(
        team, "approve", "tokens", "-n", team.namespace, "-m", "ok", user="lena", groups=(leads,)
    )
    assert approved.returncode == 0, approved.stderr
    assert "Approving tokens: ClusterRole edit adds:" in approved.stdout, approved.stdout
    team.wait_phase("tokens", "Active")


def test_approver_policy_helper_still_pends(team: Team) -> None:
    approver_policy(team)
    team.ask("plain", role="admin", duration="1h")
    team.wait_phase("plain", "Pending")
