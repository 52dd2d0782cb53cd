"""The operator hands the C heap's free pages back to the system (lapse.heap)."""

from __future__ import annotations

import asyncio
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
        task = asyncio.create_task(heap.keep_giving_back(interval=0.05))
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
