"""After a grant ends, the API server itself confirms the access is gone (SubjectAccessReview),
and access the subject holds independently of Lapse is reported, not called a failure."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import Team, wait_for


def verified(team: Team, name: str) -> dict[str, Any]:
    def condition() -> dict[str, Any] | None:
        conditions = team.request(name)["status"].get("conditions") or []
        return next((c for c in conditions if c["type"] == "Verified"), None)

    return wait_for(condition, timeout=20, interval=0.2, what=f"{name} to be Verified")


def test_the_api_server_confirms_an_expired_grant_is_gone(team: Team) -> None:
    team.policy()
    team.ask("checked", duration="5s")
    team.wait_phase("checked", "Active")
    team.wait_phase("checked", "Expired", timeout=30)
    condition = verified(team, "checked")
    assert condition["status"] == "True" and condition["reason"] == "AccessGone", condition
    assert "The API server confirms the access is gone" in condition["message"]
    # One review proves it: a binding gives all of its role or nothing.
    assert "(1 review(s))" in condition["message"], condition["message"]
    assert not team.can_i("create", "deployments")


def test_access_held_without_lapse_is_reported_not_failed(team: Team) -> None:
    team.policy()
    # alice also holds edit here through a binding of her own, outside Lapse.
    team.cluster.kubectl(
        "create", "rolebinding", "alice-own-edit", "--clusterrole=edit", "--user=alice",
        "-n", team.namespace,
    )  # fmt: skip
    team.ask("doubled", duration="5s")
    team.wait_phase("doubled", "Active")
    team.wait_phase("doubled", "Expired", timeout=30)
    condition = verified(team, "doubled")
    assert condition["status"] == "True" and condition["reason"] == "HeldElsewhere", condition
    assert "alice-own-edit" in condition["message"], condition["message"]
    event = team.wait_event("doubled", "AccessHeldElsewhere")
    assert event["type"] == "Normal"
