"""With the operator dead, Lapse's webhooks fail in the documented directions.

The foothold webhook fails open (failurePolicy Ignore): a Lapse outage must never stop a
cluster from creating pods, Secrets or workloads. The AccessRequest webhooks fail closed: no
request is admitted without the identity only the webhook can stamp.
"""

from __future__ import annotations

import json

from tests.e2e.conftest import Team
from tests.e2e.harness import Operator

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "still-works"},
    "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
}


def test_a_killed_operator_blocks_requests_but_never_pods(team: Team, operator: Operator) -> None:
    team.policy()
    team.ask("before", duration="1h")
    team.wait_phase("before", "Active")
    # kill -9: no clean-up, so the webhook configurations still point at the dead server.
    operator.kill()
    try:
        _while_down(team)
    finally:
        operator.start()
    team.ask("after", duration="1h")
    team.wait_phase("after", "Active", timeout=30)


def _while_down(team: Team) -> None:
    made = team.cluster.kubectl(
        "create", "-n", team.namespace, "-f", "-", input=json.dumps(POD), check=False
    )
    assert made.returncode == 0, made.stderr
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "plain"}}
    by_grantee = team.kubectl(
        "create", "-n", team.namespace, "-f", "-", input=json.dumps(secret), check=False
    )
    assert by_grantee.returncode == 0, by_grantee.stderr
    refused = team.ask("while-down", duration="1h", check=False)
    assert refused.returncode != 0
    assert "webhook" in refused.stderr, refused.stderr
