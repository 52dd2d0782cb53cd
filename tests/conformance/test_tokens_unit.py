"""Service account tokens of the local API (`kubeapi.tokens`) against a clock the test moves:
what no test on a real cluster can wait for (a token's expiry is at least ten minutes away),
and tokens the server did not sign."""

from __future__ import annotations

import base64
import json
from typing import Any

from kubeapi.store import ResKey
from kubeapi.tokens import ISSUER, LEEWAY, Issuer, Ref

NOW = 1_800_000_000.0
ACCOUNT = {"metadata": {"name": "app", "namespace": "ns", "uid": "sa-uid"}}
POD = {"metadata": {"name": "p", "namespace": "ns", "uid": "pod-uid"}, "spec": {}}


class World:
    """The objects a token names, and the time."""

    def __init__(self) -> None:
        self.now = NOW
        self.objects: dict[tuple[ResKey, str, str], dict[str, Any]] = {
            (("", "serviceaccounts"), "ns", "app"): ACCOUNT,
            (("", "pods"), "ns", "p"): POD,
        }
        self.issuer = Issuer(self.lookup, clock=lambda: self.now)

    def lookup(self, key: ResKey, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((key, namespace, name))


def test_a_token_lasts_its_seconds_and_a_minute_of_leeway() -> None:
    world = World()
    token = world.issuer.bound_token(ACCOUNT, [ISSUER], 600, issued=NOW)
    assert world.issuer.authenticate(token) is not None
    world.now = NOW + 600 + LEEWAY
    assert world.issuer.authenticate(token) is not None
    world.now = NOW + 600 + LEEWAY + 1
    assert world.issuer.authenticate(token) is None


def test_a_token_from_the_future_waits() -> None:
    world = World()
    token = world.issuer.bound_token(ACCOUNT, [ISSUER], 600, issued=NOW + 120)
    assert world.issuer.authenticate(token) is None
    world.now = NOW + 61
    assert world.issuer.authenticate(token) is not None


def test_a_pod_being_deleted_keeps_its_tokens_a_minute() -> None:
    world = World()
    token = world.issuer.bound_token(ACCOUNT, [ISSUER], 3600, issued=NOW, pod=Ref("p", "pod-uid"))
    user = world.issuer.authenticate(token)
    assert user is not None
    assert dict(user.extra)["authentication.kubernetes.io/pod-name"] == ("p",)
    deleting = {**POD, "metadata": {**POD["metadata"], "deletionTimestamp": "2027-01-15T08:00:00Z"}}
    world.objects[(("", "pods"), "ns", "p")] = deleting
    world.now = NOW + 60  # NOW is 2027-01-15T08:00:00Z
    assert world.issuer.authenticate(token) is not None
    world.now += 1
    assert world.issuer.authenticate(token) is None


def test_tokens_not_signed_here_are_no_tokens() -> None:
    world, other = World(), World()
    token = other.issuer.bound_token(ACCOUNT, [ISSUER], 3600, issued=NOW)
    assert world.issuer.authenticate(token) is None
    mine = world.issuer.bound_token(ACCOUNT, [ISSUER], 3600, issued=NOW)
    header, payload, signature = mine.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["kubernetes.io"]["serviceaccount"]["name"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert world.issuer.authenticate(f"{header}.{forged}.{signature}") is None
    assert world.issuer.authenticate("not-a-jwt") is None
    assert world.issuer.authenticate(mine) is not None
