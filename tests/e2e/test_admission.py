"""Identity from the API server, and a spec nobody can change: enforced at admission."""

from __future__ import annotations

import json

from tests.e2e.conftest import Team


def test_spoofed_requester_is_overwritten(team: Team) -> None:
    team.policy()
    result = team.ask("spoof", requester={"username": "bob", "groups": ["system:masters"]})
    assert "spec.requester is set by Lapse" in result.stderr
    body = team.wait_phase("spoof", "Active")
    assert body["spec"]["requester"]["username"] == "alice"
    assert "system:masters" not in body["spec"]["requester"]["groups"]
    assert body["status"]["requester"]["username"] == "alice"
    assert body["status"]["subject"]["name"] == "alice"
    assert team.can_i("create", "deployments")
    assert not team.can_i("create", "deployments", user="bob")


def test_naming_another_subject_is_refused(team: Team) -> None:
    team.policy()
    result = team.ask("for-bob", subject={"kind": "User", "name": "bob"}, check=False)
    assert result.returncode != 0
    assert "spec.subject may name only yourself" in result.stderr
    missing = team.cluster.kubectl(
        "get", "accessrequest", "for-bob", "-n", team.namespace, check=False
    )
    assert missing.returncode != 0


def test_naming_yourself_as_subject_is_fine(team: Team) -> None:
    team.policy()
    team.ask("for-me", subject={"kind": "User", "name": "alice"})
    assert team.wait_phase("for-me", "Active")["status"]["subject"]["name"] == "alice"


def test_spec_is_immutable_even_for_admin(team: Team) -> None:
    team.policy(maximum="4h")
    team.ask("fixed", duration="1m")
    team.wait_phase("fixed", "Active")
    longer = json.dumps({"spec": {"duration": "4h"}})
    result = team.cluster.kubectl(
        "patch",
        "accessrequest",
        "fixed",
        "-n",
        team.namespace,
        "--type=merge",
        "-p",
        longer,
        check=False,
    )
    assert result.returncode != 0
    assert "immutable" in result.stderr
    stolen = json.dumps({"spec": {"requester": {"username": "bob"}}})
    result = team.cluster.kubectl(
        "patch",
        "accessrequest",
        "fixed",
        "-n",
        team.namespace,
        "--type=merge",
        "-p",
        stolen,
        check=False,
    )
    assert result.returncode != 0
    assert "immutable" in result.stderr
    assert team.request("fixed")["spec"]["duration"] == "1m"


def test_requesters_cannot_write_status(team: Team) -> None:
    team.policy(mode="Approvers")
    team.ask("sneaky")
    team.wait_phase("sneaky", "Pending")
    patch = json.dumps({"status": {"phase": "Active"}})
    result = team.kubectl(
        "patch",
        "accessrequest",
        "sneaky",
        "-n",
        team.namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
        check=False,
    )
    assert result.returncode != 0
    assert "forbidden" in result.stderr.lower()
    assert team.request("sneaky")["status"]["phase"] == "Pending"


def test_malformed_duration_refused_at_admission(team: Team) -> None:
    team.policy()
    for bad in ("5x", "0s", "1d"):
        result = team.ask(f"bad-{bad.lower()}", duration=bad, check=False)
        assert result.returncode != 0, bad
        assert "duration" in result.stderr, result.stderr
