"""Notifications: audit records forwarded to a webhook, and a dead receiver never slows a grant.

The operator posts to this machine (127.0.0.1, or the node's address from a pod) on a port fixed
at start-up; this test decides whether anything listens there, and how quickly it answers.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.e2e.conftest import Operator, Team, wait_for


class Receiver:
    """An aiohttp server in its own thread: records every body; `delay` makes it slow."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.received: list[dict[str, Any]] = []
        self.delay = 0.0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.received.append(body)
        return web.json_response({"ok": True})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def find(self, name: str, action: str) -> dict[str, Any] | None:
        return next(
            (
                r
                for r in self.received
                if r.get("lapse", {}).get("name") == name and r["lapse"].get("action") == action
            ),
            None,
        )


@pytest.fixture
def receiver(operator: Operator) -> Iterator[Receiver]:
    listening = Receiver(operator.notify_port, operator.notify_host)
    try:
        yield listening
    finally:
        listening.stop()


def grant_latency(team: Team, name: str) -> float:
    """Seconds from `kubectl apply` to the request being Active, as a user would wait."""
    started = time.monotonic()
    team.ask(name, duration="1m")
    team.wait_phase(name, "Active")
    return time.monotonic() - started


def test_notifications_are_sent_and_a_dead_or_slow_receiver_never_delays_a_grant(
    team: Team, operator: Operator, receiver: Receiver
) -> None:
    team.policy()
    # Nothing listens yet: every notification fails, and grants do not wait for it.
    down = [grant_latency(team, f"down-{i}") for i in range(3)]
    print(f"\ngrant latency with the receiver down: {[f'{s:.3f}s' for s in down]}")
    failed = operator.metrics()
    assert any(
        k.startswith("lapse_notifications_total") and 'result="failed"' in k and v > 0
        for k, v in failed.items()
    )

    receiver.start()
    receiver.delay = 5.0
    slow = [grant_latency(team, f"slow-{i}") for i in range(3)]
    print(f"grant latency with a receiver taking 5s: {[f'{s:.3f}s' for s in slow]}")
    # Generous bound: a grant that waited for the receiver would take 1s (timeout) or 5s.
    assert max(down + slow) < 5

    receiver.delay = 0.0
    team.ask("heard", duration="10s")
    team.wait_phase("heard", "Active")
    granted = wait_for(lambda: receiver.find("heard", "granted"), 10, 0.1, "a granted notice")
    assert granted["text"].startswith(f"AccessRequest {team.namespace}/heard was granted")
    assert granted["lapse"]["subject"] == "User:alice"
    assert granted["lapse"]["role"] == "ClusterRole/edit"
    # LAPSE_NOTIFY_EXPIRY_WARNING is 8s in the test operator: the warning comes 2s in.
    soon = wait_for(lambda: receiver.find("heard", "expiring-soon"), 10, 0.1, "expiring soon")
    assert "expires soon" in soon["text"]
    expired = wait_for(lambda: receiver.find("heard", "expired"), 15, 0.1, "an expired notice")
    assert expired["lapse"]["reason"] == "Expired"

    team.policy(mode="Approvers", suffix="-approvers", roles=("admin",))
    team.ask("waiting", role="admin", duration="1m")
    team.wait_phase("waiting", "Pending")
    pending = wait_for(lambda: receiver.find("waiting", "pending"), 10, 0.1, "a pending notice")
    assert "awaits approval" in pending["text"]
    # Approvers read what they would approve, in the notice itself.
    assert "adds: " in pending["text"] and pending["lapse"]["risk"].startswith("ClusterRole ")
    assert "approvers" in pending["lapse"]
    team.kubectl("delete", "accessrequest", "waiting", "-n", team.namespace)
    sent = operator.metrics()
    assert sent.get('lapse_notifications_total{event="granted",result="sent"}', 0) >= 1
    print(json.dumps(granted, indent=1))
