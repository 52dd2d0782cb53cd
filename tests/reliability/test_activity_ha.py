"""Two replicas, one activity record: only the leader takes audit batches.

A record is written whole, so a standby folding events too would overwrite the leader's. The
standby answers 503 (the API server sends the batch again, and a Service spreads the retry
to the leader); once it leads, it takes them.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes.client
from kubernetes.client.rest import ApiException

from tests.cluster import Cluster
from tests.e2e.conftest import Team
from tests.e2e.harness import OPERATOR_NAMESPACE, Operator, free_port, wait_for
from tests.reliability.conftest import Operators

TOKEN = "the-api-servers-token"


def holder(cluster: Cluster) -> str | None:
    api = kubernetes.client.CoordinationV1Api(cluster.api())
    try:
        lease: Any = api.read_namespaced_lease("lapse-leader", OPERATOR_NAMESPACE)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return lease.spec.holder_identity  # type: ignore[no-any-return]


def post(operator: Operator, port: int) -> int:
    """POST an (empty) EventList to the replica's /audit; the HTTP status it answers."""
    body = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": []}
    request = urllib.request.Request(
        f"https://127.0.0.1:{port}/audit",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        method="POST",
    )
    context = ssl.create_default_context(cafile=str(operator.workdir / "certs" / "ca.crt"))
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_only_the_leader_takes_audit_batches(
    team: Team, operators: Operators, tmp_path: Path
) -> None:
    token = tmp_path / "audit-token"
    token.write_text(TOKEN + "\n")
    settings = {
        "LAPSE_LEADER_ELECTION": "on",
        "LAPSE_LEASE_DURATION": "4",
        "LAPSE_LEASE_RENEW": "1",
        "LAPSE_AUDIT_TOKEN_FILE": str(token),
    }
    ports = {"replica-a": free_port(), "replica-b": free_port()}
    first, second = (
        operators.new(name, LAPSE_IDENTITY=name, LAPSE_WEBHOOK_PORT=str(port), **settings)
        for name, port in ports.items()
    )
    first.start()
    wait_for(lambda: holder(team.cluster) == "replica-a", 15, 0.2, "replica-a to lead")
    second.start()
    assert post(first, ports["replica-a"]) == 200
    assert post(second, ports["replica-b"]) == 503

    first.kill()
    wait_for(lambda: holder(team.cluster) == "replica-b", 30, 0.1, "replica-b to take over")
    wait_for(lambda: post(second, ports["replica-b"]) == 200, 20, 0.3, "the new leader's sink")
