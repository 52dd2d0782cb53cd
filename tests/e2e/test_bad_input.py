"""Bad input gets a clear answer (invariant 9): refused at admission with the API server's or
Lapse's sentence, or ended as Invalid/Denied with a Warning Event — and the operator keeps
serving throughout.

Every row is one input and the exact words expected. Rows proven elsewhere are not repeated:
over-long durations against a policy (`test_policy.py::test_duration_over_max_denied_not_capped`),
a namespace that does not exist for a BreakGlass and a BreakGlass without incident
(`test_breakglass.py::test_refused_at_admission_with_a_clear_message`), a request that never
passed the webhook (`test_approvals.py::test_forged_copied_and_raw_approvals_are_never_counted`).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import Cluster
from tests.e2e.conftest import Operator, Team, wait_for

PATTERN = "should match '^([0-9]{1,4}h)?([0-9]{1,6}m)?([0-9]{1,8}s)?$'"
POSITIVE = "duration must be a positive duration such as 30m or 2h"
UNCHECKED = "some validation rules were not checked because the object was invalid"


@pytest.fixture(scope="module")
def desk(cluster: Cluster, operator: Operator) -> Iterator[Team]:
    """One namespace and one self-service policy for the whole table, so it stays fast."""
    name = f"t-bad-input-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    group = f"{name}-devs"
    cluster.kubectl(
        "create",
        "rolebinding",
        "lapse-requesters",
        "-n",
        name,
        "--clusterrole=lapse-requester",
        f"--group={group}",
    )
    team = Team(cluster, name, group=group)
    # The policy allows a ClusterRole and a Role that do not exist, so that their absence —
    # not the policy — is what answers.
    policy = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": name},
        "spec": {
            "requesters": {"groups": [group]},
            "roles": [
                {"kind": "ClusterRole", "name": "view"},
                {"kind": "ClusterRole", "name": "edit"},
                {"kind": "ClusterRole", "name": "no-such-role"},
                {"kind": "Role", "name": "debugger"},
            ],
            "namespaces": [name],
            "defaultDuration": "1m",
            "maxDuration": "4h",
            "approval": {"mode": "Auto"},
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(policy))
    team.policies.append(name)
    time.sleep(0.3)
    try:
        yield team
    finally:
        cluster.kubectl("delete", "accesspolicy", *team.policies, "--ignore-not-found", check=False)
        # With the namespace a Role test made beside it, if one did.
        cluster.kubectl(
            "delete", "namespace", name, f"{name}-other", "--ignore-not-found", "--wait=false",
            check=False,
        )  # fmt: skip


def spec_with(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "role": {"kind": "ClusterRole", "name": "view"},
        "duration": "1m",
        "reason": "Bad-input table.",
    }
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


REFUSED_AT_ADMISSION = [
    # Durations: the CRD's pattern and CEL rule answer in the API server's words.
    ("duration-0", {"duration": "0"}, "spec.duration in body should be at least 2 chars long"),
    ("duration-0s", {"duration": "0s"}, f'spec.duration: Invalid value: "0s": {POSITIVE}'),
    ("duration-0h0m", {"duration": "0h0m"}, POSITIVE),
    (
        "duration-negative",
        {"duration": "-1h"},
        f'Invalid value: "-1h": spec.duration in body {PATTERN}',
    ),
    ("duration-years", {"duration": "1y"}, f'Invalid value: "1y": spec.duration in body {PATTERN}'),
    ("duration-days", {"duration": "1d"}, f'Invalid value: "1d": spec.duration in body {PATTERN}'),
    (
        "duration-word",
        {"duration": "abc"},
        f'Invalid value: "abc": spec.duration in body {PATTERN}',
    ),
    (
        "duration-trailing",
        {"duration": "1h-"},
        f'Invalid value: "1h-": spec.duration in body {PATTERN}',
    ),
    (
        "duration-overflow",
        {"duration": "99999999h"},
        f'Invalid value: "99999999h": spec.duration in body {PATTERN}',
    ),
    (
        "duration-10000h",
        {"duration": "10000h"},
        f'Invalid value: "10000h": spec.duration in body {PATTERN}',
    ),
    (
        "duration-decimal",
        {"duration": "1.5h"},
        f'Invalid value: "1.5h": spec.duration in body {PATTERN}',
    ),
    ("duration-upper", {"duration": "1H"}, f'Invalid value: "1H": spec.duration in body {PATTERN}'),
    ("duration-empty", {"duration": ""}, "spec.duration in body should be at least 2 chars long"),
    (
        "duration-number",
        {"duration": 3600},
        'spec.duration: Invalid value: "integer": spec.duration in body must be of type '
        'string: "integer"',
    ),
    # Shape: missing, wrong types, unknown values.
    ("role-missing", {"role": None}, "spec.role: Required value"),
    ("reason-missing", {"reason": None}, "spec.reason: Required value"),
    (
        "reason-empty",
        {"reason": ""},
        'spec.reason: Invalid value: "": spec.reason in body should be at least 1 chars long',
    ),
    (
        "reason-huge",
        {"reason": "x" * 1025},
        "spec.reason: Too long: may not be more than 1024 bytes",
    ),
    ("ticket-huge", {"ticket": "T" * 257}, "spec.ticket: Too long: may not be more than 256 bytes"),
    (
        "role-string",
        {"role": "edit"},
        'spec.role: Invalid value: "string": spec.role in body must be of type object: "string"',
    ),
    (
        "role-kind",
        {"role": {"kind": "Group", "name": "edit"}},
        'spec.role.kind: Unsupported value: "Group": supported values: "ClusterRole", "Role"',
    ),
    (
        "role-name-empty",
        {"role": {"kind": "ClusterRole", "name": ""}},
        "spec.role.name in body should be at least 1 chars long",
    ),
    ("role-kind-missing", {"role": {"name": "edit"}}, "spec.role.kind: Required value"),
    (
        "subject-sa-no-namespace",
        {"subject": {"kind": "ServiceAccount", "name": "ci"}},
        "a ServiceAccount subject needs a namespace",
    ),
    (
        "subject-someone-else",
        {"subject": {"kind": "User", "name": "bob"}},
        "spec.subject may name only yourself (alice); only a policy's trusted appliers may "
        "request access for someone else.",
    ),
    ("unknown-field", {"colour": "red"}, 'strict decoding error: unknown field "spec.colour"'),
]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [pytest.param(c, e, id=i) for i, c, e in REFUSED_AT_ADMISSION],
)
def test_refused_at_admission(desk: Team, changes: dict[str, Any], expected: str) -> None:
    name = f"bad-{secrets.token_hex(3)}"
    manifest = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {"name": name, "namespace": desk.namespace},
        "spec": spec_with(**changes),
    }
    result = desk.kubectl("create", "-f", "-", input=json.dumps(manifest), check=False)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    missing = desk.cluster.kubectl("get", "accessrequest", name, "-n", desk.namespace, check=False)
    assert missing.returncode != 0


ANSWERED_BY_THE_OPERATOR = [
    # A role the policy allows but nobody created: the API server would bind it anyway.
    (
        "role-does-not-exist",
        {"role": {"kind": "ClusterRole", "name": "no-such-role"}},
        "Invalid",
        "RoleNotFound",
        "ClusterRole no-such-role does not exist; nothing was granted.",
    ),
    # A Role that exists only in another namespace: roles are looked up where access is asked.
    (
        "role-in-another-namespace",
        {"role": {"kind": "Role", "name": "debugger"}},
        "Invalid",
        "RoleNotFound",
        "Role debugger does not exist in namespace {ns}; nothing was granted",
    ),
    # A Role the policy does not name, though a ClusterRole of that name is allowed.
    (
        "role-kind-confusion",
        {"role": {"kind": "Role", "name": "edit"}},
        "Denied",
        "RoleNotAllowed",
        "No AccessPolicy lets alice request Role edit.",
    ),
    (
        "role-outside-policy",
        {"role": {"kind": "ClusterRole", "name": "cluster-admin"}},
        "Denied",
        "RoleNotAllowed",
        "No AccessPolicy lets alice request ClusterRole cluster-admin.",
    ),
    (
        "duration-over-max-in-minutes",
        {"duration": "600000m"},
        "Denied",
        "DurationExceedsPolicy",
        "Duration 600000m exceeds the 4h that policy allows",
    ),
]


@pytest.mark.parametrize(
    ("changes", "phase", "reason", "words"),
    [pytest.param(c, p, r, w, id=i) for i, c, p, r, w in ANSWERED_BY_THE_OPERATOR],
)
def test_answered_with_a_warning(
    desk: Team, changes: dict[str, Any], phase: str, reason: str, words: str
) -> None:
    if changes.get("role", {}).get("kind") == "Role":
        elsewhere = f"{desk.namespace}-other"
        desk.cluster.kubectl("create", "namespace", elsewhere, check=False)
        desk.cluster.kubectl(
            "create",
            "role",
            "debugger",
            "-n",
            elsewhere,
            "--verb=get",
            "--resource=pods",
            check=False,
        )
    name = f"odd-{secrets.token_hex(3)}"
    manifest = desk.manifest(name, **{"duration": "1m", **{k: v for k, v in changes.items()}})
    manifest["spec"].update(changes)
    desk.kubectl("create", "-f", "-", input=json.dumps(manifest))
    body = desk.wait_phase(name, phase)
    expected = words.format(ns=desk.namespace)
    assert body["status"]["reason"] == reason
    assert expected in body["status"]["message"]
    assert not body["status"].get("bindings")
    event = desk.wait_event(name, reason)
    assert event["type"] == "Warning" and expected in event["message"]
    assert not desk.can_i("create", "deployments")


@pytest.mark.parametrize(
    "name",
    [pytest.param("n" * 253, id="253-char-name"), pytest.param("a.b.c", id="dotted-name")],
)
def test_names_no_binding_could_carry_still_grant(
    desk: Team, operator: Operator, name: str
) -> None:
    """A request's name may be 253 characters with dots; a binding name is a 63-character DNS
    label and a label value at most 63 — Lapse derives both, so the grant still works."""
    desk.kubectl(
        "create", "-f", "-", input=json.dumps(desk.manifest(name, role="view", duration="1m"))
    )
    body = desk.wait_phase(name, "Active")
    binding = body["status"]["bindings"][0]["name"]
    assert len(binding) <= 63 and "." not in binding
    assert desk.can_i("list", "pods")
    assert desk.wait_event(name, "Granted")["type"] == "Normal"
    desk.cluster.kubectl("delete", "accessrequest", name, "-n", desk.namespace)
    wait_for(lambda: desk.binding(binding) is None, 5, 0.1, "the binding to go")


def test_unicode_and_control_characters_are_stored_and_audited_as_one_line(
    desk: Team, operator: Operator
) -> None:
    """Reasons and comments are free text: accepted as given (Kubernetes stores any UTF-8),
    never interpreted, and every audit line stays one JSON object on one line."""
    reason = 'Fix \u202egnp.exe \u0007bell\ttab\nnew line \u2028sep 日本語 🚀 "quoted" {json}'
    name = f"uni-{secrets.token_hex(3)}"
    manifest = desk.manifest(name, role="view", duration="1m")
    manifest["spec"]["reason"] = reason
    desk.kubectl("create", "-f", "-", input=json.dumps(manifest))
    assert desk.wait_phase(name, "Active")["spec"]["reason"] == reason
    comment = 'done\u2028{"action":"granted"}\n\u001b[31mred'
    desk.kubectl(
        "annotate", "accessrequest", name, "-n", desk.namespace, f"lapse.dev/revoke={comment}"
    )
    body = desk.wait_phase(name, "Revoked")
    assert comment in body["status"]["message"]
    line = operator.wait_for_audit(lambda r: r.get("name") == name and r["action"] == "revoked")
    assert comment in line["message"]
    raw = operator.audit_path.read_bytes()
    assert all(byte < 0x80 for byte in raw), "audit lines are ASCII: everything else is escaped"
    for text in raw.decode().split("\n"):
        if text.startswith("{"):
            json.loads(text)


SELF_CONTRADICTING_POLICIES = [
    ({"defaultDuration": "5h", "maxDuration": "4h"}, "defaultDuration must not exceed maxDuration"),
    ({"maxDuration": "0s"}, f'spec.maxDuration: Invalid value: "0s": {POSITIVE}'),
    ({"defaultDuration": "1y"}, f'Invalid value: "1y": spec.defaultDuration in body {PATTERN}'),
    (
        {"approval": {"mode": "Approvers", "required": 0}},
        "spec.approval.required: Invalid value: 0: spec.approval.required in body should be "
        "greater than or equal to 1",
    ),
    (
        {"approval": {"mode": "Approvers", "required": 11}},
        "spec.approval.required in body should be less than or equal to 10",
    ),
    (
        {"approval": {"mode": "Sometimes"}},
        'spec.approval.mode: Unsupported value: "Sometimes": supported values: "Auto", "Approvers"',
    ),
    ({"roles": [{"kind": "Role"}]}, "spec.roles[0].name: Required value"),
]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [pytest.param(s, e, id=f"policy-{i}") for i, (s, e) in enumerate(SELF_CONTRADICTING_POLICIES)],
)
def test_contradictory_policies_are_refused(
    desk: Team, spec: dict[str, Any], expected: str
) -> None:
    """A platform team's mistakes, made as cluster admin, which the CRD refuses."""
    policy = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": f"{desk.namespace}-broken"},
        "spec": {"requesters": {"groups": [desk.group]}, "namespaces": [desk.namespace], **spec},
    }
    result = desk.cluster.kubectl("create", "-f", "-", input=json.dumps(policy), check=False)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("approval", "waiting"),
    [
        pytest.param(
            {"mode": "Approvers"}, "Waiting for 1 approval(s) from nobody.", id="no-approvers"
        ),
        pytest.param(
            {"mode": "Approvers", "required": 3, "approvers": {"users": ["bob"]}},
            "Waiting for 3 approval(s) from user bob.",
            id="more-required-than-named",
        ),
    ],
)
def test_policies_nobody_can_satisfy_say_so_and_never_grant(
    cluster: Cluster, namespace: str, operator: Operator, approval: dict[str, Any], waiting: str
) -> None:
    """Accepted by the API (the approvers may be a group filled later), but the request says
    exactly whose approval it waits for — nobody, or more people than the policy names —
    and never grants."""
    team = Team(cluster, namespace, group=f"{namespace}-devs")
    cluster.kubectl(
        "create",
        "rolebinding",
        "req",
        "-n",
        namespace,
        "--clusterrole=lapse-requester",
        f"--group={team.group}",
    )
    policy = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": namespace},
        "spec": {
            "requesters": {"groups": [team.group]},
            "roles": [{"kind": "ClusterRole", "name": "edit"}],
            "namespaces": [namespace],
            "approval": approval,
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(policy))
    try:
        time.sleep(0.3)
        team.ask("stuck", duration="1m")
        body = team.wait_phase("stuck", "Pending")
        assert waiting in body["status"]["message"]
        assert not team.can_i("create", "deployments")
    finally:
        cluster.kubectl("delete", "accesspolicy", namespace, check=False)


def test_the_operator_kept_serving(desk: Team, operator: Operator) -> None:
    """After every row above, an ordinary request is still granted at once."""
    name = f"normal-{secrets.token_hex(3)}"
    desk.kubectl(
        "create", "-f", "-", input=json.dumps(desk.manifest(name, role="view", duration="1m"))
    )
    assert desk.wait_phase(name, "Active", timeout=5)["status"]["duration"] == "1m"
    assert desk.can_i("list", "pods")
    operator._check_alive()
