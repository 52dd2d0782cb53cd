"""Fleet fixtures: two clusters at once, `east` and `west`, each with Lapse's CRDs, the sample
requester role and its own operator (a process, as its own ServiceAccount), and one kubeconfig
with a context per cluster for `kubectl lapse ... --all-contexts`.

The backend is chosen with `LAPSE_TEST_FLEET`:

- `local` (default, `make test`): two local API servers, each behind a TCP gate that
  `fleet.stop(name)` closes and `fleet.start(name)` opens again (the local API keeps no data
  across a restart: demo/fleet.py).
- `realk8s` (`make test-fleet-real`): two real control planes without a node,
  `$REALK8S/up.sh --fresh --no-node`, state dirs under `$LAPSE_FLEET_STATE` (default
  /tmp/lapse-fleet) and ports 26xxx and 27xxx; `fleet.stop(name)` kills the member's
  kube-apiserver, `fleet.start(name)` runs it again on its etcd data. Both are stopped at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from demo.fleet import BACKENDS, Fleet, Member, start_fleet
from demo.harness import requesters_binding
from tests.conftest import _namespace_name
from tests.e2e.conftest import Team

__all__ = ["Fleet", "FleetTeam", "Member"]

FLEET_VARIABLE = "LAPSE_TEST_FLEET"
DEFAULT_STATE_ROOT = Path("/tmp/lapse-fleet")


def fleet_backend() -> str:
    chosen = os.environ.get(FLEET_VARIABLE) or "local"
    if chosen not in BACKENDS:
        raise pytest.UsageError(f"unknown {FLEET_VARIABLE} {chosen!r}; one of {BACKENDS}")
    return chosen


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    backend = fleet_backend()
    kit = None
    if backend == "realk8s":
        if not os.environ.get("REALK8S"):
            raise pytest.UsageError(f"{FLEET_VARIABLE}=realk8s needs REALK8S=<the realk8s kit>")
        kit = Path(os.environ["REALK8S"])
    state_root = Path(os.environ.get("LAPSE_FLEET_STATE") or DEFAULT_STATE_ROOT)
    workdir = tmp_path_factory.mktemp("fleet")
    members = start_fleet(workdir, backend, kit=kit, state_root=state_root)
    try:
        yield members
    finally:
        members.shutdown()
        for member in members:
            if member.operator is not None:
                print(f"\n{member.name} operator log: {member.operator.log_path}")


@dataclass
class FleetTeam:
    """One test's team on every member: the same namespace name, requester group and user."""

    namespace: str
    group: str
    teams: dict[str, Team]

    def __getitem__(self, name: str) -> Team:
        return self.teams[name]

    def __iter__(self) -> Iterator[Team]:
        return iter(self.teams.values())


@pytest.fixture
def fleet_team(fleet: Fleet, request: pytest.FixtureRequest) -> Iterator[FleetTeam]:
    """A namespace `t-…` of the same name on every member, the team's requester group bound to
    `lapse-requester` there, and an Auto AccessPolicy (view, edit) for it on every member.
    Afterwards members a test stopped are started again and the team's objects removed."""
    namespace = _namespace_name(request.node.name)
    group = f"{namespace}-devs"
    teams: dict[str, Team] = {}
    for member in fleet:
        member.cluster.kubectl("create", "namespace", namespace)
        binding = requesters_binding(namespace, group)
        member.cluster.kubectl("apply", "-f", "-", input=json.dumps(binding))
        teams[member.name] = Team(member.cluster, namespace, group=group)
        teams[member.name].policy()
    try:
        yield FleetTeam(namespace, group, teams)
    finally:
        fleet.all_up()
        for team in teams.values():
            for policy in team.policies:
                team.cluster.kubectl("delete", "accesspolicy", policy, "--ignore-not-found")
            team.cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
