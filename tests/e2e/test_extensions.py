"""More time on an active grant: an extension is a new request, judged like any other, that
continues the grant it names with no gap — and every way to stretch access further than the
policy allows through it is refused.

`auth can-i` is sampled every 100 ms across the old expiry with SubjectAccessReviews, the API
server's own answer to the question kubectl asks.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import kubernetes.client

from tests.cluster import Cluster
from tests.e2e.conftest import Operator, Team, binding_name, expires_at, parse_time, wait_for
from tests.e2e.test_approvals import annotate, approvers_policy
from tests.e2e.test_cli import created_name, lapse


def allowed(
    cluster: Cluster, team: Team, verb: str = "create", resource: str = "deployments"
) -> bool:
    """What `kubectl auth can-i VERB RESOURCE --as alice` asks: the API server's own answer."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": team.user,
            "groups": [team.group],
            "resourceAttributes": {
                "namespace": team.namespace,
                "verb": verb,
                "group": "apps",
                "resource": resource,
            },
        },
    }
    api = kubernetes.client.AuthorizationV1Api(cluster.api())
    answer = api.create_subject_access_review(review)
    return bool(answer.status.allowed)


class Sampler(threading.Thread):
    """Asks every 100 ms until told to stop; keeps every answer with its time."""

    def __init__(self, cluster: Cluster, team: Team) -> None:
        super().__init__(daemon=True)
        self.cluster, self.team = cluster, team
        self.samples: list[tuple[datetime, bool]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append((datetime.now(UTC), allowed(self.cluster, self.team)))
            time.sleep(0.1)


def sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


def test_an_extension_two_seconds_before_expiry_keeps_access_across_it(
    cluster: Cluster, team: Team, operator: Operator
) -> None:
    team.policy(maximum="1h")
    team.ask("window", duration="6s")
    body = team.wait_phase("window", "Active")
    old_expiry = expires_at(body)
    old_binding = binding_name(body)
    sampler = Sampler(cluster, team)
    sampler.start()
    sleep_until(old_expiry - timedelta(seconds=2))
    extension = "window-more"
    team.ask(extension, duration="5s", extends="window")
    scheduled = wait_for(
        lambda: (b := team.request(extension)).get("status", {}).get("phase") and b,
        5,
        0.05,
        "the extension decided",
    )
    assert scheduled["status"]["phase"] in ("Scheduled", "Active"), scheduled["status"]
    assert parse_time(scheduled["status"]["startsAt"]) == old_expiry
    new_expiry = old_expiry + timedelta(seconds=5)
    assert parse_time(scheduled["status"]["expiresAt"]) == new_expiry

    ended = team.wait_phase("window", "Expired", timeout=15)
    active = team.wait_phase(extension, "Active", timeout=10)
    sleep_until(old_expiry + timedelta(seconds=2))
    sampler.done.set()
    sampler.join()

    around = [s for s in sampler.samples if s[0] >= old_expiry - timedelta(seconds=1.5)]
    assert len(around) >= 15, sampler.samples
    assert all(answer for _, answer in around), [s for s in around if not s[1]]
    assert ended["status"]["reason"] == "Extended"
    assert extension in ended["status"]["message"]
    assert ended["status"]["extendedBy"] == extension
    assert team.binding(old_binding) is None
    status = active["status"]
    assert parse_time(status["startsAt"]) == old_expiry
    # Bound the moment the old grant ended: the overlap of the two is under a second.
    assert timedelta(0) <= parse_time(status["grantedAt"]) - old_expiry < timedelta(seconds=1)
    assert parse_time(status["expiresAt"]) == new_expiry
    assert status["chain"]["root"] == "window" and status["chain"]["extensions"] == 1
    assert "continues AccessRequest window" in status["message"]
    # The audit trail links the two, both ways.
    assert any(e["reason"] == "ExtensionScheduled" for e in team.events("window"))
    # And the extension lapses on its own expiry, like any grant.
    team.wait_phase(extension, "Expired", timeout=15)
    assert not allowed(cluster, team)


def test_an_extension_past_max_total_duration_is_refused_with_the_limit(
    team: Team, operator: Operator
) -> None:
    team.policy(maximum="1h", extra={"maxTotalDuration": "1h30m"})
    team.ask("long", duration="1h")
    team.wait_phase("long", "Active")
    team.ask("long-more", duration="45m", extends="long")
    body = team.wait_phase("long-more", "Denied")
    assert body["status"]["reason"] == "ExceedsMaxTotalDuration"
    assert "1h30m" in body["status"]["message"]
    assert "maxTotalDuration" in body["status"]["message"]
    within = team.ask("long-bit", duration="20m", extends="long")
    assert within.returncode == 0
    team.wait_phase("long-bit", "Scheduled")


def test_extensions_are_counted_against_max_extensions(team: Team, operator: Operator) -> None:
    team.policy(maximum="1h", extra={"maxExtensions": 1})
    team.ask("first", duration="30m")
    team.wait_phase("first", "Active")
    team.ask("second", duration="10m", extends="first")
    team.wait_phase("second", "Scheduled")
    # The extension is not active yet, so extending it is refused; and a second extension of
    # the first grant loses to the one that claimed it.
    team.ask("third", duration="10m", extends="second")
    assert team.wait_phase("third", "Denied")["status"]["reason"] == "ExtendedNotActive"
    team.ask("again", duration="10m", extends="first")
    assert team.wait_phase("again", "Denied")["status"]["reason"] == "AlreadyExtended"


def test_of_two_extensions_of_one_grant_exactly_one_wins(team: Team, operator: Operator) -> None:
    team.policy(maximum="1h")
    team.ask("contested", duration="30m")
    team.wait_phase("contested", "Active")
    both = "\n---\n".join(
        json.dumps(team.manifest(name, duration="10m", extends="contested"))
        for name in ("ext-a", "ext-b")
    )
    assert team.kubectl("apply", "-f", "-", input=both).returncode == 0

    def settled() -> list[str] | None:
        phases = [team.request(n).get("status", {}).get("phase") for n in ("ext-a", "ext-b")]
        return phases if None not in phases else None

    phases = wait_for(settled, 10, 0.1, "both extensions decided")
    assert sorted(phases) == ["Denied", "Scheduled"], phases
    winner = ("ext-a", "ext-b")[phases.index("Scheduled")]
    assert team.request("contested")["status"]["extendedBy"] == winner


def test_an_ended_grant_cannot_be_extended(team: Team, operator: Operator) -> None:
    team.policy(maximum="1h")
    team.ask("over", duration="2s")
    team.wait_phase("over", "Expired", timeout=15)
    team.ask("over-more", duration="10m", extends="over")
    body = team.wait_phase("over-more", "Denied")
    assert body["status"]["reason"] == "ExtendedNotActive"
    assert "Expired" in body["status"]["message"]
    team.ask("nothing-more", duration="10m", extends="no-such-request")
    assert team.wait_phase("nothing-more", "Denied")["status"]["reason"] == "ExtendedNotFound"
    refused = lapse(team, "extend", "over", "-n", team.namespace, "--by", "5m", "--reason", "x")
    assert refused.returncode == 3 and "only an active grant" in refused.stderr


def test_an_extension_cannot_change_the_role_or_the_subject(
    cluster: Cluster, team: Team, operator: Operator
) -> None:
    """alice's grant of view cannot be extended into edit, nor by bob into his own access."""
    team.policy(roles=("view", "edit"), maximum="1h", requesters=(team.group,))
    team.ask("viewing", role="view", duration="30m")
    team.wait_phase("viewing", "Active")
    team.ask("editing", role="edit", duration="10m", extends="viewing")
    body = team.wait_phase("editing", "Denied")
    assert (
        body["status"]["reason"] == "ExtensionMismatch" and "same role" in body["status"]["message"]
    )

    bob = Team(cluster, team.namespace, user="bob", group=team.group)
    bob.ask("bobs-turn", role="view", duration="10m", extends="viewing")
    body = team.wait_phase("bobs-turn", "Denied")
    assert body["status"]["reason"] == "ExtensionMismatch"
    assert "same subject" in body["status"]["message"]
    assert team.request("viewing")["status"].get("extendedBy") is None


def test_an_extension_needs_approval_when_the_policy_does(
    team: Team,
    leads: str,
    operator: Operator,
) -> None:
    team.policy(roles=("view",), maximum="1h")
    approvers_policy(team, leads)
    team.ask("needs-edit", role="edit", duration="30m")
    team.wait_phase("needs-edit", "Pending")
    assert annotate(team, "needs-edit", "lapse.dev/approve", "ok", "bob", (leads,)).returncode == 0
    team.wait_phase("needs-edit", "Active")
    team.ask("needs-edit-more", role="edit", duration="10m", extends="needs-edit")
    team.wait_phase("needs-edit-more", "Pending")
    # The requester approving her own extension is refused like any self-approval.
    own = annotate(team, "needs-edit-more", "lapse.dev/approve", "me", team.user, (leads,))
    assert own.returncode != 0 and "their own" in own.stderr
    assert (
        annotate(team, "needs-edit-more", "lapse.dev/approve", "ok", "bob", (leads,)).returncode
        == 0
    )
    team.wait_phase("needs-edit-more", "Scheduled")


def test_revoking_a_grant_cancels_its_extension(
    cluster: Cluster, team: Team, operator: Operator
) -> None:
    team.policy(maximum="1h")
    team.ask("to-stop", duration="30m")
    team.wait_phase("to-stop", "Active")
    team.ask("to-stop-more", duration="10m", extends="to-stop")
    team.wait_phase("to-stop-more", "Scheduled")
    result = lapse(team, "revoke", "to-stop", "-n", team.namespace, "-m", "Done early.")
    assert result.returncode == 0, result.stderr
    revoked = team.wait_phase("to-stop", "Revoked")
    assert "Done early." in revoked["status"]["message"]
    cancelled = team.wait_phase("to-stop-more", "Revoked")
    assert cancelled["status"]["reason"] == "ExtendedGrantEnded"
    assert not cancelled["status"].get("bindings")
    assert not allowed(cluster, team)


def test_kubectl_lapse_extend_and_list(team: Team, operator: Operator) -> None:
    team.policy(maximum="1h")
    team.ask("cli-grant", duration="30m")
    team.wait_phase("cli-grant", "Active")
    result = lapse(
        team, "extend", "cli-grant", "-n", team.namespace, "--by", "15m", "--reason", "Ran over."
    )
    assert result.returncode == 0, result.stderr
    extension = created_name(result)
    assert extension.startswith("cli-grant-x-")
    assert "scheduled" in result.stderr + result.stdout
    listing = lapse(team, "list", "-n", team.namespace)
    lines = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    header = listing.stdout.splitlines()[0]
    assert "STARTS" in header and "ENDS" in header
    assert "Scheduled" in lines[extension] and "in 29m" in lines[extension]
    assert "in 44m" in lines[extension] or "in 45m" in lines[extension]
