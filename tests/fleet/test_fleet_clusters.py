"""The fleet fixture itself: two clusters, each judging its own requests with its own operator,
and one of them taken away and brought back while the other keeps granting."""

from __future__ import annotations

import subprocess

from demo.fleet import Fleet
from demo.harness import kubectl_binary, wait_for
from tests.fleet.conftest import FleetTeam

ENDS_UNGRANTED = ("Denied", "Invalid")


def merged_kubectl(fleet: Fleet, context: str, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl with the fleet's merged kubeconfig, on one of its contexts."""
    return subprocess.run(
        [
            *(kubectl_binary(), "--kubeconfig", str(fleet.kubeconfig), "--context", context),
            *("--request-timeout=5s", *args),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def granted_in_trail(fleet: Fleet, member: str, name: str, namespace: str) -> bool:
    operator = fleet[member].operator
    assert operator is not None
    return any(
        line.get("action") == "granted"
        and line.get("name") == name
        and line.get("namespace") == namespace
        for line in operator.audit_lines()
    )


def test_the_merged_kubeconfig_reaches_each_member_by_its_context(fleet: Fleet) -> None:
    assert fleet.names == ["east", "west"]
    for name in fleet.names:
        result = merged_kubectl(fleet, name, "get", "crd", "accessrequests.lapse.dev", "-o=name")
        assert result.returncode == 0, result.stderr
        assert merged_kubectl(fleet, name, "config", "current-context").returncode == 0
    contexts = merged_kubectl(fleet, "east", "config", "get-contexts", "-o=name").stdout.split()
    assert contexts == ["east", "west"]


def test_a_request_in_each_cluster_is_granted_by_that_clusters_operator(
    fleet: Fleet, fleet_team: FleetTeam
) -> None:
    for team in fleet_team:
        team.ask("on-call", duration="10m")
    for name in fleet.names:
        body = fleet_team[name].wait_phase("on-call", "Active", timeout=20)
        assert body["status"]["requester"]["username"] == "alice"
        assert fleet_team[name].can_i("create", "deployments")
        fleet[name].operator.wait_for_audit(  # type: ignore[union-attr]
            lambda r: r.get("action") == "granted" and r.get("name") == "on-call"
        )


def test_a_policy_in_one_cluster_grants_there_only(fleet: Fleet, fleet_team: FleetTeam) -> None:
    """The team's view/edit policy is on both; an admin policy only on east."""
    fleet_team["east"].policy(roles=("admin",), suffix="-admin")
    for team in fleet_team:
        team.ask("admin-please", role="admin", duration="10m")
    fleet_team["east"].wait_phase("admin-please", "Active", timeout=20)
    west = fleet_team["west"]
    ended = wait_for(
        lambda: west.request("admin-please").get("status", {}).get("phase") in ENDS_UNGRANTED,
        20,
        0.2,
        "west to turn down the request",
    )
    assert ended
    assert granted_in_trail(fleet, "east", "admin-please", fleet_team.namespace)
    assert not granted_in_trail(fleet, "west", "admin-please", fleet_team.namespace)
    assert fleet_team["east"].can_i("delete", "rolebindings")
    assert not west.can_i("delete", "rolebindings")


def test_one_member_goes_away_and_comes_back_with_its_data(
    fleet: Fleet, fleet_team: FleetTeam
) -> None:
    west = fleet_team["west"]
    west.ask("before", duration="10m")
    west.wait_phase("before", "Active", timeout=20)

    fleet.stop("west")
    gone = merged_kubectl(fleet, "west", "get", "ns")
    assert gone.returncode != 0
    # East does not notice: it still answers and its operator still grants.
    assert merged_kubectl(fleet, "east", "get", "ns").returncode == 0
    fleet_team["east"].ask("while-west-is-away", duration="10m")
    fleet_team["east"].wait_phase("while-west-is-away", "Active", timeout=20)

    fleet.start("west")
    back = merged_kubectl(fleet, "west", "get", "ns", fleet_team.namespace, "-o=name")
    assert back.returncode == 0, back.stderr
    # Its data came back with it, and its operator grants again.
    assert west.request("before")["status"]["phase"] == "Active"
    west.ask("after", duration="10m")
    west.wait_phase("after", "Active", timeout=60)
