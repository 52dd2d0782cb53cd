"""Lapse's revocation capacity: N grants that all expire at the same instant.

The steady phase's expiries are spread by the grants' own latency (each expiry is its binding
time plus its duration), so its revocations per second are bounded by how fast grants came
due, not by how fast Lapse deletes. Here every request names the same `startAt` and the same
duration: a scheduled grant's expiry is its start plus its duration however late it is bound,
so all N fall due at one instant, and N / (last DELETED - that instant) is the rate at which
Lapse revokes when deletes are due faster than it can make them — the figure to divide by a
plain client's delete rate on the same API server (`bench.sidebyside`).

Measured from the outside with the benchmark's binding watch, like every other figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bench.kube import ApiError, Kube
from bench.watch import BindingWatch, Key

if TYPE_CHECKING:
    # bench.report imports bench.measure, which imports this module.
    from bench.report import Stats

GROUP = "lapse-bench-devs"
ROLE = "edit"
USERS = 50
# Creates planned as if they ran this slowly; binds after the start likewise; then a margin.
PLANNED_PER_S = 20.0
MARGIN_S = 15.0
CONCURRENCY = 32


@dataclass(frozen=True)
class Wave:
    n: int
    bound: int
    revoked: int
    early: int
    lag_s: Stats
    seconds: float
    revocations_per_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "bound": self.bound,
            "revoked": self.revoked,
            "revoked_early": self.early,
            "lag_s": self.lag_s.to_json(),
            "seconds": round(self.seconds, 3),
            "revocations_per_s": round(self.revocations_per_s, 1),
        }


def _stamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def measure_wave(
    kube: Kube, watch: BindingWatch, namespaces: list[str], n: int, log: Any
) -> Wave:
    """N scheduled requests with one `startAt` and one duration; their lag and rate."""
    from bench.report import stats

    start = math.ceil(time.time() + n / PLANNED_PER_S + MARGIN_S)
    held = math.ceil(n / PLANNED_PER_S + MARGIN_S)
    expiry = float(start + held)
    keys: list[Key] = [(namespaces[i % len(namespaces)], f"wave-{i:05d}") for i in range(n)]
    log(f"  {n:,} requests starting at {_stamp(start)} for {held}s: all expire at one instant")
    pending = iter(range(n))

    async def create_all() -> None:
        for i in pending:
            namespace, name = keys[i]
            manifest = {
                "apiVersion": "lapse.dev/v1alpha1",
                "kind": "AccessRequest",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "role": {"kind": "ClusterRole", "name": ROLE},
                    "duration": f"{held}s",
                    "startAt": _stamp(start),
                    "reason": "Benchmark of Lapse: revocation capacity.",
                },
            }
            try:
                await kube.create(manifest, as_user=f"bench-wave-{i % USERS}", as_groups=(GROUP,))
            except ApiError as error:
                log(f"  wave request {name} refused: {error}")

    await asyncio.gather(*(create_all() for _ in range(CONCURRENCY)))
    if time.time() > start:
        log("  the wave's requests were not all made before their start: lag still counts")

    def done(field: str) -> int:
        bindings = watch.snapshot()
        return sum(1 for k in keys if getattr(bindings.get(k), field, None) is not None)

    for _ in range(int((expiry + 120 - time.time()) / 0.5)):
        if done("deleted") >= n:
            break
        await asyncio.sleep(0.5)
    bindings = watch.snapshot()
    deleted = [b.deleted for k in keys if (b := bindings.get(k)) and b.deleted is not None]
    lags = [d - expiry for d in deleted]
    early = sum(1 for lag in lags if lag < -0.5)
    span = max(deleted) - expiry if deleted else math.nan
    wave = Wave(
        n=n,
        bound=done("added"),
        revoked=len(deleted),
        early=early,
        lag_s=stats([max(0.0, lag) for lag in lags]),
        seconds=span,
        revocations_per_s=len(deleted) / span if span and span > 0 else math.nan,
    )
    log(
        f"  wave: {wave.revoked:,} of {n:,} revoked within {span:.2f} s of their one expiry, "
        f"{wave.revocations_per_s:.0f}/s (lag p50 {wave.lag_s.p50:.3f}, p99 {wave.lag_s.p99:.3f})"
    )
    # Out of the way of the phases that count bindings (the requests have ended).
    for namespace, name in keys:
        with contextlib.suppress(ApiError):
            await kube.call(
                "DELETE", f"/apis/lapse.dev/v1alpha1/namespaces/{namespace}/accessrequests/{name}"
            )
    return wave
