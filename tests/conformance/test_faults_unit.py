"""The fault middleware and control endpoint of the local API, on a tiny aiohttp app.

The app stands in for the API server: a handler that answers, and a target that counts the
watches it was told to cut and the histories it was told to forget.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web

from kubeapi.faults import Faults, request_verb


class Target:
    def __init__(self) -> None:
        self.cuts = 0
        self.forgotten = 0

    def cut_watches(self) -> int:
        self.cuts += 1
        return 3

    def forget_history(self) -> None:
        self.forgotten += 1


@asynccontextmanager
async def app_with_faults(
    is_admin: Any = None,
) -> AsyncIterator[tuple[str, Faults, Target]]:
    target = Target()
    faults = Faults(target, is_admin)
    app = web.Application(middlewares=[faults.middleware])
    faults.add_routes(app)

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"kind": "ConfigMapList", "items": []})

    app.router.add_route("*", "/api/v1/{tail:.*}", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", faults, target
    finally:
        await runner.cleanup()


async def statuses(session: aiohttp.ClientSession, url: str, count: int) -> list[int]:
    codes = []
    for _ in range(count):
        async with session.get(url) as resp:
            codes.append(resp.status)
    return codes


def test_a_share_of_requests_fails_and_is_counted() -> None:
    async def scenario() -> None:
        async with app_with_faults() as (base, _faults, _target), aiohttp.ClientSession() as s:
            async with s.put(
                f"{base}/_faults", json={"error_rate": 0.5, "error_codes": [500, 503], "seed": 7}
            ) as resp:
                assert resp.status == 200
            codes = await statuses(s, f"{base}/api/v1/namespaces/x/configmaps", 200)
            failed = [c for c in codes if c != 200]
            assert set(failed) == {500, 503}
            assert 40 < len(failed) < 160
            async with s.get(f"{base}/_faults") as resp:
                state = await resp.json()
            assert sum(state["counters"]["errors"].values()) == len(failed)
            async with s.delete(f"{base}/_faults") as resp:
                assert resp.status == 200
            assert await statuses(s, f"{base}/api/v1/configmaps", 20) == [200] * 20

    asyncio.run(scenario())


def test_429_carries_retry_after_and_a_status_body() -> None:
    async def scenario() -> None:
        async with app_with_faults() as (base, faults, _), aiohttp.ClientSession() as s:
            faults.configure({"error_rate": 1.0, "error_codes": [429], "retry_after_seconds": 2})
            async with s.get(f"{base}/api/v1/pods") as resp:
                assert resp.status == 429
                assert resp.headers["Retry-After"] == "2"
                body = await resp.json()
            assert body["reason"] == "TooManyRequests"
            assert body["details"]["retryAfterSeconds"] == 2

    asyncio.run(scenario())


def test_filters_aim_at_rolebinding_writes_only() -> None:
    async def scenario() -> None:
        async with app_with_faults() as (base, faults, _), aiohttp.ClientSession() as s:
            faults.configure(
                {
                    "error_rate": 1.0,
                    "match": {"verbs": ["create", "delete"], "resources": ["rolebindings"]},
                }
            )
            path = "/api/v1/namespaces/p/rolebindings"
            async with s.get(f"{base}{path}") as resp:
                assert resp.status == 200
            async with s.post(f"{base}{path}", json={}) as resp:
                assert resp.status == 500
            async with s.delete(f"{base}{path}/b") as resp:
                assert resp.status == 500
            async with s.post(f"{base}/api/v1/namespaces/p/configmaps", json={}) as resp:
                assert resp.status == 200
            faults.configure({"match": {"user_agents": ["kopf/*"]}})
            async with s.get(f"{base}{path}", headers={"User-Agent": "kopf/1.37"}) as resp:
                assert resp.status == 500
            async with s.get(f"{base}{path}", headers={"User-Agent": "kubectl/v1.37"}) as resp:
                assert resp.status == 200

    asyncio.run(scenario())


def test_timeouts_answer_504_after_the_set_time() -> None:
    async def scenario() -> None:
        async with app_with_faults() as (base, faults, _), aiohttp.ClientSession() as s:
            faults.configure({"timeout_rate": 1.0, "timeout_seconds": 0.2})
            async with s.get(f"{base}/api/v1/pods") as resp:
                assert resp.status == 504
                assert (await resp.json())["reason"] == "Timeout"
            faults.configure({"timeout_seconds": 30})
            timeout = aiohttp.ClientTimeout(total=0.3)
            try:
                async with s.get(f"{base}/api/v1/pods", timeout=timeout) as resp:
                    raise AssertionError(f"answered {resp.status}")
            except TimeoutError:
                pass
            assert faults.state()["counters"]["timeouts"] == 2

    asyncio.run(scenario())


def test_outage_holds_requests_cuts_watches_and_recovers() -> None:
    async def scenario() -> None:
        async with app_with_faults() as (base, faults, target), aiohttp.ClientSession() as s:
            async with s.put(f"{base}/_faults", json={"outage": True}) as resp:
                assert resp.status == 200
            assert target.cuts == 1
            held = asyncio.ensure_future(s.get(f"{base}/api/v1/pods"))
            await asyncio.sleep(0.2)
            assert not held.done()
            # The control endpoint keeps answering during an outage.
            async with s.get(f"{base}/_faults") as resp:
                assert (await resp.json())["settings"]["outage"] is True
            async with s.put(f"{base}/_faults", json={"outage": False}) as resp:
                assert resp.status == 200
            resp = await held
            assert resp.status == 200
            resp.release()
            assert faults.state()["counters"]["outage_held"] == 1

    asyncio.run(scenario())


def test_outage_ends_by_itself_and_refuse_mode_drops_connections() -> None:
    async def scenario() -> None:
        async with app_with_faults() as (base, faults, _), aiohttp.ClientSession() as s:
            faults.configure({"outage": True, "outage_seconds": 0.3})
            async with s.get(f"{base}/api/v1/pods") as resp:
                assert resp.status == 200
            assert faults.settings.outage is False
            faults.configure({"outage": True, "outage_mode": "refuse"})
            try:
                async with s.get(f"{base}/api/v1/pods") as resp:
                    raise AssertionError(f"answered {resp.status}")
            except aiohttp.ClientConnectionError:
                pass
            faults.reset()
            async with s.get(f"{base}/api/v1/pods") as resp:
                assert resp.status == 200

    asyncio.run(scenario())


def test_control_endpoint_requires_the_admin_and_triggers_the_target() -> None:
    async def scenario() -> None:
        def is_admin(headers: Any) -> bool:
            return bool(headers.get("Authorization") == "Bearer admin")

        async with app_with_faults(is_admin) as (base, _, target), aiohttp.ClientSession() as s:
            async with s.get(f"{base}/_faults") as resp:
                assert resp.status == 403
            admin = {"Authorization": "Bearer admin"}
            async with s.post(f"{base}/_faults/cut-watches", headers=admin) as resp:
                assert (await resp.json())["closed"] == 3
            async with s.post(f"{base}/_faults/forget-history", headers=admin) as resp:
                assert resp.status == 200
            assert (target.cuts, target.forgotten) == (1, 1)
            async with s.put(f"{base}/_faults", json={"nonsense": 1}, headers=admin) as resp:
                assert resp.status == 400

    asyncio.run(scenario())


def test_request_verbs_follow_the_api_server() -> None:
    assert request_verb("GET", "/api/v1/namespaces/p/pods", {}) == ("list", "pods", "p")
    assert request_verb("GET", "/api/v1/namespaces/p/pods/x", {}) == ("get", "pods", "p")
    assert request_verb("GET", "/api/v1/pods", {"watch": "true"}) == ("watch", "pods", "")
    assert request_verb(
        "DELETE", "/apis/rbac.authorization.k8s.io/v1/namespaces/p/rolebindings", {}
    ) == (
        "deletecollection",
        "rolebindings",
        "p",
    )
    assert (
        request_verb("PATCH", "/apis/lapse.dev/v1alpha1/accessrequests/x/status", {})[0] == "patch"
    )
    assert request_verb("GET", "/version", {}) == ("get", "", "")
