"""Retention: ended requests leave the cluster a set time after they end, and no sooner.

The session's operator keeps ended owners RETENTION seconds (tests/e2e/conftest.py). What a
grant leaves behind once it is deleted is nothing: no binding, no request, none of its
Events (every other Event in the namespace stays).
"""

from __future__ import annotations

import json
import time

from tests.e2e.conftest import RETENTION, Operator, Team, parse_time, wait_for


def gone(team: Team, name: str) -> bool:
    found = team.cluster.kubectl(
        "get", "accessrequest", name, "-n", team.namespace, "-o", "json", check=False
    )
    return found.returncode != 0 and "NotFound" in found.stderr


def test_an_ended_request_is_deleted_after_its_retention_and_not_before(
    team: Team, operator: Operator
) -> None:
    team.policy(default="3s", maximum="1h")
    team.ask("short", duration="3s")
    uid = team.wait_phase("short", "Active", timeout=20)["metadata"]["uid"]
    bystander = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "bystander", "namespace": team.namespace},
        "involvedObject": {"kind": "ConfigMap", "name": "other", "namespace": team.namespace,
                           "uid": "0b7a4a4e-0000-4000-8000-000000000001"},
        "reason": "Other",
        "message": "An Event about something else.",
        "type": "Normal",
    }  # fmt: skip
    team.cluster.kubectl("apply", "-f", "-", input=json.dumps(bystander))
    ended = team.wait_phase("short", "Expired", timeout=30)
    ended_at = parse_time(ended["status"]["endedAt"])
    assert team.binding_count() == 0
    # Kept while its retention runs: people look back at a grant in the cluster.
    time.sleep(RETENTION / 2)
    assert not gone(team, "short"), "deleted before its retention was over"
    wait_for(lambda: gone(team, "short"), timeout=RETENTION + 30, what="the request deleted")
    deleted_after = time.time() - ended_at.timestamp()
    assert deleted_after >= RETENTION, f"deleted {deleted_after:.1f}s after it ended"
    assert operator.metrics().get('lapse_retention_deleted_total{kind="AccessRequest"}', 0) >= 1
    events = json.loads(
        team.cluster.kubectl("get", "events", "-n", team.namespace, "-o", "json").stdout
    )["items"]
    about = [e for e in events if (e.get("involvedObject") or {}).get("uid") == uid]
    assert about == [], f"Events about the deleted request stayed: {about}"
    assert "bystander" in {e["metadata"]["name"] for e in events}


def test_a_live_or_pending_request_is_never_deleted_by_retention(
    team: Team, operator: Operator
) -> None:
    """Only ended owners go: an active grant and one waiting for approval outlive the
    retention, however old they are."""
    team.policy(roles=("view",), default="1h", maximum="4h")
    team.policy(
        roles=("edit",),
        mode="Approvers",
        suffix="-approvers",
        approval={"approvers": {"users": ["nobody-here"]}, "timeout": "1h"},
    )
    team.ask("long", role="view", duration="1h")
    team.wait_phase("long", "Active", timeout=20)
    team.ask("waiting", role="edit", duration="1h")
    team.wait_phase("waiting", "Pending", timeout=20)
    time.sleep(RETENTION + 5)
    listed = json.loads(
        team.cluster.kubectl("get", "accessrequests", "-n", team.namespace, "-o", "json").stdout
    )["items"]
    phases = {item["metadata"]["name"]: item["status"]["phase"] for item in listed}
    assert phases == {"long": "Active", "waiting": "Pending"}
