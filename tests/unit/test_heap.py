"""The operator hands the C heap's free pages back to the system (lapse.heap)."""

from __future__ import annotations

import asyncio
import gc
from datetime import timedelta
from pathlib import Path

import pytest

from lapse import heap


def _resident_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def _fragment() -> list[bytes]:
    # 4 KB blocks come from malloc's heap (above pymalloc's 512 bytes); one in sixteen kept
    # alive pins the heap's top, so free() alone gives nothing back.
    blocks = [bytes(4000) + i.to_bytes(4, "little") for i in range(50_000)]
    return blocks[::16]


def test_free_heap_pages_go_back_to_the_system() -> None:
    kept = _fragment()
    before = _resident_mb()
    assert heap.give_back(), "the allocator here is glibc's"
    after = _resident_mb()
    assert before - after > 100, f"resident {before:.0f} MB before, {after:.0f} MB after"
    assert len(kept) == 3125


def test_the_operator_keeps_giving_back_while_it_runs() -> None:
    async def run() -> float:
        task = asyncio.create_task(heap.keep_giving_back(busy=lambda _: True, interval=0.05))
        kept = _fragment()
        before = _resident_mb()
        await asyncio.sleep(0.5)
        after = _resident_mb()
        task.cancel()
        assert len(kept) == 3125
        return before - after

    if not heap.give_back():
        pytest.skip("not glibc")
    assert asyncio.run(run()) > 100


def _churn() -> None:
    # Enough short-lived containers for several middle-generation collections.
    for _ in range(20):
        junk = [[i] for i in range(100_000)]
        del junk


def _full_collections() -> int:
    return int(gc.get_stats()[2]["collections"])


@pytest.mark.parametrize("busy", [False, True])
def test_a_full_collection_runs_only_when_no_delete_is_near(busy: bool) -> None:
    asked: list[timedelta] = []

    def near(within: timedelta) -> bool:
        asked.append(within)
        return busy

    async def run() -> int:
        task = asyncio.create_task(heap.keep_giving_back(busy=near, interval=0.02, full_every=0))
        await asyncio.sleep(0.05)
        before = _full_collections()
        _churn()
        await asyncio.sleep(0.2)
        task.cancel()
        return _full_collections() - before

    thresholds = gc.get_threshold()
    gc.set_threshold(*heap.THRESHOLDS)
    try:
        full = asyncio.run(run())
    finally:
        gc.set_threshold(*thresholds)
    assert asked and all(within >= timedelta(seconds=1) for within in asked)
    assert (full == 0) if busy else (full >= 1)
