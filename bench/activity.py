"""`python -m bench.activity`: the audit sink's throughput, and grants under a flood of events.

The API server's audit webhook may send Lapse thousands of events a second; Lapse must take
them without slowing what matters more: grants and revocations. This starts the local API and
the operator (audit sink on, bearer token), then:

1. **Quiet.** `ACTIVITY_N` requests (default 60) of 6 s each, created at 20 per second; grant
   latency (`status.grantedAt` minus the admission time Lapse stamped) and revocation lag
   (`status.endedAt` minus `status.expiresAt`) of every one.
2. **Flood.** `ACTIVITY_SENDERS` (default 4) clients POST EventLists of 400 events each to
   `/audit` over TLS for `ACTIVITY_FLOOD` seconds (default 10), as fast as they are answered.
   Half the events are by the benchmark's requesters inside their grants' namespaces (each
   one folded into a grant's record), half by users with no grant. **Accepted** = events in
   answered batches per second; **folded** = events the operator counted (matched, unmatched)
   per second until its queue was empty; **dropped** = events refused for a full queue.
3. **Grants under a flood.** Phase 1 again while events keep coming: first at the most a
   kube-apiserver sends by default (10 batches of 400 a second), then unthrottled.

Numbers depend on the machine; nothing is asserted (tests/bench runs it small).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.cluster import LocalApi, Operator, stop_all
from bench.install import GROUP, install
from bench.kube import Kube
from bench.measure import USERS, request_manifest, user_of, wait_webhook

BATCH = 400
NAMESPACES = [f"bench-{i}" for i in range(10)]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _event(index: int) -> dict[str, Any]:
    """A Metadata-level event as kube-apiserver sends it; even ones by a bench requester."""
    user = user_of(index // 2) if index % 2 == 0 else f"someone-{index % 997}"
    stamp = _now()
    return {
        "level": "Metadata",
        "auditID": str(uuid.uuid4()),
        "stage": "ResponseComplete",
        "requestURI": f"/api/v1/namespaces/{NAMESPACES[index % 10]}/pods/web-{index}",
        "verb": "delete" if index % 4 == 0 else "get",
        "user": {"username": "admin", "groups": ["system:masters", "system:authenticated"]},
        "impersonatedUser": {"username": user, "groups": [GROUP, "system:authenticated"]},
        "sourceIPs": ["127.0.0.1"],
        "userAgent": "kubectl/v1.36.0",
        "objectRef": {
            "resource": "pods",
            "namespace": NAMESPACES[index % 10],
            "name": f"web-{index}",
            "apiVersion": "v1",
        },
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": stamp,
        "stageTimestamp": stamp,
        "annotations": {"authorization.k8s.io/decision": "allow"},
    }


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _figures(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"median {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"


class Flood:
    """Senders POSTing audit batches to the operator's /audit until stopped."""

    def __init__(
        self, url: str, token: str, cafile: Path, senders: int, qps: float | None = None
    ) -> None:
        self.url = url
        # Batches per second per sender (None: as fast as they are answered).
        self.qps = qps
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.context = ssl.create_default_context(cafile=str(cafile))
        self.senders = senders
        self.accepted = 0
        self.failed = 0
        self._stop = asyncio.Event()

    async def _send(self, session: aiohttp.ClientSession, offset: int) -> None:
        index = offset
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self._stop.is_set():
            if self.qps:
                next_at += 1 / self.qps
                await asyncio.sleep(max(0.0, next_at - loop.time()))
            items = [_event(index + i) for i in range(BATCH)]
            index += BATCH * self.senders
            body = json.dumps(
                {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}
            )
            try:
                async with session.post(
                    self.url, data=body, headers=self.headers, ssl=self.context
                ) as response:
                    await response.read()
                    if response.status == 200:
                        self.accepted += BATCH
                    else:
                        self.failed += BATCH
            except (aiohttp.ClientError, OSError):
                self.failed += BATCH
                await asyncio.sleep(0.1)

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._send(session, i * BATCH) for i in range(self.senders)))

    def stop(self) -> None:
        self._stop.set()


def _counter(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rpartition(" ")[2])
    return total


async def _drained(operator: Operator, within: float = 120) -> None:
    """Until the operator's audit queue is empty."""
    for _ in range(int(within / 0.2)):
        if _counter(operator.metrics_text(), "lapse_audit_queue_depth") == 0:
            return
        await asyncio.sleep(0.2)


async def grants(kube: Kube, count: int, tag: str) -> tuple[list[float], list[float]]:
    """`count` requests of 6 s at 20 per second; their grant latencies and revocation lags."""
    keys = [(NAMESPACES[i % 10], f"{tag}-{i}") for i in range(count)]
    for index, key in enumerate(keys):
        await kube.create(request_manifest(key, "6s"), as_user=user_of(index), as_groups=(GROUP,))
        await asyncio.sleep(0.05)
    deadline = time.monotonic() + 60
    statuses: dict[tuple[str, str], dict[str, Any]] = {}
    while time.monotonic() < deadline and len(statuses) < count:
        await asyncio.sleep(1)
        for namespace, name in keys:
            body = await kube.call(
                "GET", f"/apis/lapse.dev/v1alpha1/namespaces/{namespace}/accessrequests/{name}"
            )
            if (body.get("status") or {}).get("phase") == "Expired":
                statuses[(namespace, name)] = body
    latencies, lags = [], []
    for body in statuses.values():
        status = body["status"]
        admitted = body["metadata"]["annotations"].get("lapse.dev/admitted-at")
        if admitted:
            latencies.append(_time(status["grantedAt"]) - _time(admitted))
        lags.append(_time(status["endedAt"]) - _time(status["expiresAt"]))
    if len(statuses) < count:
        print(f"  {count - len(statuses)} of {count} requests did not expire in time")
    return latencies, lags


async def run(workdir: Path) -> None:
    count = int(os.environ.get("ACTIVITY_N", "60"))
    flood_seconds = float(os.environ.get("ACTIVITY_FLOOD", "10"))
    senders = int(os.environ.get("ACTIVITY_SENDERS", "4"))
    token = secrets.token_hex(24)
    (workdir / "token").write_text(token)
    os.environ["LAPSE_AUDIT_TOKEN_FILE"] = str(workdir / "token")
    api = LocalApi(workdir / "api")
    credentials = api.start()
    operator = Operator(workdir / "operator", api.kubeconfig)
    kube = Kube(credentials)
    try:
        await install(kube, NAMESPACES)
        operator.start()
        operator.wait_metrics()
        await wait_webhook(kube, operator, NAMESPACES[0], 60)
        url = f"https://127.0.0.1:{operator.webhook_port}/audit"
        cafile = workdir / "operator" / "certs" / "ca.crt"

        print(f"1. quiet: {count} grants of 6 s")
        quiet = await grants(kube, count, "quiet")
        print(f"   grant latency {_figures(quiet[0])}; revocation lag {_figures(quiet[1])}")

        print(f"2. flood: {senders} senders, batches of {BATCH}, {flood_seconds:g} s")
        before = operator.metrics_text()
        flood = Flood(url, token, cafile, senders)
        started = time.monotonic()
        sending = asyncio.create_task(flood.run())
        await asyncio.sleep(flood_seconds)
        flood.stop()
        await sending
        sent_for = time.monotonic() - started
        await _drained(operator)
        drained = time.monotonic() - started
        after = operator.metrics_text()
        folded = sum(
            _counter(after, f'lapse_audit_events_total{{result="{r}"}}')
            - _counter(before, f'lapse_audit_events_total{{result="{r}"}}')
            for r in ("matched", "unmatched")
        )
        dropped = _counter(after, 'lapse_audit_events_total{result="dropped"}') - _counter(
            before, 'lapse_audit_events_total{result="dropped"}'
        )
        print(
            f"   accepted {flood.accepted / sent_for:,.0f} events/s "
            f"({flood.accepted:,} in {sent_for:.1f} s, {flood.failed:,} failed); "
            f"folded {folded / drained:,.0f} events/s; dropped {dropped:,.0f}"
        )

        # kube-apiserver sends at most --audit-webhook-batch-throttle-qps (default 10)
        # batches of --audit-webhook-batch-max-size (default 400) a second: 4,000 events.
        ceiling = Flood(url, token, cafile, 1, qps=10)
        unthrottled = Flood(url, token, cafile, senders)
        for label, flood in (
            ("at a real API server's ceiling (10 batches of 400 a second)", ceiling),
            (f"during an unthrottled flood ({senders} senders)", unthrottled),
        ):
            print(f"3. the same {count} grants {label}")
            sending = asyncio.create_task(flood.run())
            loud = await grants(kube, count, f"flooded-{flood.senders}")
            flood.stop()
            await sending
            await _drained(operator)
            print(f"   grant latency {_figures(loud[0])}; revocation lag {_figures(loud[1])}")
            print(f"   (the flood sent {flood.accepted:,} events meanwhile)")
        print(f"   {USERS} requesters; their grants' records are in status.activity")
    finally:
        await kube.close()
        operator.stop()
        api.stop()


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="lapse-bench-activity-"))
    try:
        asyncio.run(run(workdir))
    finally:
        stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
