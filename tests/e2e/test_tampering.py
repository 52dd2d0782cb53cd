"""Touch only your own, and let nobody widen or lengthen what Lapse granted."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from tests.e2e.conftest import (
    Operator,
    Team,
    binding_name,
    expires_at,
    parse_time,
    wait_for,
)

RBAC = "rbac.authorization.k8s.io"


def test_widened_subjects_are_restored(team: Team, operator: Operator) -> None:
    team.policy()
    team.ask("widened", duration="1h")
    name = binding_name(team.wait_phase("widened", "Active"))
    subjects = [
        {"kind": "User", "name": "alice", "apiGroup": RBAC},
        {"kind": "User", "name": "mallory", "apiGroup": RBAC},
    ]
    team.cluster.kubectl(
        "patch",
        "rolebinding",
        name,
        "-n",
        team.namespace,
        "--type=merge",
        "-p",
        json.dumps({"subjects": subjects}),
    )

    def restored() -> bool:
        binding = team.binding(name)
        return binding is not None and [s["name"] for s in binding["subjects"]] == ["alice"]

    wait_for(restored, timeout=5, what="subjects restored")
    event = team.wait_event("widened", "BindingTampered")
    assert event["type"] == "Warning"
    assert not team.can_i("create", "deployments", user="mallory")
    assert team.can_i("create", "deployments")
    assert operator.metrics().get('lapse_tamper_total{action="restored"}', 0) >= 1


def test_stripped_labels_are_put_back(team: Team, operator: Operator) -> None:
    """Lapse's labels taken off its binding (hiding it from every listing by them, the
    sweep's and `kubectl get -l`'s) are put back at once, and the binding still ends on time."""
    team.policy()
    team.ask("hidden", duration="1h")
    name = binding_name(team.wait_phase("hidden", "Active"))
    before = team.binding(name)
    assert before is not None
    labels = before["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "lapse"
    team.cluster.kubectl(
        "label", "rolebinding", name, "-n", team.namespace, *[f"{key}-" for key in labels]
    )

    def restored() -> bool:
        binding = team.binding(name)
        return binding is not None and binding["metadata"].get("labels") == labels

    wait_for(restored, timeout=10, what="labels put back")
    assert team.wait_event("hidden", "BindingTampered")["type"] == "Warning"
    assert operator.metrics().get('lapse_tamper_total{action="restored"}', 0) >= 1
    assert team.request("hidden")["status"]["phase"] == "Active"


def test_extended_expiry_annotation_never_extends_access(team: Team) -> None:
    team.policy()
    team.ask("stretched", duration="5s")
    body = team.wait_phase("stretched", "Active")
    name, ends = binding_name(body), expires_at(body)
    later = (datetime.now(UTC) + timedelta(hours=8)).isoformat().replace("+00:00", "Z")
    team.cluster.kubectl(
        "annotate",
        "--overwrite",
        "rolebinding",
        name,
        "-n",
        team.namespace,
        f"lapse.dev/expires-at={later}",
    )

    def mirrored() -> bool:
        binding = team.binding(name)
        if binding is None:
            return True
        return parse_time(binding["metadata"]["annotations"]["lapse.dev/expires-at"]) == ends

    wait_for(mirrored, timeout=5, what="expiry annotation restored")
    team.wait_event("stretched", "BindingTampered")
    wait_for(lambda: team.binding(name) is None, timeout=15, interval=0.05, what="the lapse")
    lag = (datetime.now(UTC) - ends).total_seconds()
    print(f"\nbinding with a tampered annotation gone {lag:.3f}s after expiresAt")
    assert lag < 2
    assert (
        team.wait_phase("stretched", "Expired")["status"]["expiresAt"]
        == body["status"]["expiresAt"]
    )


def test_binding_deleted_by_admin_revokes_the_request(team: Team, operator: Operator) -> None:
    team.policy()
    team.ask("yanked", duration="1h")
    name = binding_name(team.wait_phase("yanked", "Active"))
    team.cluster.kubectl("delete", "rolebinding", name, "-n", team.namespace)
    body = team.wait_phase("yanked", "Revoked")
    assert body["status"]["reason"] == "BindingDeleted"
    assert team.wait_event("yanked", "BindingDeleted")["type"] == "Warning"
    operator.wait_for_audit(
        lambda a: (
            a["action"] == "revoked" and a["name"] == "yanked" and a["reason"] == "BindingDeleted"
        )
    )
    assert team.binding(name) is None
    assert not team.can_i("create", "deployments")


def test_lookalike_binding_is_left_alone(team: Team) -> None:
    team.policy()
    team.ask("real", duration="3s")
    body = team.wait_phase("real", "Active")
    lookalike = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": "lapse-real-lookalike",
            "namespace": team.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "lapse",
                "lapse.dev/request": "real",
                "lapse.dev/kind": "AccessRequest",
            },
            "annotations": {
                "lapse.dev/expires-at": "2000-01-01T00:00:00Z",
                "lapse.dev/request-uid": body["metadata"]["uid"],
            },
        },
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "carol", "apiGroup": RBAC}],
    }
    team.cluster.kubectl("apply", "-f", "-", input=json.dumps(lookalike))
    before = team.binding("lapse-real-lookalike")
    assert before is not None
    team.wait_event("real", "LookAlikeBinding")
    team.wait_phase("real", "Expired", timeout=10)
    # Two sweeps later it is still there, unchanged.
    time.sleep(5)
    after = team.binding("lapse-real-lookalike")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["subjects"] == before["subjects"]
