"""`kubectl lapse … --contexts/--all-contexts` over two clusters, each with its own Lapse.

Every command runs as kubectl runs the plugin, with one kubeconfig holding both clusters'
contexts and the user impersonated, as a person with the sample roles only. One cluster
stopped in the middle: the other keeps answering and the tools name the one that does not.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import kubectl_binary
from tests.e2e.conftest import SAMPLES, wait_for
from tests.e2e.test_cli import approvers as readers_of_requests
from tests.fleet.conftest import Fleet, FleetTeam

UNREACHABLE = 5


def lapse(
    fleet: Fleet,
    team: FleetTeam,
    *args: str,
    user: str | None = "alice",
    groups: tuple[str, ...] | None = None,
    kubeconfig: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`kubectl lapse ARGS` over the fleet's kubeconfig, as `user` in `groups`."""
    command = [kubectl_binary(), "lapse", *args, f"--kubeconfig={kubeconfig or fleet.kubeconfig}"]
    if user is not None:
        command.append(f"--as={user}")
        command += [f"--as-group={g}" for g in (groups if groups is not None else (team.group,))]
    east = team["east"].cluster
    result = subprocess.run(
        command, capture_output=True, text=True, env=east.env(), timeout=timeout
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def rows(text: str) -> list[dict[str, str]]:
    """A table's rows as {HEADER: cell}, cut at the header's column starts."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    names = [header[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
    return [
        {
            name: line[s:e].strip()
            for name, s, e in zip(names, starts, [*starts[1:], None], strict=True)
        }
        for line in lines[1:]
    ]


def phase(team: FleetTeam, member: str, name: str) -> str | None:
    body = team[member].request(name)
    return (body.get("status") or {}).get("phase")


def wait_phase(team: FleetTeam, member: str, name: str, wanted: str) -> None:
    wait_for(
        lambda: phase(team, member, name) == wanted or None,
        timeout=30,
        interval=0.3,
        what=f"{name} to be {wanted} in {member}",
    )


def test_list_across_both_clusters_has_a_cluster_column(
    fleet: Fleet, fleet_team: FleetTeam
) -> None:
    fleet_team["east"].ask("in-east", duration="10m")
    fleet_team["west"].ask("in-west", duration="10m")
    wait_phase(fleet_team, "east", "in-east", "Active")
    wait_phase(fleet_team, "west", "in-west", "Active")

    listed = lapse(fleet, fleet_team, "list", "-n", fleet_team.namespace, "--all-contexts")

    assert listed.returncode == 0, listed.stderr
    found = {(r["CLUSTER"], r["NAME"], r["STATE"]) for r in rows(listed.stdout)}
    assert found == {("east", "in-east", "Active"), ("west", "in-west", "Active")}

    machine = lapse(
        fleet, fleet_team, "list", "-n", fleet_team.namespace, "--contexts", "west", "-o", "json"
    )
    document = json.loads(machine.stdout)
    [west] = document["clusters"]
    assert west["context"] == "west" and not west["unreachable"]
    assert [i["metadata"]["name"] for i in west["result"]["items"]] == ["in-west"]


def test_a_context_the_kubeconfig_lacks_is_a_usage_error(
    fleet: Fleet, fleet_team: FleetTeam
) -> None:
    typo = lapse(fleet, fleet_team, "list", "--contexts", "east,wset")
    assert typo.returncode == 2
    assert "no context 'wset'" in typo.stderr and "east, west" in typo.stderr


def test_request_across_makes_one_named_request_each_cluster_judges(
    fleet: Fleet, fleet_team: FleetTeam
) -> None:
    """West's policy offers only `view`: the same request is granted in east and denied in
    west, by each cluster's own Lapse; the command says so and exits 3."""
    west = fleet_team["west"]
    west.cluster.kubectl("delete", "accesspolicy", *west.policies)
    west.policies.clear()
    west.policy(roles=("view",))

    asked = lapse(
        fleet, fleet_team, "request", "edit", "-n", fleet_team.namespace, "--for", "10m",
        "--reason", "Roll the release back in both regions", "--all-contexts",
    )  # fmt: skip

    assert asked.returncode == 3, asked.stdout + asked.stderr
    name = re.search(r"as (edit-\w{5}):", asked.stdout + asked.stderr)
    assert name, asked.stdout
    assert phase(fleet_team, "east", name.group(1)) == "Active"
    assert phase(fleet_team, "west", name.group(1)) in ("Denied", "Invalid")
    assert "── east ──" in asked.stdout and "── west ──" in asked.stdout


def test_approve_across_approves_where_the_approver_may_and_names_where_not(
    fleet: Fleet, fleet_team: FleetTeam
) -> None:
    """Manual approval in both clusters, but bob leads only east's approvers: his approval
    lands in east and west's webhook refuses it; alice cannot approve her own anywhere."""
    leads = f"{fleet_team.namespace}-leads"
    for member, approvers in (("east", leads), ("west", f"{fleet_team.namespace}-others")):
        team = fleet_team[member]
        assert readers_of_requests(team.cluster, team) == leads
        team.cluster.kubectl("delete", "accesspolicy", *team.policies)
        team.policies.clear()
        team.policy(mode="Approvers", approval={"approvers": {"groups": [approvers]}})
    asked = lapse(
        fleet, fleet_team, "request", "edit", "-n", fleet_team.namespace, "--name", "both",
        "--reason", "Migrate the ledger in both regions", "--contexts", "east,west",
    )  # fmt: skip
    assert asked.returncode == 0, asked.stdout + asked.stderr
    wait_phase(fleet_team, "east", "both", "Pending")
    wait_phase(fleet_team, "west", "both", "Pending")

    own = lapse(
        fleet, fleet_team, "approve", "both", "-n", fleet_team.namespace, "--all-contexts", "--yes"
    )
    assert own.returncode == 1
    assert "east:" in own.stderr and "west:" in own.stderr

    approved = lapse(
        fleet, fleet_team, "approve", "both", "-n", fleet_team.namespace, "--all-contexts",
        "--yes", "-m", "Checked the plan", user="bob", groups=(leads,),
    )  # fmt: skip
    assert approved.returncode == 1, approved.stdout + approved.stderr
    assert "east: accessrequest/both approved" in approved.stdout
    assert re.search(r"error: west: .*", approved.stderr), approved.stderr
    wait_phase(fleet_team, "east", "both", "Active")
    assert phase(fleet_team, "west", "both") == "Pending"


@pytest.fixture
def oncall(fleet: Fleet, fleet_team: FleetTeam) -> Iterator[str]:
    """A break-glass policy for the team's on-call group on every member."""
    group = f"{fleet_team.namespace}-oncall"
    name = f"{fleet_team.namespace}-bg"
    policy = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": name},
        "spec": {
            "breakGlass": {
                "requesters": {"groups": [group]},
                "roles": [{"kind": "ClusterRole", "name": "edit"}],
                "maxDuration": "1h",
                "requireIncident": True,
                "review": {"approvers": {"groups": [f"{group}-leads"]}, "deadline": "24h"},
            }
        },
    }
    for member in fleet:
        member.cluster.kubectl("apply", "-f", str(SAMPLES / "breakglass-clusterrole.yaml"))
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{fleet_team.namespace}-oncall"},
            "subjects": [{"kind": "Group", "name": group, "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "lapse-breakglass",
            },
        }
        member.cluster.kubectl("apply", "-f", "-", input=json.dumps(binding))
        member.cluster.kubectl("apply", "-f", "-", input=json.dumps(policy))
    try:
        yield group
    finally:
        for member in fleet:
            incident = fleet_team.namespace
            member.cluster.kubectl(
                "delete", "breakglass", incident, "--ignore-not-found", check=False
            )
            member.cluster.kubectl(
                "delete", "accesspolicy", name, "--ignore-not-found", check=False
            )
            member.cluster.kubectl(
                "delete", "clusterrolebinding", f"{fleet_team.namespace}-oncall",
                "--ignore-not-found", check=False,
            )  # fmt: skip


def test_breakglass_across_carries_the_incident_in_each_cluster(
    fleet: Fleet, fleet_team: FleetTeam, oncall: str
) -> None:
    incident = fleet_team.namespace  # `t-…`: the suites' prefix, so leftovers are found
    broke = lapse(
        fleet, fleet_team, "breakglass", "edit", "--incident", incident, "--for", "10m",
        "-n", fleet_team.namespace, "--reason", "Region failover", "--all-contexts",
        user="sre", groups=(oncall,),
    )  # fmt: skip
    assert broke.returncode == 0, broke.stdout + broke.stderr
    for member in fleet:
        body = json.loads(
            member.cluster.kubectl("get", "breakglass", incident, "-o", "json").stdout
        )
        assert body["spec"]["incident"] == incident
        assert body["status"]["phase"] == "Active"

    revoked = lapse(
        fleet, fleet_team, "revoke", f"bg/{incident}", "-m", "Resolved", "--all-contexts",
        user="sre", groups=(oncall,),
    )  # fmt: skip
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    for member in fleet:
        body = json.loads(
            member.cluster.kubectl("get", "breakglass", incident, "-o", "json").stdout
        )
        assert body["status"]["phase"] == "Revoked"


def test_get_and_explain_answer_per_cluster_and_say_where_it_is_missing(
    fleet: Fleet, fleet_team: FleetTeam
) -> None:
    fleet_team["east"].ask("only-east", duration="10m")
    wait_phase(fleet_team, "east", "only-east", "Active")

    shown = lapse(
        fleet, fleet_team, "get", "only-east", "-n", fleet_team.namespace, "--all-contexts"
    )
    assert shown.returncode == 1
    east, _west = shown.stdout.split("── west ──")
    assert "── east ──" in east and "only-east" in east and "Active" in east
    assert "not found" in shown.stderr

    explained = lapse(
        fleet, fleet_team, "explain", "only-east", "-n", fleet_team.namespace,
        "--contexts", "east",
    )  # fmt: skip
    assert explained.returncode == 0 and "── east ──" in explained.stdout


def test_policy_diff_shows_what_differs_and_what_is_missing(
    fleet: Fleet, fleet_team: FleetTeam
) -> None:
    same = lapse(fleet, fleet_team, "policy", "diff", "--all-contexts", user=None)
    assert same.returncode == 0, same.stdout + same.stderr
    assert f"accesspolicy/{fleet_team.namespace}" not in same.stdout

    west = fleet_team["west"]
    west.policy(maximum="8h")  # same name: west's copy now differs
    west.policy(suffix="-west-only")
    differ = lapse(fleet, fleet_team, "policy", "diff", "--all-contexts", user=None)

    assert differ.returncode == 1, differ.stdout + differ.stderr
    ns = fleet_team.namespace
    assert f"accesspolicy/{ns}: differs: east vs west" in differ.stdout
    assert "-maxDuration: 4h" in differ.stdout and "+maxDuration: 8h" in differ.stdout
    assert f"accesspolicy/{ns}-west-only: only in west (missing in east)" in differ.stdout
    document = yaml.safe_load(
        lapse(fleet, fleet_team, "policy", "diff", "--all-contexts", "-o", "yaml", user=None).stdout
    )
    mine = {p["name"]: p for p in document["policies"] if p["name"].startswith(ns)}
    assert mine[f"{ns}-west-only"]["missing"] == ["east"]


def test_audit_report_across_lists_both_clusters(fleet: Fleet, fleet_team: FleetTeam) -> None:
    fleet_team["east"].ask("rev-east", duration="10m")
    fleet_team["west"].ask("rev-west", duration="10m")
    wait_phase(fleet_team, "east", "rev-east", "Active")
    wait_phase(fleet_team, "west", "rev-west", "Active")

    report = lapse(
        fleet, fleet_team, "audit", "report", "--since", "1h", "-n", fleet_team.namespace,
        "--all-contexts", "-o", "csv", user=None,
    )  # fmt: skip

    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    mine = [line for line in lines[1:] if f",{fleet_team.namespace}," in line]
    assert sorted(line.split(",")[0] for line in mine) == ["east", "west"]


def silent_listener() -> socket.socket:
    """A port that takes connections and never answers: a cluster that hangs."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def with_context(source: Path, target: Path, name: str, server: str) -> Path:
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    first = config["clusters"][0]["cluster"]
    config["clusters"].append({"name": name, "cluster": {**first, "server": server}})
    config["contexts"].append(
        {
            "name": name,
            "context": {"cluster": name, "user": config["contexts"][0]["context"]["user"]},
        }
    )
    target.write_text(yaml.safe_dump(config))
    return target


def test_a_stopped_cluster_is_named_and_the_other_keeps_working(
    fleet: Fleet, fleet_team: FleetTeam, tmp_path: Path
) -> None:
    fleet_team["east"].ask("before", duration="10m")
    wait_phase(fleet_team, "east", "before", "Active")
    fleet.stop("west")

    listed = lapse(fleet, fleet_team, "list", "-n", fleet_team.namespace, "--all-contexts")
    assert listed.returncode == UNREACHABLE, listed.stdout + listed.stderr
    assert [r["CLUSTER"] for r in rows(listed.stdout)] == ["east"]
    assert "warning: context west: unreachable" in listed.stderr

    asked = lapse(
        fleet, fleet_team, "request", "view", "-n", fleet_team.namespace, "--name", "during",
        "--reason", "Read the logs while west is down", "--all-contexts",
    )  # fmt: skip
    assert asked.returncode == UNREACHABLE, asked.stdout + asked.stderr
    assert "── west: unreachable ──" in asked.stdout
    assert phase(fleet_team, "east", "during") == "Active"

    # A cluster that takes the connection and never answers is named too, after
    # --cluster-timeout, and does not hold the command open.
    hung = silent_listener()
    try:
        config = with_context(
            fleet.kubeconfig, tmp_path / "kubeconfig", "hung",
            f"https://127.0.0.1:{hung.getsockname()[1]}",
        )  # fmt: skip
        waited = lapse(
            fleet, fleet_team, "list", "-n", fleet_team.namespace, "--contexts", "east,hung",
            "--cluster-timeout", "2s", kubeconfig=config, timeout=30,
        )  # fmt: skip
    finally:
        hung.close()
    assert waited.returncode == UNREACHABLE
    assert [r["NAME"] for r in rows(waited.stdout)] == ["before", "during"]
    assert "context hung: unreachable" in waited.stderr

    fleet.start("west")
    back = wait_for(
        lambda: (
            r
            if (
                r := lapse(fleet, fleet_team, "list", "-n", fleet_team.namespace, "--all-contexts")
            ).returncode
            == 0
            else None
        ),
        timeout=60,
        interval=1,
        what="west to answer again",
    )
    assert "unreachable" not in back.stderr


def test_a_kubeconfig_without_a_current_context_serves_across_contexts(
    fleet: Fleet, fleet_team: FleetTeam, tmp_path: Path
) -> None:
    """`--all-contexts` needs no current context: nothing is asked of a cluster not named."""
    config: dict[str, Any] = yaml.safe_load(fleet.kubeconfig.read_text())
    config.pop("current-context", None)
    bare = tmp_path / "kubeconfig"
    bare.write_text(yaml.safe_dump(config))
    fleet_team["west"].ask("no-current", duration="10m")
    wait_phase(fleet_team, "west", "no-current", "Active")

    listed = lapse(
        fleet, fleet_team, "list", "-n", fleet_team.namespace, "--all-contexts", kubeconfig=bare
    )

    assert listed.returncode == 0, listed.stderr
    assert [(r["CLUSTER"], r["NAME"]) for r in rows(listed.stdout)] == [("west", "no-current")]


def test_every_command_across_a_stopped_cluster_answers_for_the_other(
    fleet: Fleet, fleet_team: FleetTeam, oncall: str
) -> None:
    """West down: each command does its part in east, names west unreachable, exits 5."""
    leads = readers_of_requests(fleet_team["east"].cluster, fleet_team["east"])
    east = fleet_team["east"]
    east.policy(
        roles=("admin",),
        mode="Approvers",
        suffix="-approved",
        approval={"approvers": {"groups": [leads]}},
    )
    east.ask("held", role="admin", duration="10m")
    wait_phase(fleet_team, "east", "held", "Pending")
    east.ask("seen", duration="10m")
    wait_phase(fleet_team, "east", "seen", "Active")
    fleet.stop("west")
    ns = fleet_team.namespace

    def across(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        done = lapse(fleet, fleet_team, *args, "--all-contexts", **kwargs)
        assert done.returncode == UNREACHABLE, f"{args}: {done.stdout}{done.stderr}"
        assert "west: unreachable" in done.stdout + done.stderr, args
        return done

    approved = across("approve", "held", "-n", ns, "--yes", user="bob", groups=(leads,))
    assert "east: accessrequest/held approved" in approved.stdout
    wait_phase(fleet_team, "east", "held", "Active")
    for command in ("get", "explain", "report"):
        shown = across(command, "seen", "-n", ns)
        assert "── east ──" in shown.stdout and "seen" in shown.stdout, command
    broke = across(
        "breakglass", "edit", "--incident", ns, "--for", "10m", "-n", ns,
        "--reason", "West is down", user="sre", groups=(oncall,),
    )  # fmt: skip
    assert "── east ──" in broke.stdout
    body = json.loads(east.cluster.kubectl("get", "breakglass", ns, "-o", "json").stdout)
    assert body["status"]["phase"] == "Active"
    diff = across("policy", "diff", user=None)
    assert "1 of 2 clusters compared (east)" in diff.stdout
    review = across("audit", "report", "--since", "1h", "-n", ns, "-o", "csv", user=None)
    assert {line.split(",")[0] for line in review.stdout.splitlines()[1:]} == {"east"}


def at_a_terminal(
    fleet: Fleet, team: FleetTeam, args: list[str], answer: str, *, user: str, groups: list[str]
) -> tuple[int, str]:
    """`kubectl lapse ARGS` with a terminal for stdin and stdout (a pty), answering `answer`
    to its question; its exit code and everything it wrote."""
    primary, secondary = pty.openpty()
    command = [
        kubectl_binary(), "lapse", *args, f"--kubeconfig={fleet.kubeconfig}", f"--as={user}",
        *(f"--as-group={g}" for g in groups),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdin=secondary, stdout=secondary, stderr=secondary,
        env=team["east"].cluster.env(), close_fds=True,
    )  # fmt: skip
    os.close(secondary)
    seen = b""
    answered = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        if not answered and b"[y/N]" in seen:
            os.write(primary, answer.encode() + b"\n")
            answered = True
        if process.poll() is not None and not ready:
            break
    code = process.wait(30)
    os.close(primary)
    return code, seen.decode(errors="replace")


def test_approve_across_at_a_terminal_shows_every_cluster_then_asks_once(
    fleet: Fleet, fleet_team: FleetTeam
) -> None:
    """An approver approves what they have seen: what it gives in each cluster is printed,
    one question is asked, and "no" leaves every cluster unapproved."""
    leads = f"{fleet_team.namespace}-leads"
    for team in fleet_team:
        readers_of_requests(team.cluster, team)
        team.policy(
            roles=("admin",), mode="Approvers", suffix="-approved",
            approval={"approvers": {"groups": [leads]}},
        )  # fmt: skip
        team.ask("careful", role="admin", duration="10m")
    for member in ("east", "west"):
        wait_phase(fleet_team, member, "careful", "Pending")
    args = ["approve", "careful", "-n", fleet_team.namespace, "--all-contexts"]

    code, said = at_a_terminal(fleet, fleet_team, args, "n", user="bob", groups=[leads])

    assert code == 130, said
    assert said.count("[y/N]") == 1, said
    assert "east: careful is Pending: ClusterRole admin" in said, said
    assert "west: careful is Pending: ClusterRole admin" in said, said
    for member in ("east", "west"):
        assert phase(fleet_team, member, "careful") == "Pending"

    code, said = at_a_terminal(fleet, fleet_team, args, "y", user="bob", groups=[leads])

    assert code == 0, said
    for member in ("east", "west"):
        wait_phase(fleet_team, member, "careful", "Active")
