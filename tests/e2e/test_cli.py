"""`kubectl lapse` end to end: the plugin as kubectl runs it, against the API with Lapse running.

Each test acts as an impersonated developer (`--as alice --as-group <team>`, holding only the
sample `lapse-requester` ClusterRole) or as an approver, and checks what a person would: the
exit code, the sentence printed, and what the cluster now holds.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from tests.cluster import Cluster, kubectl_binary
from tests.e2e.conftest import Team, wait_for


def lapse(
    team: Team,
    *args: str,
    user: str | None = "alice",
    groups: tuple[str, ...] | None = None,
    timeout: float = 90,
) -> subprocess.CompletedProcess[str]:
    """`kubectl lapse ARGS` as kubectl runs the plugin (found on PATH as kubectl-lapse)."""
    command = [kubectl_binary(), "lapse", *args]
    if user is not None:
        command.append(f"--as={user}")
        command += [f"--as-group={g}" for g in (groups if groups is not None else (team.group,))]
    result = subprocess.run(
        command, capture_output=True, text=True, env=team.cluster.env(), timeout=timeout
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def created_name(result: subprocess.CompletedProcess[str]) -> str:
    found = re.search(
        r"^(?:accessrequest|breakglass)/(\S+) created", result.stdout + result.stderr, re.M
    )
    assert found, f"no 'created' line in:\n{result.stdout}\n{result.stderr}"
    return found.group(1)


def approver_policy(team: Team, required: int = 1) -> str:
    """A policy that needs `required` approvals from the team's leads for `admin`."""
    approval = {"approvers": {"groups": [f"{team.namespace}-leads"]}, "required": required}
    return team.policy(roles=("admin",), mode="Approvers", suffix="-approved", approval=approval)


def approvers(cluster: Cluster, team: Team) -> str:
    """The leads group, allowed to read and annotate requests in the team's namespace."""
    leads = f"{team.namespace}-leads"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "lapse-approver", "namespace": team.namespace},
        "rules": [
            {
                "apiGroups": ["lapse.dev"],
                "resources": ["accessrequests"],
                "verbs": ["get", "list", "watch", "patch"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "lapse-approvers", "namespace": team.namespace},
        "subjects": [{"kind": "Group", "name": leads, "apiGroup": "rbac.authorization.k8s.io"}],
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        },
    }
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [role, binding]}),
    )
    return leads


def table_row(output: str, name: str) -> dict[str, str]:
    """One row of `kubectl lapse list`, cut at the header's column starts."""
    header, *rows = output.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    titles = [header[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
    for line in rows:
        cells = [line[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
        if cells[0] == name:
            return dict(zip(titles, cells, strict=True))
    raise AssertionError(f"{name} not in:\n{output}")


def test_request_waits_until_active_then_list_get_explain(team: Team) -> None:
    team.policy()
    assert not team.can_i("create", "deployments")

    asked = lapse(
        team,
        "request",
        "edit",
        "-n",
        team.namespace,
        "--for",
        "2h",
        "--reason",
        "Fix stuck retries",
        "--ticket",
        "PAY-1",
    )
    assert asked.returncode == 0, asked.stderr
    name = created_name(asked)
    assert name.startswith("edit-")
    assert f"AccessRequest {team.namespace}/{name} is active." in asked.stdout
    assert f"It grants ClusterRole edit in namespace {team.namespace} to user alice" in asked.stdout
    # Waiting ended on Active, so the access is usable the moment the command returns.
    assert team.can_i("create", "deployments")
    body = team.request(name)
    assert body["spec"]["ticket"] == "PAY-1" and body["spec"]["reason"] == "Fix stuck retries"

    listed = lapse(team, "list", "-n", team.namespace)
    assert listed.returncode == 0, listed.stderr
    row = table_row(listed.stdout, name)
    assert row["KIND"] == "AccessRequest" and row["STATE"] == "Active"
    assert (
        row["SUBJECT"] == "alice" and row["ROLE"] == "edit" and row["NAMESPACE"] == team.namespace
    )
    assert re.fullmatch(r"1h5\dm|2h", row["TIME LEFT"]), row
    assert "\033[" not in listed.stdout  # not a terminal: no colour

    shown = lapse(team, "get", name, "-n", team.namespace)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^State: +Active \(Granted\)$", shown.stdout, re.M)
    assert re.search(rf"^  RoleBinding {team.namespace}/\S+$", shown.stdout, re.M)
    assert "History:" in shown.stdout and "Conditions:" in shown.stdout

    as_json = lapse(team, "get", name, "-n", team.namespace, "-o", "json")
    assert json.loads(as_json.stdout)["status"]["phase"] == "Active"

    explained = lapse(team, "explain", name, "-n", team.namespace)
    assert explained.returncode == 0, explained.stderr
    binding = body["status"]["bindings"][0]["name"]
    assert f"through RoleBinding {binding}." in explained.stdout
    assert re.search(r"It expires in (1h5\dm|2h), at \S+Z\.", explained.stdout)


def test_request_output_json_keeps_stdout_clean(team: Team) -> None:
    team.policy()
    asked = lapse(
        team, "request", "view", "-n", team.namespace, "--reason", "Read logs", "-o", "json"
    )
    assert asked.returncode == 0, asked.stderr
    body = json.loads(asked.stdout)
    assert body["kind"] == "AccessRequest" and body["status"]["phase"] == "Active"
    assert body["status"]["duration"] == "1h"  # the policy's default: no --for given
    assert "created" in asked.stderr


def test_no_wait_returns_once_created(team: Team) -> None:
    team.policy()
    asked = lapse(
        team,
        "request",
        "view",
        "-n",
        team.namespace,
        "--reason",
        "Later",
        "--name",
        "later",
        "--no-wait",
    )
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.strip() == f"accessrequest/later created in namespace {team.namespace}"
    team.wait_phase("later", "Active")


def test_denied_request_exits_3_with_lapse_reason(team: Team) -> None:
    team.policy(roles=("view",))
    asked = lapse(
        team, "request", "edit", "-n", team.namespace, "--for", "1h", "--reason", "Edit please"
    )
    assert asked.returncode == 3
    name = created_name(asked)
    assert asked.stderr.strip().endswith(
        f'error: accessrequest "{name}" in namespace "{team.namespace}" was denied '
        f"(RoleNotAllowed): No AccessPolicy lets alice request ClusterRole edit."
    )
    explained = lapse(team, "explain", name, "-n", team.namespace)
    assert "was denied (RoleNotAllowed)" in explained.stdout
    assert "asking again means a new request" in explained.stdout


def test_duration_beyond_policy_is_denied(team: Team) -> None:
    team.policy(maximum="1h")
    asked = lapse(team, "request", "edit", "-n", team.namespace, "--for", "3h", "--reason", "Long")
    assert asked.returncode == 3
    assert "(DurationExceedsPolicy)" in asked.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--role-kind", "Foo", "--reason", "x"), "argument --role-kind: invalid choice: 'Foo'"),
        (("--for", "1y", "--reason", "x"), "'1y' is not a duration such as 30m, 2h or 1h30m"),
        (("--for", "1h"), "the following arguments are required: --reason"),
        (("--reason", "   "), "argument --reason: must not be empty"),
        (("--reason", "x", "--timeout", "soon"), "'soon' is not a wait such as 60s or 2m"),
    ],
)
def test_bad_command_lines_exit_2_and_create_nothing(
    team: Team, args: tuple[str, ...], said: str
) -> None:
    asked = lapse(team, "request", "edit", "-n", team.namespace, *args)
    assert asked.returncode == 2
    assert said in asked.stderr
    listed = team.cluster.kubectl("get", "accessrequests", "-n", team.namespace, "-o", "name")
    assert listed.stdout.strip() == ""


def test_not_found_is_one_sentence(team: Team) -> None:
    for command in ("get", "explain"):
        result = lapse(team, command, "nope", "-n", team.namespace)
        assert result.returncode == 1
        assert (
            result.stderr
            == f'error: accessrequest "nope" not found in namespace "{team.namespace}"\n'
        )
    glass = lapse(team, "get", "bg/nope", user=None)
    assert glass.returncode == 1
    assert glass.stderr == 'error: breakglass "nope" not found\n'


def test_forbidden_shows_the_api_sentence(team: Team) -> None:
    stranger = lapse(team, "list", "-n", team.namespace, groups=("someone-else",))
    assert stranger.returncode == 1
    assert stranger.stderr.startswith("error: ")
    assert "forbidden" in stranger.stderr and stranger.stderr.count("\n") == 1


def test_pending_request_names_who_must_approve(team: Team) -> None:
    policy = approver_policy(team, required=2)
    asked = lapse(
        team, "request", "admin", "-n", team.namespace, "--for", "1h", "--reason", "Rotate keys"
    )
    assert asked.returncode == 0, asked.stderr
    name = created_name(asked)
    leads = f"{team.namespace}-leads"
    needs = f"It needs 2 approvals from group {leads}; it has none, so 2 more are missing."
    # Developers may not read policies, but the request's status records what its policy
    # requires: the requester reads the same answer as an admin.
    assert f"{team.namespace}/{name} is waiting for approval.\n{needs}\n" in asked.stdout
    assert "you cannot read it" not in asked.stdout
    body = team.request(name)
    assert body["status"]["policy"] == policy

    listed = lapse(team, "list", "-n", team.namespace, user=None)
    assert table_row(listed.stdout, name)["APPROVALS"] == "0/2"
    explained = lapse(team, "explain", name, "-n", team.namespace, user=None)
    assert needs in explained.stdout
    assert "alice asked for it and cannot approve it." in explained.stdout
    assert re.search(r"it times out in 23h5\dm|it times out in 1d", explained.stdout)
    assert f"kubectl lapse approve {name} -n {team.namespace}" in explained.stdout


@pytest.mark.faults
def test_timeout_exits_4_and_leaves_the_request(team: Team, cluster: Cluster) -> None:
    team.policy()
    assert cluster.faults is not None
    # Lapse cannot write the decision for this namespace: the CLI must give up on time.
    cluster.faults.set(
        error_rate=1.0,
        error_codes=[503],
        match={"namespaces": [team.namespace], "verbs": ["patch", "update"]},
    )
    try:
        asked = lapse(
            team,
            "request",
            "edit",
            "-n",
            team.namespace,
            "--reason",
            "x",
            "--name",
            "slow",
            "--timeout",
            "3s",
        )
    finally:
        cluster.faults.reset()
    assert asked.returncode == 4
    where = f'accessrequest "slow" in namespace "{team.namespace}"'
    assert asked.stderr.strip().startswith(f"error: timed out after 3s waiting for {where}")
    assert f"kubectl lapse explain slow -n {team.namespace}" in asked.stderr
    assert team.request("slow")["metadata"]["name"] == "slow"  # giving up deletes nothing


def test_revoke_ends_access_and_keeps_the_record(team: Team) -> None:
    team.policy()
    asked = lapse(
        team,
        "request",
        "edit",
        "-n",
        team.namespace,
        "--for",
        "1h",
        "--reason",
        "x",
        "--name",
        "done-early",
    )
    assert asked.returncode == 0, asked.stderr
    assert team.can_i("create", "deployments")
    revoked = lapse(
        team, "revoke", "done-early", "-n", team.namespace, "-m", "Finished", "--timeout", "20s"
    )
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == "accessrequest/done-early revoked; its access is gone"
    assert not team.can_i("create", "deployments")
    body = team.request("done-early")
    assert body["status"]["phase"] == "Revoked"
    assert "lapse.dev/revoke" not in body["metadata"].get("annotations", {})
    again = lapse(team, "revoke", "done-early", "-n", team.namespace)
    assert again.returncode == 1
    assert "already revoked" in again.stderr
    assert "there is nothing to revoke" in again.stderr


def test_approve_by_a_lead_activates_and_self_approval_is_refused(team: Team) -> None:
    approver_policy(team, required=1)
    leads = approvers(team.cluster, team)
    asked = lapse(
        team,
        "request",
        "admin",
        "-n",
        team.namespace,
        "--for",
        "1h",
        "--reason",
        "x",
        "--name",
        "needs-ok",
    )
    assert asked.returncode == 0, asked.stderr

    own = lapse(team, "approve", "needs-ok", "-n", team.namespace, groups=(team.group, leads))
    assert own.returncode == 1
    assert own.stderr.startswith("error: ") and "denied the request" in own.stderr

    approved = lapse(
        team,
        "approve",
        "needs-ok",
        "-n",
        team.namespace,
        "-m",
        "Checked",
        user="bob",
        groups=(leads,),
    )
    assert approved.returncode == 0, approved.stderr
    # What the grant gives comes first, then the decision.
    shown = approved.stdout.strip().splitlines()
    assert shown[0].startswith("Approving needs-ok: ClusterRole admin adds: ")
    assert shown[-1] == "accessrequest/needs-ok approved"
    body = team.wait_phase("needs-ok", "Active")
    record = body["status"]["approvals"][0]
    assert record["user"]["username"] == "bob" and record["comment"] == "Checked"
    listed = lapse(team, "list", "-n", team.namespace, user=None)
    assert table_row(listed.stdout, "needs-ok")["APPROVALS"] == "1/1"


def test_deny_records_the_reason(team: Team) -> None:
    approver_policy(team)
    leads = approvers(team.cluster, team)
    lapse(team, "request", "admin", "-n", team.namespace, "--reason", "x", "--name", "nope-please")
    denied = lapse(
        team,
        "deny",
        "nope-please",
        "-n",
        team.namespace,
        "-m",
        "Use view",
        user="bob",
        groups=(leads,),
    )
    assert denied.returncode == 0, denied.stderr
    team.wait_phase("nope-please", "Denied")
    explained = lapse(team, "explain", "nope-please", "-n", team.namespace)
    # The status message carries the approver's verdict; explain says it once.
    assert "was denied (DeniedByApprover): Denied by bob: Use view.\n" in explained.stdout
    assert explained.stdout.count("Use view") == 1


def breakglass_policy(team: Team) -> tuple[str, str]:
    """A policy letting the team's on-call group break glass for `admin`, and that group."""
    oncall = f"{team.namespace}-oncall"
    name = f"{team.namespace}-glass"
    policy: dict[str, Any] = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": name},
        "spec": {
            "breakGlass": {
                "requesters": {"groups": [oncall]},
                "roles": [{"kind": "ClusterRole", "name": "admin"}],
                "maxDuration": "1h",
                "review": {"approvers": {"users": ["carol"]}},
            }
        },
    }
    team.cluster.kubectl("apply", "-f", "-", input=json.dumps(policy))
    team.policies.append(name)
    return name, oncall


def test_breakglass_is_active_at_once_then_reviewed_and_revoked(team: Team) -> None:
    _, oncall = breakglass_policy(team)
    name = f"{team.namespace}-bg"
    # system:masters stands in for the on-call RBAC a platform team would ship.
    sre = {"user": "sam", "groups": (oncall, "system:masters")}
    try:
        glass = lapse(
            team, "breakglass", "admin", "--incident", "INC-1", "--for", "30m",
            "--reason", "DB down", "-n", team.namespace, "--name", name, **sre,
        )  # fmt: skip
        assert glass.returncode == 0, glass.stderr
        assert f"BreakGlass {name} is active." in glass.stdout
        assert "for incident INC-1" in glass.stdout
        listed = lapse(team, "list", "-n", team.namespace, "--breakglass", user=None)
        row = table_row(listed.stdout, name)
        assert row["KIND"] == "BreakGlass" and row["STATE"] == "Active"
        assert re.fullmatch(r"2\dm|30m", row["TIME LEFT"])

        reviewed = lapse(
            team, "review", name, "--verdict", "justified", "-m", "Outage",
            user="carol", groups=("system:masters",),
        )  # fmt: skip
        assert reviewed.returncode == 0, reviewed.stderr

        def review_shown() -> str | None:
            shown = lapse(team, "get", f"bg/{name}", user=None).stdout
            return shown if re.search(r"^Review: +Justified by carol", shown, re.M) else None

        wait_for(review_shown, timeout=15, interval=0.5, what="the review in `kubectl lapse get`")

        revoked = lapse(team, "revoke", f"bg/{name}", "-m", "Resolved", **sre)
        assert revoked.returncode == 0, revoked.stderr
        assert revoked.stdout.strip() == f"breakglass/{name} revoked; its access is gone"
    finally:
        team.cluster.kubectl("delete", "breakglass", name, "--ignore-not-found", check=False)


@pytest.mark.faults
def test_list_right_after_an_api_server_restart_waits_as_kubectl_does(
    cluster: Cluster, team: Team
) -> None:
    """A restarted kube-apiserver answers lists 429 "storage is (re)initializing" with
    Retry-After while its caches fill (mirrored by the local API's `restart`); kubectl waits
    and asks again, and so does `kubectl lapse`, instead of failing the command."""
    team.policy()
    team.ask("before-restart", duration="1h")
    team.wait_phase("before-restart", "Active")
    assert cluster.faults is not None
    cluster.faults.restart(6.0)
    listed = lapse(team, "list", "-n", team.namespace)
    assert listed.returncode == 0, listed.stderr
    assert "before-restart" in listed.stdout
    assert cluster.faults.state()["counters"]["initializing"] >= 1
