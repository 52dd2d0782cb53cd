"""GitOps approval: the merged pull request approves, the GitOps controller's identity proves it.

The controller acts with a token the API server minted for its ServiceAccount, as it does from
its pod, and applies the same YAML a Git repository would hold; nobody else may name a subject.
Impersonating it is an attack (tests/e2e/test_borrowed_identity.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import RETENTION, Account, Operator, Team, wait_for

CONTROLLER = "argocd-application-controller"
PR = "https://git.example.com/platform/access/pull/42"
COMMIT = "9f1c2ab"


@pytest.fixture
def controller(team: Team) -> Iterator[Account]:
    """The GitOps controller's ServiceAccount with its own token, in a namespace of its own:
    a grant of `edit` where it lives would let the grantee act as it."""
    where = f"{team.namespace}-cd"[:63]
    team.cluster.kubectl("create", "namespace", where)
    try:
        yield team.account(CONTROLLER, where)
    finally:
        team.cluster.kubectl("delete", "namespace", where, "--wait=false", check=False)


@pytest.fixture
def gitops(team: Team, controller: Account) -> str:
    """A policy trusting Argo CD for the team, bob eligible, and Argo CD allowed to apply."""
    applier = controller.username
    name = f"{team.namespace}-gitops"
    policy = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": name},
        "spec": {
            "requesters": {"users": ["bob"], "groups": [team.group]},
            "roles": [{"kind": "ClusterRole", "name": "edit"}],
            "namespaces": [team.namespace],
            "maxDuration": "1h",
            "approval": {
                "mode": "Approvers",
                "approvers": {"groups": ["nobody"]},
                "trustedAppliers": {"users": [applier]},
            },
        },
    }
    team.cluster.kubectl("apply", "-f", "-", input=json.dumps(policy))
    team.policies.append(name)
    team.cluster.kubectl(
        "create",
        "rolebinding",
        "argocd-applies-requests",
        "-n",
        team.namespace,
        "--clusterrole=lapse-requester",
        f"--user={applier}",
    )
    time.sleep(0.3)
    return name


def manifest(team: Team, name: str, duration: str) -> str:
    body = team.manifest(name, duration=duration, subject={"kind": "User", "name": "bob"})
    body["metadata"]["annotations"] = {
        "lapse.dev/pull-request": PR,
        "lapse.dev/commit": COMMIT,
    }
    return json.dumps(body)


def argocd(team: Team, *args: str, input: str | None = None) -> Any:
    return team.account(CONTROLLER, f"{team.namespace}-cd"[:63]).kubectl(*args, input=input)


def test_the_trusted_applier_grants_the_named_subject_with_the_pr_on_record(
    team: Team, gitops: str, controller: Account, operator: Operator
) -> None:
    applied = argocd(team, "apply", "-f", "-", input=manifest(team, "from-git", "30s"))
    assert applied.returncode == 0, applied.stderr
    body = team.wait_phase("from-git", "Active")
    status = body["status"]
    assert status["subject"] == {"kind": "User", "name": "bob"}
    assert status["requester"]["username"] == controller.username
    assert status["pullRequest"] == PR and status["commit"] == COMMIT
    assert status["policy"] == gitops
    assert team.can_i("create", "deployments", user="bob")
    event = team.wait_event("from-git", "GitOpsApproved")
    assert PR in event["message"] and COMMIT in event["message"]
    line = operator.wait_for_audit(
        lambda r: r.get("name") == "from-git" and r.get("action") == "granted"
    )
    assert line["pullRequest"] == PR and line["commit"] == COMMIT
    assert line["subject"] == "User:bob"

    # Pruning it from Git deletes it: access ends at once.
    deleted = argocd(team, "delete", "accessrequest", "from-git", "-n", team.namespace)
    assert deleted.returncode == 0, deleted.stderr
    assert not team.can_i("create", "deployments", user="bob")
    operator.wait_for_audit(lambda r: r.get("name") == "from-git" and r.get("action") == "revoked")

    # Re-created from the same commit (a resync, a restore): not granted a second time.
    again = argocd(team, "apply", "-f", "-", input=manifest(team, "from-git", "30s"))
    assert again.returncode == 0, again.stderr
    body = team.wait_phase("from-git", "Denied")
    assert body["status"]["reason"] == "GitOpsApprovalConsumed"
    assert not team.can_i("create", "deployments", user="bob")


def test_an_untrusted_user_may_not_name_someone_else(team: Team, gitops: str) -> None:
    result = team.kubectl("apply", "-f", "-", input=manifest(team, "for-bob", "30s"), check=False)
    assert result.returncode != 0
    assert "spec.subject may name only yourself (alice)" in result.stderr
    missing = team.cluster.kubectl(
        "get", "accessrequest", "for-bob", "-n", team.namespace, check=False
    )
    assert missing.returncode != 0


def test_reapplying_after_expiry_never_grants_again(team: Team, gitops: str) -> None:
    yaml = manifest(team, "short", "2s")
    assert argocd(team, "apply", "-f", "-", input=yaml).returncode == 0
    team.wait_phase("short", "Active")
    team.wait_phase("short", "Expired", timeout=10)
    assert not team.can_i("create", "deployments", user="bob")
    reapplied = argocd(team, "apply", "-f", "-", input=yaml)
    assert reapplied.returncode == 0, reapplied.stderr
    time.sleep(1)
    body = team.request("short")
    assert body["status"]["phase"] == "Expired"
    assert [h["phase"] for h in body["status"]["history"]] == ["Active", "Expired"]
    assert not team.can_i("create", "deployments", user="bob")


def test_a_request_retention_deleted_comes_back_from_git_refused_and_stays_refused(
    team: Team, gitops: str, operator: Operator
) -> None:
    """Retention deletes the ended request; the controller, healing drift, applies it again
    from Git. It is refused, and the refusal renews the ledger's memory of the approval, so
    no later replay is ever granted because the ledger forgot."""
    yaml = manifest(team, "kept-out", "2s")
    assert argocd(team, "apply", "-f", "-", input=yaml).returncode == 0
    uid = team.wait_phase("kept-out", "Active")["metadata"]["uid"]
    team.wait_phase("kept-out", "Expired", timeout=10)

    def deleted() -> bool:
        found = team.cluster.kubectl(
            "get", "accessrequest", "kept-out", "-n", team.namespace, check=False
        )
        return found.returncode != 0 and "NotFound" in found.stderr

    wait_for(deleted, timeout=RETENTION + 40, what="the ended request deleted by retention")
    assert argocd(team, "apply", "-f", "-", input=yaml).returncode == 0
    body = team.wait_phase("kept-out", "Denied")
    assert body["metadata"]["uid"] != uid
    assert body["status"]["reason"] == "GitOpsApprovalConsumed"
    assert not team.can_i("create", "deployments", user="bob")
    ledger = json.loads(
        team.cluster.kubectl(
            "get", "configmap", "lapse-gitops-ledger", "-n", operator.namespace, "-o", "json"
        ).stdout
    )
    entries = [json.loads(v) for v in ledger["data"].values()]
    (entry,) = [e for e in entries if e.get("object") == uid]
    assert entry.get("replayedAt"), entry
