"""Approvals through kubectl: four eyes, denial, timeout — and every way to fake an approver.

Approvers act with `kubectl annotate`, holding only the sample `lapse-approver` ClusterRole;
the attacks are what a user (or an admin bypassing the webhook) could write into the object.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import Cluster
from tests.e2e.conftest import Operator, Team


def approvers_policy(team: Team, leads: str, required: int = 1, timeout: str = "1h") -> str:
    approval = {"approvers": {"groups": [leads]}, "required": required, "timeout": timeout}
    return team.policy(
        roles=("edit",), maximum="1h", mode="Approvers", suffix="-approvers", approval=approval
    )


def annotate(
    team: Team, name: str, key: str, value: str, user: str, groups: tuple[str, ...]
) -> Any:
    return team.cluster.kubectl(
        "annotate",
        "accessrequest",
        name,
        "-n",
        team.namespace,
        "--overwrite",
        f"{key}={value}",
        as_user=user,
        groups=groups,
        check=False,
    )


def decisions(body: dict[str, Any]) -> list[dict[str, Any]]:
    text = body["metadata"].get("annotations", {}).get("lapse.dev/decisions", "[]")
    return list(json.loads(text))


def test_two_distinct_approvers_grant_and_the_same_one_counts_once(
    team: Team, leads: str, operator: Operator
) -> None:
    approvers_policy(team, leads, required=2)
    team.ask("four-eyes", duration="1m")
    team.wait_phase("four-eyes", "Pending")
    assert not team.can_i("create", "deployments")

    assert annotate(team, "four-eyes", "lapse.dev/approve", "ok", "bob", (leads,)).returncode == 0
    again = annotate(team, "four-eyes", "lapse.dev/approve", "still ok", "bob", (leads,))
    assert again.returncode == 0
    team.wait_event("four-eyes", "ApprovalRecorded")
    body = team.request("four-eyes")
    assert body["status"]["phase"] == "Pending"
    assert [a["user"]["username"] for a in body["status"]["approvals"]] == ["bob"]
    assert "lapse.dev/approve" not in body["metadata"].get("annotations", {})
    assert [d["username"] for d in decisions(body)] == ["bob", "bob"]

    assert annotate(team, "four-eyes", "lapse.dev/approve", "", "carol", (leads,)).returncode == 0
    body = team.wait_phase("four-eyes", "Active")
    assert [a["user"]["username"] for a in body["status"]["approvals"]] == ["bob", "carol"]
    phases = [h["phase"] for h in body["status"]["history"]]
    assert phases == ["Pending", "Approved", "Active"]
    assert team.can_i("create", "deployments")
    # The window starts at the grant, not at the request.
    assert body["status"]["grantedAt"] >= body["status"]["approvals"][-1]["at"]
    line = operator.wait_for_audit(
        lambda r: r.get("name") == "four-eyes" and r.get("action") == "granted"
    )
    assert line["approvedBy"] == ["bob", "carol"]
    assert operator.metrics().get('lapse_decisions_total{decision="approve"}', 0) >= 3


def test_the_requester_cannot_approve_their_own_request(team: Team, leads: str) -> None:
    approvers_policy(team, leads)
    team.ask("self-serve", duration="1m")
    team.wait_phase("self-serve", "Pending")
    # alice is even a lead here: four eyes still means someone else.
    result = annotate(team, "self-serve", "lapse.dev/approve", "me", team.user, (team.group, leads))
    assert result.returncode != 0
    assert "alice may not approve their own request." in result.stderr
    assert team.request("self-serve")["status"]["phase"] == "Pending"


def test_a_non_approver_is_refused_with_a_clear_message(team: Team, leads: str) -> None:
    policy = approvers_policy(team, leads)
    team.ask("outsider", duration="1m")
    team.wait_phase("outsider", "Pending")
    # mallory may patch (she holds lapse-approver through another group) but approves nothing.
    team.cluster.kubectl(
        "create",
        "rolebinding",
        "mallory-patch",
        "-n",
        team.namespace,
        "--clusterrole=lapse-approver",
        "--user=mallory",
    )
    result = annotate(team, "outsider", "lapse.dev/approve", "lgtm", "mallory", ("others",))
    assert result.returncode != 0
    assert f"mallory is not an approver of AccessPolicy {policy}." in result.stderr
    result = annotate(team, "outsider", "lapse.dev/deny", "no", "mallory", ("others",))
    assert f"mallory is not an approver of AccessPolicy {policy}." in result.stderr
    assert team.request("outsider")["status"]["phase"] == "Pending"


def test_writing_the_decisions_annotation_is_refused_even_for_admin(team: Team, leads: str) -> None:
    approvers_policy(team, leads)
    team.ask("handmade", duration="1m")
    team.wait_phase("handmade", "Pending")
    forged = json.dumps([{"action": "approve", "username": "bob", "groups": [leads], "at": "x"}])
    for user, groups in (("bob", (leads,)), (None, ())):
        result = team.cluster.kubectl(
            "annotate",
            "accessrequest",
            "handmade",
            "-n",
            team.namespace,
            f"lapse.dev/decisions={forged}",
            as_user=user,
            groups=groups,
            check=False,
        )
        assert result.returncode != 0
        assert "lapse.dev/decisions is written by Lapse alone" in result.stderr
    assert team.request("handmade")["status"]["phase"] == "Pending"


UNSTAMPED = [f"unstamped-{i}" for i in range(4)]


@pytest.fixture
def webhooks_removed(cluster: Cluster, operator: Operator) -> Iterator[Any]:
    """A context in which Lapse's webhook configurations are gone, as an admin could do."""
    saved: dict[str, dict[str, Any]] = {}

    class Bypass:
        def __enter__(self) -> None:
            for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
                body = json.loads(cluster.kubectl("get", kind, "lapse.dev", "-o", "json").stdout)
                for field in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
                    body["metadata"].pop(field, None)
                saved[kind] = body
                cluster.kubectl("delete", kind, "lapse.dev")

        def __exit__(self, *_: object) -> None:
            for body in saved.values():
                cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
            saved.clear()
            operator.wait_ready()

    bypass = Bypass()
    try:
        yield bypass
    finally:
        bypass.__exit__()


def test_forged_copied_and_raw_approvals_are_never_counted(
    team: Team, leads: str, operator: Operator, webhooks_removed: Any
) -> None:
    approvers_policy(team, leads, required=1)
    team.ask("genuine", duration="1m")
    team.ask("target", duration="1m")
    team.wait_phase("target", "Pending")
    team.wait_phase("genuine", "Pending")
    # A real, signed approval on another request: the thing to copy.
    annotate(team, "genuine", "lapse.dev/approve", "ok", "bob", (leads,))
    copied = decisions(team.wait_phase("genuine", "Active"))[0]

    wrong_key = b"k" * 32
    body = team.request("target")
    payload = {
        "action": "approve",
        "username": "bob",
        "groups": [leads],
        "at": copied["at"],
        "comment": "",
        "kind": "AccessRequest",
        "namespace": team.namespace,
        "name": "target",
        "uid": body["metadata"]["uid"],
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    signature = base64.urlsafe_b64encode(
        hmac.new(wrong_key, canonical, hashlib.sha256).digest()
    ).decode()
    wrong = {k: payload[k] for k in ("action", "username", "groups", "at", "comment")}
    wrong["signature"] = signature.rstrip("=")
    unsigned = {**wrong, "username": "carol", "signature": ""}

    with webhooks_removed:
        forged = json.dumps([copied, wrong, unsigned])
        team.cluster.kubectl(
            "annotate",
            "accessrequest",
            "target",
            "-n",
            team.namespace,
            f"lapse.dev/decisions={forged}",
            "lapse.dev/approve=raw",
        )
        # And requests created around the webhook, their requester written by hand. They come
        # without the finalizer the webhook adds: with two replicas (in pods), both add it at
        # once and the one that comes second must still see each through (lapse.unadmitted).
        sneaky = []
        for name in UNSTAMPED:
            manifest = team.manifest(name, duration="1m")
            manifest["spec"]["requester"] = {"username": "alice", "groups": [team.group]}
            sneaky.append(manifest)
        listing = {"apiVersion": "v1", "kind": "List", "items": sneaky}
        team.cluster.kubectl("apply", "-f", "-", input=json.dumps(listing))

    forged_event = team.wait_event("target", "ForgedDecision")
    assert "3 entries" in forged_event["message"]
    team.wait_event("target", "UnverifiedAction")
    operator.wait_for_audit(
        lambda r: r.get("name") == "target" and r.get("action") == "forged-decision"
    )
    for name in UNSTAMPED:
        unstamped = team.wait_phase(name, "Invalid", timeout=30)
        assert unstamped["status"]["reason"] == "UnverifiedRequester"
    body = team.request("target")
    assert body["status"]["phase"] == "Pending"
    assert body["status"].get("approvals", []) == []
    assert all(team.binding(name) is None for name in UNSTAMPED)


def test_deny_is_final_even_if_approved_afterwards(
    team: Team, leads: str, operator: Operator
) -> None:
    approvers_policy(team, leads, required=1)
    team.ask("no-thanks", duration="1m")
    team.wait_phase("no-thanks", "Pending")
    result = annotate(team, "no-thanks", "lapse.dev/deny", "Use the runbook", "bob", (leads,))
    assert result.returncode == 0
    body = team.wait_phase("no-thanks", "Denied")
    assert body["status"]["reason"] == "DeniedByApprover"
    assert "bob" in body["status"]["message"] and "Use the runbook" in body["status"]["message"]
    assert body["status"]["approvals"][-1]["decision"] == "Deny"
    event = team.wait_event("no-thanks", "DeniedByApprover")
    assert event["type"] == "Warning"
    line = operator.wait_for_audit(
        lambda r: r.get("name") == "no-thanks" and r.get("action") == "denied"
    )
    assert line["decidedBy"] == "bob"
    late = annotate(team, "no-thanks", "lapse.dev/approve", "changed my mind", "carol", (leads,))
    assert late.returncode != 0
    assert "is Denied" in late.stderr
    assert team.request("no-thanks")["status"]["phase"] == "Denied"
    assert not team.can_i("create", "deployments")


def test_a_pending_request_times_out(team: Team, leads: str, operator: Operator) -> None:
    approvers_policy(team, leads, timeout="3s")
    team.ask("too-slow", duration="1m")
    team.wait_phase("too-slow", "Pending")
    body = team.wait_phase("too-slow", "Expired", timeout=15)
    assert body["status"]["reason"] == "ApprovalTimeout"
    assert body["status"].get("grantedAt") is None
    team.wait_event("too-slow", "ApprovalTimeout")
    operator.wait_for_audit(
        lambda r: r.get("name") == "too-slow" and r.get("reason") == "ApprovalTimeout"
    )
    late = annotate(team, "too-slow", "lapse.dev/approve", "sorry", "bob", (leads,))
    assert late.returncode != 0
    assert not team.can_i("create", "deployments")
