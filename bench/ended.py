"""Part 2 of `bench.history` (placeholder while part 1 is tried)."""

from __future__ import annotations

from typing import Any

from bench.history import Context


async def run(context: Context) -> dict[str, Any]:
    raise RuntimeError("not yet")
