"""Grants that begin later: how close to `startAt` a scheduled request is bound, and how an
extension takes over from the grant it extends — the lag, the overlap, and any gap.

Measured from the outside with the benchmark's binding watch, like every other figure: a
scheduled binding's ADDED event against its `startAt`; for a hand-over, the extension's ADDED
event and the extended binding's DELETED event against the old expiry. The subject holds the
role throughout when the extension's binding is added before the old one is deleted; a
"gap" is any hand-over where the watch saw the deletion first.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from bench.kube import Kube
from bench.watch import BindingWatch, Key

GROUP = "lapse-bench-devs"
ROLE = "edit"
LEAD = 10.0  # seconds ahead that the scheduled requests start, and the originals expire
SPREAD = 5  # their starts (and expiries) are spread over this many whole seconds
HELD = "30s"  # how long the scheduled grants and the extensions last


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else math.nan


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_s": statistics.median(values) if values else math.nan,
        "p99_s": _percentile(values, 0.99),
        "max_s": max(values) if values else math.nan,
    }


def _manifest(key: Key, duration: str, **spec: Any) -> dict[str, Any]:
    namespace, name = key
    return {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "role": {"kind": "ClusterRole", "name": ROLE},
            "duration": duration,
            "reason": "Benchmark of Lapse: scheduled starts and hand-overs.",
            **spec,
        },
    }


async def _create(kube: Kube, key: Key, user: str, duration: str, **spec: Any) -> None:
    await kube.create(_manifest(key, duration, **spec), as_user=user, as_groups=(GROUP,))


async def _until(done: Any, within: float) -> bool:
    deadline = time.monotonic() + within
    while not done():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def measure_windows(
    kube: Kube, watch: BindingWatch, namespace: str, count: int
) -> dict[str, float]:
    """Scheduled-start lag and hand-over lag, overlap and gaps over `count` of each."""
    users = [f"bench-window-{i}" for i in range(count)]
    # Scheduled starts on whole seconds, as people write them.
    first = math.ceil(time.time() + LEAD)
    starts: dict[Key, float] = {}
    for i in range(count):
        key = (namespace, f"sched-{i}")
        starts[key] = first + i % SPREAD
        at = datetime.fromtimestamp(starts[key], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        await _create(kube, key, users[i], HELD, startAt=at)
    # Originals that all lapse within a few seconds, each extended as soon as it is active.
    originals = [(namespace, f"orig-{i}") for i in range(count)]
    lapse_at = time.time() + LEAD + SPREAD
    for i, key in enumerate(originals):
        await _create(kube, key, users[i], f"{math.ceil(lapse_at - time.time()) + i % SPREAD}s")

    def seen(keys: list[Key], field: str) -> bool:
        bindings = watch.snapshot()
        return all(getattr(bindings.get(k), field, None) is not None for k in keys)

    await _until(lambda: seen(originals, "added"), LEAD)
    extensions = [(namespace, f"ext-{i}") for i in range(count)]
    for i, key in enumerate(extensions):
        await _create(kube, key, users[i], HELD, extends=originals[i][1])
    within = LEAD + 3 * SPREAD + 30
    await _until(lambda: seen(list(starts), "added") and seen(extensions, "added"), within)
    await _until(lambda: seen(originals, "deleted"), 30)

    bindings = watch.snapshot()
    start_lags = [
        bindings[k].added - at  # type: ignore[operator]
        for k, at in starts.items()
        if k in bindings and bindings[k].added is not None
    ]
    handover_lags: list[float] = []
    overlaps: list[float] = []
    for old, new in zip(originals, extensions, strict=True):
        before, after = bindings.get(old), bindings.get(new)
        if before is None or after is None or before.expires_at is None:
            continue
        if after.added is None or before.deleted is None:
            continue
        handover_lags.append(after.added - before.expires_at)
        overlaps.append(before.deleted - after.added)
    result: dict[str, float] = {"count": float(count)}
    result.update({f"start_lag_{k}": v for k, v in _summary(start_lags).items()})
    result.update({f"handover_lag_{k}": v for k, v in _summary(handover_lags).items()})
    result["overlap_max_s"] = max(overlaps) if overlaps else math.nan
    result["gaps"] = float(sum(1 for o in overlaps if o < 0))
    result["started"] = float(len(start_lags))
    result["handed_over"] = float(len(overlaps))
    # Out of the way of the phases that count bindings: deleting a request revokes at once.
    for key in [*starts, *originals, *extensions]:
        await kube.call(
            "DELETE",
            f"/apis/lapse.dev/v1alpha1/namespaces/{key[0]}/accessrequests/{key[1]}",
        )
    await _until(lambda: seen([*starts, *extensions], "deleted"), 60)
    return result
