"""What the foothold webhook adds to every create it watches, for callers without a grant.

Lapse's foothold webhook sees each create of pods, Secrets, workloads and RBAC objects in the
cluster, by anyone. For everyone without an active grant it must answer at once, from memory.
This creates objects one at a time, alternating a kind the webhook does not watch (ConfigMap)
with one it does (Secret), and reports both latencies and the difference.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.kube import Kube

COUNT = 150


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure_webhook(kube: Kube, namespace: str, count: int = COUNT) -> dict[str, float]:
    """p50/p99 of creating an unwatched and a watched object, in milliseconds."""
    timings: dict[str, list[float]] = {"ConfigMap": [], "Secret": []}
    for index in range(count):
        for kind in timings:
            manifest: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": kind,
                "metadata": {"name": f"bench-admission-{index}", "namespace": namespace},
            }
            started = time.perf_counter()
            await kube.create(manifest)
            timings[kind].append((time.perf_counter() - started) * 1000)
    unwatched, watched = timings["ConfigMap"], timings["Secret"]
    return {
        "unwatched_p50_ms": statistics.median(unwatched),
        "unwatched_p99_ms": _percentile(unwatched, 0.99),
        "watched_p50_ms": statistics.median(watched),
        "watched_p99_ms": _percentile(watched, 0.99),
        "added_p50_ms": statistics.median(watched) - statistics.median(unwatched),
    }
