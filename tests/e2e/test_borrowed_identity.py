"""Approvals that cannot be forged: every way to act as a trusted applier or an approver, tried
as an attacker would.

mallory is a ServiceAccount acting with its own token. Each test gives her one right in the
namespace where the GitOps controller's ServiceAccount lives (or over the approver), tries to
turn it into an approval, and checks that no grant follows without a real approver, and that
the policy names her, how, and through which binding.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.conftest import SAMPLES, Account, Team, wait_for

CONTROLLER = "argocd-application-controller"
RBAC = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class GitOps:
    team: Team
    policy: str
    where: str  # the controller's namespace
    controller: Account
    mallory: Account

    def give(self, name: str, rules: list[dict[str, Any]], namespace: str | None = None) -> None:
        """A Role (or, without `namespace`, a ClusterRole) with `rules`, bound to mallory."""
        kind = "Role" if namespace else "ClusterRole"
        meta: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {})}
        role = {"apiVersion": f"{RBAC}/v1", "kind": kind, "metadata": meta, "rules": rules}
        binding = {
            "apiVersion": f"{RBAC}/v1",
            "kind": f"{kind}Binding",
            "metadata": meta,
            "roleRef": {"apiGroup": RBAC, "kind": kind, "name": name},
            "subjects": [
                {"kind": "ServiceAccount", "name": "mallory", "namespace": self.team.namespace}
            ],
        }
        listing = {"apiVersion": "v1", "kind": "List", "items": [role, binding]}
        self.team.cluster.kubectl("apply", "-f", "-", input=json.dumps(listing))

    def request(self, name: str) -> str:
        body = self.team.manifest(name, duration="30s", subject={"kind": "User", "name": "bob"})
        return json.dumps(body)

    def status(self) -> dict[str, Any]:
        found = self.team.cluster.kubectl("get", "accesspolicy", self.policy, "-o", "json")
        return dict(json.loads(found.stdout).get("status") or {})

    def named(self, way: str) -> dict[str, Any]:
        """Wait until the policy names mallory with `way`; the exposure record."""

        def find() -> dict[str, Any] | None:
            for record in self.status().get("exposures") or []:
                if record["actor"].endswith("/mallory") and record["way"] == way:
                    return dict(record)
            return None

        record = wait_for(find, 15, 0.2, f"the policy to name mallory: {way}")
        conditions = {c["type"]: c for c in self.status().get("conditions") or []}
        assert conditions["Exposed"]["status"] == "True"
        return record

    def policy_event(self, reason: str) -> dict[str, Any]:
        """The Event on the policy with `reason` that names mallory."""

        def find() -> dict[str, Any] | None:
            listing = self.team.cluster.kubectl("get", "events", "-n", "default", "-o", "json")
            for event in json.loads(listing.stdout)["items"]:
                involved = event.get("involvedObject") or {}
                if (
                    involved.get("name") == self.policy
                    and event.get("reason") == reason
                    and "/mallory can" in event.get("message", "")
                ):
                    return dict(event)
            return None

        return wait_for(find, 15, 0.2, f"Event {reason} on AccessPolicy {self.policy}")

    def not_granted(self, name: str, reason: str) -> dict[str, Any]:
        body = self.team.wait_phase(name, "Pending", timeout=15)
        assert body["status"]["reason"] == reason, body["status"]
        assert self.team.binding_count() == 0
        assert not self.team.can_i("create", "deployments", user="bob")
        return body


@pytest.fixture
def gitops(team: Team) -> Iterator[GitOps]:
    """A policy trusting the controller's ServiceAccount (in its own namespace) to apply
    requests for bob, approvers a person nobody else is; mallory with nothing yet."""
    where = f"{team.namespace}-cd"[:63]
    team.cluster.kubectl("create", "namespace", where)
    controller = team.account(CONTROLLER, where)
    mallory = team.account("mallory")
    name = team.policy(
        roles=("edit",),
        mode="Approvers",
        requesters=(team.group,),
        suffix="-gitops",
        approval={
            "approvers": {"users": [f"{team.namespace}-lead"]},
            "trustedAppliers": {"users": [controller.username]},
        },
        extra={"requesters": {"users": ["bob", mallory.username], "groups": [team.group]}},
    )
    for account in (controller, mallory):
        team.cluster.kubectl(
            "create",
            "rolebinding",
            f"{account.username.rsplit(':', 1)[1]}-requests",
            "-n",
            team.namespace,
            "--clusterrole=lapse-requester",
            f"--user={account.username}",
        )
    try:
        yield GitOps(team, name, where, controller, mallory)
    finally:
        team.cluster.kubectl("delete", "namespace", where, "--wait=false", check=False)
        for kind in ("clusterrolebinding", "clusterrole"):
            team.cluster.kubectl(
                "delete", kind, f"{team.namespace}-mallory", "--ignore-not-found", check=False
            )


def test_impersonating_the_applier_is_no_approval(gitops: GitOps) -> None:
    gitops.give(
        "impersonate",
        [{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]}],
        gitops.where,
    )
    record = gitops.named("impersonate it")
    assert record["role"] == "Applier"
    assert record["through"] == f"RoleBinding {gitops.where}/impersonate (Role impersonate)"
    event = gitops.policy_event("ApplierExposed")
    assert event["type"] == "Warning"
    made = gitops.mallory.kubectl(
        "apply", "-f", "-", as_user=gitops.controller.username, input=gitops.request("forged")
    )
    assert made.returncode == 0, made.stderr
    body = gitops.not_granted("forged", "ApplierUnverified")
    assert "impersonated" in body["status"]["message"]


def test_a_token_minted_for_the_applier_is_no_approval(gitops: GitOps) -> None:
    gitops.give(
        "mint",
        [{"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}],
        gitops.where,
    )
    gitops.named("mint tokens for it")
    minted = gitops.mallory.kubectl("create", "token", CONTROLLER, "-n", gitops.where)
    assert minted.returncode == 0, minted.stderr
    stolen = gitops.team.account_with_token(gitops.controller.username, minted.stdout.strip())
    made = stolen.kubectl("apply", "-f", "-", input=gitops.request("minted"))
    assert made.returncode == 0, made.stderr
    body = gitops.not_granted("minted", "ApplierExposed")
    assert "mallory can mint tokens for it" in body["status"]["message"]


def test_a_token_secret_of_the_applier_is_no_approval(gitops: GitOps) -> None:
    gitops.give(
        "secrets",
        [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get", "list"]}],
        gitops.where,
    )
    gitops.named(f"read its token Secrets in {gitops.where}")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {
            "name": "borrowed",
            "namespace": gitops.where,
            "annotations": {"kubernetes.io/service-account.name": CONTROLLER},
        },
    }
    made = gitops.mallory.kubectl("apply", "-f", "-", input=json.dumps(secret))
    assert made.returncode == 0, made.stderr

    def token() -> str | None:
        read = gitops.mallory.kubectl(
            "get", "secret", "borrowed", "-n", gitops.where, "-o", "jsonpath={.data.token}"
        )
        return base64.b64decode(read.stdout).decode() if read.stdout.strip() else None

    stolen = gitops.team.account_with_token(gitops.controller.username, wait_for(token, 15))
    made = stolen.kubectl("apply", "-f", "-", input=gitops.request("from-secret"))
    assert made.returncode == 0, made.stderr
    gitops.not_granted("from-secret", "ApplierExposed")


def test_a_pod_run_as_the_applier_is_no_approval(gitops: GitOps) -> None:
    gitops.give(
        "pods", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}], gitops.where
    )
    gitops.named(f"run pods as it in {gitops.where}")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "borrower", "namespace": gitops.where},
        "spec": {
            "serviceAccountName": CONTROLLER,
            "containers": [
                {
                    "name": "main",
                    "image": "registry.k8s.io/pause:3.10",
                    "imagePullPolicy": "IfNotPresent",
                }
            ],
        },
    }
    made = gitops.mallory.kubectl("create", "-f", "-", input=json.dumps(pod))
    assert made.returncode == 0, made.stderr
    # What the kubelet hands the pod: a token bound to it. Minted here as the kubelet would,
    # since a pod on the local API does not run.
    uid = gitops.team.cluster.kubectl(
        "get", "pod", "borrower", "-n", gitops.where, "-o", "jsonpath={.metadata.uid}"
    ).stdout
    token = gitops.team.cluster.kubectl(
        "create",
        "token",
        CONTROLLER,
        "-n",
        gitops.where,
        "--bound-object-kind=Pod",
        "--bound-object-name=borrower",
        f"--bound-object-uid={uid}",
    ).stdout.strip()
    stolen = gitops.team.account_with_token(gitops.controller.username, token)
    made = stolen.kubectl("apply", "-f", "-", input=gitops.request("from-pod"))
    assert made.returncode == 0, made.stderr
    gitops.not_granted("from-pod", "ApplierExposed")


def test_constrained_impersonation_of_the_applier_is_no_approval(gitops: GitOps) -> None:
    gitops.give(
        f"{gitops.team.namespace}-mallory",
        [
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["serviceaccounts"],
                "resourceNames": [CONTROLLER],
                "verbs": ["impersonate:serviceaccount"],
            },
            {
                "apiGroups": ["lapse.dev"],
                "resources": ["accessrequests"],
                "verbs": ["impersonate-on:serviceaccount:create"],
            },
        ],
    )
    gitops.named("impersonate it (constrained impersonation)")
    # Only the create is allowed to the impersonation: nothing to validate against first.
    made = gitops.mallory.kubectl(
        "create",
        "--validate=false",
        "-f",
        "-",
        as_user=gitops.controller.username,
        input=gitops.request("narrow"),
    )
    assert made.returncode == 0, made.stderr
    gitops.not_granted("narrow", "ApplierUnverified")


def test_binding_oneself_to_a_role_that_reaches_the_applier_is_named(gitops: GitOps) -> None:
    gitops.give(
        "binder",
        [
            {"apiGroups": [RBAC], "resources": ["rolebindings"], "verbs": ["create"]},
            {
                "apiGroups": [RBAC],
                "resources": ["clusterroles"],
                "resourceNames": ["edit"],
                "verbs": ["bind"],
            },
        ],
        gitops.where,
    )
    record = gitops.named("mint tokens for it")
    assert "binding itself to ClusterRole edit" in record["through"]


def test_an_accepted_actor_does_not_hold_up_gitops(gitops: GitOps) -> None:
    gitops.give(
        "mint",
        [{"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}],
        gitops.where,
    )
    gitops.named("mint tokens for it")
    policy = json.loads(
        gitops.team.cluster.kubectl("get", "accesspolicy", gitops.policy, "-o", "json").stdout
    )
    policy["spec"]["approval"]["exposureAccepted"] = {"users": [gitops.mallory.username]}
    gitops.team.cluster.kubectl("apply", "-f", "-", input=json.dumps(policy))

    def accepted() -> bool:
        conditions = {c["type"]: c for c in gitops.status().get("conditions") or []}
        records = gitops.status().get("exposures") or []
        return conditions.get("Exposed", {}).get("status") == "False" and all(
            r["accepted"] for r in records
        )

    wait_for(accepted, 15, 0.2, "the exposure to be accepted")
    made = gitops.controller.kubectl("apply", "-f", "-", input=gitops.request("accepted"))
    assert made.returncode == 0, made.stderr
    gitops.team.wait_phase("accepted", "Active", timeout=15)


def test_an_approval_the_requester_made_as_the_approver_does_not_count(gitops: GitOps) -> None:
    team, lead = gitops.team, f"{gitops.team.namespace}-lead"
    gitops.give(
        f"{team.namespace}-mallory",
        [
            {
                "apiGroups": [""],
                "resources": ["users"],
                "resourceNames": [lead],
                "verbs": ["impersonate"],
            }
        ],
    )
    team.cluster.kubectl("apply", "-f", str(SAMPLES / "approver-clusterrole.yaml"))
    team.cluster.kubectl(
        "create",
        "rolebinding",
        "lead-approves",
        "-n",
        team.namespace,
        "--clusterrole=lapse-approver",
        f"--user={lead}",
    )
    record = gitops.named("impersonate it")
    assert record["role"] == "Approver" and record["identity"] == f"user {lead}"
    # mallory asks for herself, then approves as the lead: refused, saying why.
    body = team.manifest("self-approved", duration="30s")
    made = gitops.mallory.kubectl("apply", "-f", "-", input=json.dumps(body))
    assert made.returncode == 0, made.stderr
    team.wait_phase("self-approved", "Pending")
    forged = gitops.mallory.kubectl(
        "annotate",
        "accessrequest",
        "self-approved",
        "-n",
        team.namespace,
        "lapse.dev/approve=lgtm",
        as_user=lead,
    )
    assert forged.returncode != 0
    assert f"Lapse cannot count an approval by {lead}" in forged.stderr
    assert "mallory, who asked for it or receives it, can act as" in forged.stderr
    # The lead's own approval looks the same to the API server: it cannot count either while
    # mallory can act as the lead. Another approver must decide.
    real = team.cluster.kubectl(
        "annotate",
        "accessrequest",
        "self-approved",
        "-n",
        team.namespace,
        "lapse.dev/approve=reviewed",
        as_user=lead,
        check=False,
    )
    assert real.returncode != 0
    time.sleep(1)
    assert team.request("self-approved")["status"]["phase"] == "Pending"
    assert team.binding_count() == 0


def test_a_grant_that_reaches_the_applier_waits_for_an_approver(gitops: GitOps) -> None:
    team = gitops.team
    # Self-service edit where the controller lives: its holder could mint the controller's
    # tokens, impersonate it, run pods as it.
    team.policy(roles=("edit",), namespaces=(gitops.where,), suffix="-cd")
    team.cluster.kubectl(
        "create",
        "rolebinding",
        "requesters",
        "-n",
        gitops.where,
        "--clusterrole=lapse-requester",
        f"--group={team.group}",
    )
    body = team.manifest("into-cd", duration="30s", namespace=gitops.where)
    made = team.kubectl("apply", "-f", "-", input=json.dumps(body))
    assert made.returncode == 0, made.stderr

    def pending() -> dict[str, Any] | None:
        found = team.request("into-cd", gitops.where)
        return found if found.get("status", {}).get("phase") == "Pending" else None

    found = wait_for(pending, 15, 0.2, "into-cd to wait for an approver")
    assert found["status"]["reason"] == "GrantActsAsApprover"
    risk = found["status"]["risk"]
    assert "ActAsApprover" in risk["capabilities"]
    assert f"ServiceAccount {gitops.where}/{CONTROLLER}, a trusted applier" in risk["summary"]
