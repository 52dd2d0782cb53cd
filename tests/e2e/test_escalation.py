"""Escalation table: every path a developer, an approver, a colleague or a namespace admin
could take to widen access, each taken as that person (kubectl impersonation) and refused.

Each row is one attack; after it, `kubectl auth can-i` shows the attacker holds no more than
before. Attacks proven elsewhere are listed, not repeated:
- spoofed requester: `test_admission.py::test_spoofed_requester_is_overwritten`
- requester writing status: `test_admission.py::test_requesters_cannot_write_status`
- forged, wrongly signed and copied decisions (webhook bypassed):
  `test_approvals.py::test_forged_copied_and_raw_approvals_are_never_counted`
- approval by a non-approver, self-approval: `test_approvals.py`
- editing the expiry annotation:
  `test_tampering.py::test_extended_expiry_annotation_never_extends_access`
- a look-alike binding with Lapse's labels:
  `test_tampering.py::test_lookalike_binding_is_left_alone`
- re-applying an expired GitOps request, re-creating a deleted one:
  `test_gitops.py::test_reapplying_after_expiry_never_grants_again`,
  `test_gitops.py::test_the_trusted_applier_grants_the_named_subject_with_the_pr_on_record`
- break-glass by a non-member: `test_breakglass.py::test_refused_at_admission_with_a_clear_message`
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import Team, binding_name, wait_for

RBAC = "rbac.authorization.k8s.io"
MALLORY = "mallory"  # `admin` in the team's namespace: she may edit RoleBindings there
CAROL = "carol"  # alice's colleague: same group, same lapse-requester role


def as_(
    team: Team, user: str, *args: str, groups: tuple[str, ...] = (), input: str | None = None
) -> Any:
    return team.cluster.kubectl(*args, as_user=user, groups=groups, input=input, check=False)


def colleague(team: Team, *args: str, input: str | None = None) -> Any:
    return as_(team, CAROL, *args, groups=(team.group,), input=input)


def active(team: Team, name: str, duration: str = "1h") -> dict[str, Any]:
    if not team.policies:
        team.policy()
    team.ask(name, duration=duration)
    return team.wait_phase(name, "Active")


def approvers_policy(team: Team, approvers: list[str], maximum: str = "1h") -> str:
    return team.policy(
        roles=("edit",),
        maximum=maximum,
        mode="Approvers",
        suffix="-leads",
        approval={"approvers": {"users": approvers}},
    )


def refused(result: Any, words: str) -> None:
    assert result.returncode != 0, result.stdout
    assert words in result.stderr, result.stderr


# Attacks ------------------------------------------------------------------------------------


def self_approval_as_named_approver(team: Team) -> None:
    approvers_policy(team, approvers=[team.user, "bob"])
    team.ask("mine", duration="1m")
    team.wait_phase("mine", "Pending")
    result = team.kubectl(
        "annotate",
        "accessrequest",
        "mine",
        "-n",
        team.namespace,
        "lapse.dev/approve=ok",
        check=False,
    )
    refused(result, "alice may not approve their own request.")
    assert team.request("mine")["status"]["phase"] == "Pending"


def approval_by_a_colleague(team: Team) -> None:
    policy = approvers_policy(team, approvers=["bob"])
    team.ask("theirs", duration="1m")
    team.wait_phase("theirs", "Pending")
    result = colleague(
        team, "annotate", "accessrequest", "theirs", "-n", team.namespace, "lapse.dev/approve=ok"
    )
    refused(result, f"carol is not an approver of AccessPolicy {policy}.")


def forged_requester_signature(team: Team) -> None:
    active(team, "signed")
    result = team.kubectl(
        "annotate",
        "--overwrite",
        "accessrequest",
        "signed",
        "-n",
        team.namespace,
        "lapse.dev/requester-signature=forged",
        check=False,
    )
    refused(result, "lapse.dev/requester-signature is written by Lapse alone; it cannot be set.")


def decisions_written_at_create(team: Team) -> None:
    approvers_policy(team, approvers=["bob"])
    manifest = team.manifest("preapproved", duration="1m")
    manifest["metadata"]["annotations"] = {"lapse.dev/approve": "by myself"}
    result = team.kubectl("create", "-f", "-", input=json.dumps(manifest), check=False)
    refused(
        result, "lapse.dev/approve cannot be set when creating an object; it is written by Lapse."
    )


def spec_edited_after_approval(team: Team) -> None:
    active(team, "fixed", duration="1m")
    for change in ({"role": {"kind": "ClusterRole", "name": "admin"}}, {"duration": "4h"}):
        result = team.kubectl(
            "patch",
            "accessrequest",
            "fixed",
            "-n",
            team.namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": change}),
            check=False,
        )
        refused(result, "immutable")
    body = team.request("fixed")
    assert body["spec"]["role"]["name"] == "edit" and body["spec"]["duration"] == "1m"


def binding_subjects_widened_by_namespace_admin(team: Team) -> None:
    name = binding_name(active(team, "widened"))
    subjects = [
        {"kind": "User", "name": team.user, "apiGroup": RBAC},
        {"kind": "Group", "name": "everyone", "apiGroup": RBAC},
    ]
    patched = as_(
        team,
        MALLORY,
        "patch",
        "rolebinding",
        name,
        "-n",
        team.namespace,
        "--type=merge",
        "-p",
        json.dumps({"subjects": subjects}),
    )
    assert patched.returncode == 0, patched.stderr  # RBAC lets her; Lapse answers.

    def restored() -> bool:
        binding = team.binding(name)
        return binding is not None and len(binding["subjects"]) == 1

    wait_for(restored, 5, 0.1, "the subjects restored")
    team.wait_event("widened", "BindingTampered")


def binding_role_ref_changed(team: Team) -> None:
    name = binding_name(active(team, "rerolled"))
    binding = team.binding(name)
    assert binding is not None
    binding["roleRef"]["name"] = "admin"
    for key in ("resourceVersion", "managedFields"):
        binding["metadata"].pop(key, None)
    result = as_(team, MALLORY, "replace", "-f", "-", input=json.dumps(binding))
    refused(result, "cannot change roleRef")


def binding_marks_stripped(team: Team) -> None:
    """Without Lapse's label the binding would drop out of every listing by it (the sweep's
    among them): Lapse knows its own binding by its UID, puts the label back at once, and
    the binding still ends at the grant's expiry."""
    body = active(team, "unmarked", duration="8s")
    name = binding_name(body)
    result = as_(
        team,
        MALLORY,
        "label",
        "rolebinding",
        name,
        "-n",
        team.namespace,
        "app.kubernetes.io/managed-by-",
    )
    assert result.returncode == 0, result.stderr

    def relabelled() -> bool:
        binding = team.binding(name)
        labels = (binding or {}).get("metadata", {}).get("labels") or {}
        return binding is None or labels.get("app.kubernetes.io/managed-by") == "lapse"

    wait_for(relabelled, 5, 0.1, "the label put back")
    assert team.wait_event("unmarked", "BindingTampered")["type"] == "Warning"
    ended = team.wait_phase("unmarked", "Expired", timeout=20)
    assert ended["status"]["endedAt"] >= ended["status"]["expiresAt"]
    wait_for(lambda: team.binding(name) is None, 5, 0.1, "the binding removed at its expiry")


def lookalike_with_all_marks(team: Team) -> None:
    """A copy carrying the label, the UID annotation and the owner reference of a real grant
    is not the binding the request's status records: Lapse removes it."""
    body = active(team, "copied")
    uid = body["metadata"]["uid"]
    copy = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": "lapse-copied-by-hand",
            "namespace": team.namespace,
            "labels": {"app.kubernetes.io/managed-by": "lapse", "lapse.dev/kind": "AccessRequest"},
            "annotations": {
                "lapse.dev/request-uid": uid,
                "lapse.dev/expires-at": "2099-01-01T00:00:00Z",
            },
            "ownerReferences": [
                {
                    "apiVersion": "lapse.dev/v1alpha1",
                    "kind": "AccessRequest",
                    "name": "copied",
                    "uid": uid,
                    "controller": True,
                }
            ],
        },
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "name": "eve", "apiGroup": RBAC}],
    }
    created = as_(team, MALLORY, "create", "-f", "-", input=json.dumps(copy))
    assert created.returncode == 0, created.stderr
    wait_for(lambda: team.binding("lapse-copied-by-hand") is None, 8, 0.1, "the copy removed")
    assert not team.can_i("create", "deployments", user="eve")
    assert team.request("copied")["status"]["phase"] == "Active"


def colleague_revokes(team: Team) -> None:
    active(team, "not-yours")
    result = colleague(
        team, "annotate", "accessrequest", "not-yours", "-n", team.namespace, "lapse.dev/revoke=x"
    )
    refused(
        result, "carol may not revoke this request: only its requester, its subject, an approver"
    )


def colleague_removes_the_finalizer(team: Team) -> None:
    active(team, "audited")
    result = colleague(
        team,
        "patch",
        "accessrequest",
        "audited",
        "-n",
        team.namespace,
        "--type=json",
        "-p",
        '[{"op":"remove","path":"/metadata/finalizers"}]',
    )
    refused(result, "finalizer kopf.zalando.org/KopfFinalizerMarker is Lapse's")
    assert team.request("audited")["metadata"]["finalizers"]


def subject_group_named_by_requester(team: Team) -> None:
    for subject in (
        {"kind": "Group", "name": "system:masters"},
        {"kind": "ServiceAccount", "name": "default", "namespace": team.namespace},
    ):
        manifest = team.manifest("for-a-group", subject=subject)
        result = team.kubectl("create", "-f", "-", input=json.dumps(manifest), check=False)
        refused(result, "spec.subject may name only yourself (alice)")


def namespace_admin_writes_a_policy(team: Team) -> None:
    policy = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": f"{team.namespace}-mine"},
        "spec": {
            "requesters": {"users": [MALLORY]},
            "roles": [{"kind": "ClusterRole", "name": "cluster-admin"}],
            "namespaces": [team.namespace],
            "approval": {"mode": "Auto"},
        },
    }
    result = as_(team, MALLORY, "create", "-f", "-", input=json.dumps(policy))
    refused(result, 'accesspolicies.lapse.dev is forbidden: User "mallory" cannot create resource')


def requester_breaks_glass(team: Team) -> None:
    glass = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "BreakGlass",
        "metadata": {"name": f"{team.namespace}-glass"},
        "spec": {
            "role": {"kind": "ClusterRole", "name": "cluster-admin"},
            "duration": "30m",
            "reason": "I want it.",
            "incident": "INC-1",
        },
    }
    result = team.kubectl("create", "-f", "-", input=json.dumps(glass), check=False)
    refused(result, 'breakglasses.lapse.dev is forbidden: User "alice" cannot create resource')


def two_policies_never_combine(team: Team) -> None:
    """Auto up to 1h, Approvers up to 8h: 4h is judged by the policy that allows it (and
    waits for approval); the self-service one never stretches to it."""
    team.policy(maximum="1h")
    approvers_policy(team, approvers=["bob"], maximum="8h")
    team.ask("stretch", duration="4h")
    body = team.wait_phase("stretch", "Pending")
    assert body["status"]["policy"] == f"{team.namespace}-leads"


def recreated_to_reset_the_clock(team: Team) -> None:
    """Self-service: asking again is a new request, judged afresh and capped by policy."""
    team.policy(maximum="1h")
    first = active(team, "again", duration="1h")
    team.kubectl("delete", "accessrequest", "again", "-n", team.namespace)
    team.ask("again", duration="2h")
    body = team.wait_phase("again", "Denied")
    assert body["status"]["reason"] == "DurationExceedsPolicy"
    assert body["metadata"]["uid"] != first["metadata"]["uid"]
    assert not team.can_i("create", "deployments")


def expired_request_reapplied(team: Team) -> None:
    team.policy()
    team.ask("short", duration="2s")
    team.wait_phase("short", "Expired", timeout=10)
    again = team.ask("short", duration="2s")
    assert again.returncode == 0  # unchanged: nothing to apply
    time.sleep(1)
    assert team.request("short")["status"]["phase"] == "Expired"


def only_rolebindings_for_requests(team: Team) -> None:
    """An AccessRequest is namespaced access: never a ClusterRoleBinding, never elsewhere."""
    body = active(team, "here-only")
    assert [b["kind"] for b in body["status"]["bindings"]] == ["RoleBinding"]
    cluster_wide = team.cluster.kubectl(
        "get", "clusterrolebindings", "-l", "app.kubernetes.io/managed-by=lapse", "-o", "json"
    )
    owners = [
        b["metadata"].get("labels", {}).get("lapse.dev/kind")
        for b in json.loads(cluster_wide.stdout)["items"]
    ]
    assert "AccessRequest" not in owners
    elsewhere = team.cluster.kubectl(
        "auth",
        "can-i",
        "create",
        "deployments",
        "-n",
        "default",
        as_user=team.user,
        groups=(team.group,),
        check=False,
    )
    assert elsewhere.stdout.strip() == "no"


ATTACKS: dict[str, Callable[[Team], None]] = {
    "self-approval-as-named-approver": self_approval_as_named_approver,
    "approval-by-a-colleague": approval_by_a_colleague,
    "forged-requester-signature": forged_requester_signature,
    "approval-written-at-create": decisions_written_at_create,
    "spec-edited-after-grant": spec_edited_after_approval,
    "binding-subjects-widened": binding_subjects_widened_by_namespace_admin,
    "binding-roleref-changed": binding_role_ref_changed,
    "binding-marks-stripped": binding_marks_stripped,
    "lookalike-with-all-marks": lookalike_with_all_marks,
    "colleague-revokes": colleague_revokes,
    "colleague-removes-finalizer": colleague_removes_the_finalizer,
    "group-or-sa-subject": subject_group_named_by_requester,
    "namespace-admin-writes-policy": namespace_admin_writes_a_policy,
    "requester-breaks-glass": requester_breaks_glass,
    "two-policies-combined": two_policies_never_combine,
    "recreated-to-reset-clock": recreated_to_reset_the_clock,
    "expired-request-reapplied": expired_request_reapplied,
    "request-binds-cluster-wide": only_rolebindings_for_requests,
}

WATCHED = [("create", "deployments"), ("create", "accesspolicies.lapse.dev")]


def powers(team: Team, user: str, groups: tuple[str, ...]) -> dict[tuple[str, str], bool]:
    answers = {}
    for verb, resource in WATCHED:
        result = team.cluster.kubectl(
            "auth",
            "can-i",
            verb,
            resource,
            "-n",
            team.namespace,
            as_user=user,
            groups=groups,
            check=False,
        )
        answers[(verb, resource)] = result.stdout.strip() == "yes"
    return answers


@pytest.mark.parametrize("attack", list(ATTACKS), ids=list(ATTACKS))
def test_attack_is_refused(team: Team, attack: str) -> None:
    team.cluster.kubectl(
        "create",
        "rolebinding",
        "mallory-admin",
        "-n",
        team.namespace,
        "--clusterrole=admin",
        f"--user={MALLORY}",
    )
    attackers = {
        team.user: (team.group,),
        CAROL: (team.group,),
        MALLORY: (),
        "eve": (),
    }
    before = {u: powers(team, u, g) for u, g in attackers.items()}
    ATTACKS[attack](team)
    # Whatever the row's own grant gave alice ends with it; nobody else gained anything.
    for request in json.loads(
        team.cluster.kubectl("get", "accessrequests", "-n", team.namespace, "-o", "json").stdout
    )["items"]:
        team.cluster.kubectl(
            "delete", "accessrequest", request["metadata"]["name"], "-n", team.namespace
        )
    after = {u: powers(team, u, g) for u, g in attackers.items()}
    assert after == before
