"""Deleting a request revokes at once, with its Event and audit line written first."""

from __future__ import annotations

import json
import time

from tests.e2e.conftest import Operator, Team, binding_name, wait_for


def test_deleting_the_request_revokes(team: Team, operator: Operator) -> None:
    team.policy()
    team.ask("done-early", duration="1h")
    body = team.wait_phase("done-early", "Active")
    name = binding_name(body)
    assert team.can_i("create", "deployments")

    started = time.monotonic()
    team.kubectl("delete", "accessrequest", "done-early", "-n", team.namespace, "--wait=true")
    wait_for(lambda: team.binding(name) is None, timeout=5, interval=0.05, what="revocation")
    print(f"\nbinding gone {time.monotonic() - started:.3f}s after kubectl delete started")
    assert not team.can_i("create", "deployments")

    event = team.wait_event("done-early", "AccessRequestDeleted")
    assert "deleted" in event["message"]
    line = operator.wait_for_audit(
        lambda a: (
            a["action"] == "revoked"
            and a["name"] == "done-early"
            and a["namespace"] == team.namespace
        )
    )
    assert line["reason"] == "AccessRequestDeleted"
    gone = team.cluster.kubectl(
        "get", "accessrequest", "done-early", "-n", team.namespace, check=False
    )
    assert gone.returncode != 0


def test_ended_request_never_comes_back(team: Team, operator: Operator) -> None:
    team.policy()
    team.ask("once", duration="2s")
    body = team.wait_phase("once", "Active")
    name = binding_name(body)
    team.wait_phase("once", "Expired", timeout=10)
    # Someone re-creates the binding exactly as it was, ownerReference and all.
    assert team.binding(name) is None
    manifest = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": name,
            "namespace": team.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "lapse",
                "lapse.dev/request": "once",
                "lapse.dev/kind": "AccessRequest",
            },
            "annotations": {"lapse.dev/request-uid": body["metadata"]["uid"]},
            "ownerReferences": [
                {
                    "apiVersion": "lapse.dev/v1alpha1",
                    "kind": "AccessRequest",
                    "name": "once",
                    "uid": body["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    team.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    wait_for(lambda: team.binding(name) is None, timeout=10, interval=0.1, what="removal")
    assert team.request("once")["status"]["phase"] == "Expired"
    assert not team.can_i("create", "deployments")
