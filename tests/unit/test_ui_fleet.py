"""The page across clusters, without a browser: every action reaches the cluster it names and
no other, every object the page gets names its cluster, and a cluster that stops answering is
shown unreachable with what it said last, then connected again by itself.

The browser test (tests/fleet/test_ui.py) proves it on two clusters with their own Lapse; these
fix the routing and the feed's states with fake clients.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lapse.cli.errors import CliError
from lapse.core.kinds import ACCESS_REQUEST, BREAK_GLASS, Kind
from lapse.core.models import UserInfo
from lapse.ui import clusters as clusters_module
from lapse.ui import feed as feed_module
from lapse.ui.clusters import Clusters, Member, Scope
from lapse.ui.feed import CONNECTED, CONNECTING, UNREACHABLE, Feed
from lapse.ui.guard import Gate
from lapse.ui.server import Server
from tests.unit.test_ui_views import pending

BOB = UserInfo(username="bob", groups=["payments-leads"])
GATE = Gate(token="t0k", port=8123)
HEADERS = {"Host": "127.0.0.1:8123", "Origin": "http://127.0.0.1:8123"}


def request_body(name: str, uid: str) -> dict[str, Any]:
    body = pending().model_dump(by_alias=True, mode="json", exclude_none=True)
    body["metadata"] |= {"name": name, "uid": uid}
    return {"kind": "AccessRequest", **body}


class FakeKube:
    """One cluster's client: what it was asked to change, and whether it answers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.namespace = "payments"
        self.server = f"https://{name}.example:6443"
        self.annotated: list[tuple[str, str | None, dict[str, str]]] = []
        self.created: list[dict[str, Any]] = []
        self.items: list[dict[str, Any]] = []
        self.down = False
        # Each outage cuts the watches open at the time, however short it is.
        self.cuts = 0
        self.listed = threading.Event()

    def go_away(self) -> None:
        self.down = True
        self.cuts += 1

    def _answer(self) -> None:
        if self.down:
            raise CliError(f"cannot reach the Kubernetes API at {self.server}: refused")

    def annotate(
        self, resource: Kind, name: str, annotations: dict[str, str], namespace: str | None
    ) -> dict[str, Any]:
        self._answer()
        self.annotated.append((name, namespace, annotations))
        return {"kind": resource.kind, "metadata": {"name": name, "namespace": namespace}}

    def create(self, resource: Kind, body: dict[str, Any]) -> dict[str, Any]:
        self._answer()
        self.created.append(body)
        return {"kind": resource.kind, "metadata": {"name": "made", "namespace": "payments"}}

    def whoami(self) -> UserInfo | None:
        return None if self.down else BOB

    def collection(
        self, resource: Kind, namespace: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        self._answer()
        self.listed.set()
        items = [dict(i) for i in self.items] if resource is ACCESS_REQUEST else []
        return items, "1"

    def changes(
        self, resource: Kind, namespace: str | None, version: str | None, timeout: int
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        # A watch that lasts until the cluster goes away, as a cut connection ends it.
        cuts = self.cuts
        while self.cuts == cuts:
            time.sleep(0.01)
        raise CliError(f"cannot reach the Kubernetes API at {self.server}: connection reset")
        yield from ()


def fleet_of(*names: str) -> tuple[Clusters, dict[str, FakeKube]]:
    kubes = {name: FakeKube(name) for name in names}
    loop = asyncio.new_event_loop()
    members = [
        Member(name, kube, Feed(kube, loop, cluster=name), Scope(BOB, None, "payments"))  # type: ignore[arg-type]
        for name, kube in kubes.items()
    ]
    return Clusters(members, many=True), kubes


def call(server: Server, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async def run() -> tuple[int, Any]:
        async with TestClient(TestServer(server.app())) as client:
            response = await client.request(method, f"/t0k/{path}", headers=HEADERS, json=body)
            return response.status, await response.json()

    return asyncio.run(run())


APPROVE = {"action": "approve", "kind": "AccessRequest", "namespace": "payments", "name": "fix"}


def test_an_action_goes_to_the_cluster_it_names_and_no_other() -> None:
    clusters, kubes = fleet_of("east", "west")
    server = Server.of(GATE, clusters)
    status, answer = call(server, "POST", "api/act", {**APPROVE, "cluster": "west"})
    assert status == 200, answer
    assert [name for name, _, _ in kubes["west"].annotated] == ["fix"]
    assert kubes["east"].annotated == []

    status, _ = call(server, "POST", "api/request", {
        "role": "edit", "roleKind": "ClusterRole", "namespace": "payments",
        "reason": "Fix it", "cluster": "east",
    })  # fmt: skip
    assert status == 200
    assert len(kubes["east"].created) == 1 and kubes["west"].created == []


@pytest.mark.parametrize(
    ("cluster", "said"),
    [
        (None, "name the cluster: this page spans several"),
        ("", "name the cluster"),
        ("north", "no cluster 'north' on this page; it shows east, west"),
    ],
)
def test_across_clusters_an_action_naming_no_known_cluster_is_refused(
    cluster: str | None, said: str
) -> None:
    clusters, kubes = fleet_of("east", "west")
    body = dict(APPROVE) if cluster is None else {**APPROVE, "cluster": cluster}
    status, answer = call(Server.of(GATE, clusters), "POST", "api/act", body)
    assert status == 400
    assert said in answer["error"]
    assert not kubes["east"].annotated and not kubes["west"].annotated


def test_a_one_cluster_page_needs_no_cluster_name() -> None:
    kube = FakeKube("only")
    server = Server(kube, GATE, Scope(BOB, None, "payments"), None)  # type: ignore[arg-type]
    status, answer = call(server, "POST", "api/act", APPROVE)
    assert status == 200, answer
    assert len(kube.annotated) == 1


def test_an_unreachable_cluster_answers_an_action_with_its_sentence() -> None:
    clusters, kubes = fleet_of("east", "west")
    kubes["west"].down = True
    status, answer = call(
        Server.of(GATE, clusters), "POST", "api/act", {**APPROVE, "cluster": "west"}
    )
    assert status == 422
    assert answer["error"].startswith("cannot reach the Kubernetes API at https://west.example")


def read_stream(server: Server, until: str = "ready") -> list[tuple[str, Any]]:
    async def run() -> list[tuple[str, Any]]:
        async with TestClient(TestServer(server.app())) as client:
            response = await client.get("/t0k/api/stream", headers=HEADERS)
            events: list[tuple[str, Any]] = []
            text = ""
            while not events or events[-1][0] != until:
                text += (await response.content.readany()).decode()
                *blocks, text = text.split("\n\n")
                for block in blocks:
                    lines = dict(line.split(": ", 1) for line in block.splitlines())
                    events.append((lines["event"], json.loads(lines["data"])))
            response.close()
            return events

    return asyncio.run(run())


def test_the_stream_says_hello_for_every_cluster_and_names_each_objects_cluster() -> None:
    clusters, _ = fleet_of("east", "west")
    for member in clusters.members.values():
        member.feed.objects["same-uid"] = request_body("fix", "same-uid")
        member.feed.answered = True
    events = read_stream(Server.of(GATE, clusters))
    hello = events[0][1]
    assert events[0][0] == "hello" and hello["fleet"] is True
    assert [(c["name"], c["state"], c["me"]["username"]) for c in hello["clusters"]] == [
        ("east", CONNECTED, "bob"), ("west", CONNECTED, "bob"),
    ]  # fmt: skip
    grants = [data for event, data in events if event == "grant"]
    assert sorted((g["cluster"], g["uid"], g["waitsForMe"]) for g in grants) == [
        ("east", "same-uid", True), ("west", "same-uid", True),
    ]  # fmt: skip


def wait_until(test: Callable[[], bool], what: str, seconds: float = 30) -> None:
    ends = time.monotonic() + seconds
    while not test():
        assert time.monotonic() < ends, f"no {what} within {seconds}s"
        time.sleep(0.01)


def run_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    return loop, thread


def test_a_feed_shows_its_cluster_unreachable_keeps_what_it_said_and_comes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(feed_module, "RETRY_SECONDS", 0.05)
    loop, thread = run_loop()
    kube = FakeKube("west")
    kube.items = [request_body("fix", "uid-1")]
    feed = Feed(kube, loop, cluster="west")  # type: ignore[arg-type]
    news: list[str] = []
    feed.listeners.add(lambda change: news.append(type(change).__name__))
    try:
        assert feed.state == CONNECTING
        feed.follow(ACCESS_REQUEST, None)
        feed.follow(BREAK_GLASS, None)
        wait_until(lambda: feed.state == CONNECTED and "uid-1" in feed.objects, "first list")

        kube.go_away()
        wait_until(lambda: feed.state == UNREACHABLE, "unreachable state")
        assert feed.why is not None and feed.why.startswith("cannot reach the Kubernetes API")
        assert "uid-1" in feed.objects, "what the cluster said last stays"
        assert feed.refused == {}, "a cluster away is not a refusal"

        kube.items = [request_body("after", "uid-2")]
        kube.down = False
        wait_until(lambda: feed.state == CONNECTED, "connected again")
        wait_until(lambda: set(feed.objects) == {"uid-2"}, "a fresh list")
        assert news.count("Reach") >= 3  # connected, unreachable, connected
    finally:
        feed.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_a_cluster_away_at_start_is_probed_until_it_answers_then_followed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(clusters_module, "RETRY_SECONDS", 0.05)
    loop, thread = run_loop()
    kube = FakeKube("west")
    kube.down = True
    member = Member("west", kube, Feed(kube, loop, cluster="west"))  # type: ignore[arg-type]
    try:
        member.start(explicit_namespace=False)
        assert member.settled.wait(5)
        wait_until(lambda: member.info()["state"] == UNREACHABLE, "unreachable")
        assert member.scope is None and member.info()["me"] is None

        kube.down = False
        wait_until(lambda: member.info()["state"] == CONNECTED, "connected")
        assert member.scope == Scope(BOB, None, "payments")
        assert member.info()["me"] == {"username": "bob", "groups": ["payments-leads"]}
        wait_until(kube.listed.is_set, "the feed's first list")
    finally:
        member.feed.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
