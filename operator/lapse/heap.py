"""How the operator's memory is kept: the garbage collector's settings, set once before the
event loop starts, and the C heap given back to the system while the operator runs.

CPython's default thresholds collect the youngest generation every 700 net allocations, so the
objects of requests in flight (coroutines, futures, parsed bodies) survive two young collections
and land in the oldest generation, whose collections traverse the whole heap: with a thousand
grants in memory that is a pause of a quarter of a second every second of a burst, and the
pauses grow with the number of grants. Objects in flight should die young instead, and what
was built at import time (kopf, pydantic's schemas, the handlers) never needs traversing.

What the operator frees goes back to the C allocator, not to the system: every body the
watches deliver is a short-lived string and dict above pymalloc's small-object size, and glibc
keeps the freed space of its heap (one per thread by default) until told. So the arenas are
capped at start-up (before the reaper's thread makes its own) and the heap is trimmed every
TRIM_INTERVAL seconds: a few milliseconds at 10,000 grants, with the interpreter lock released.

The young collections above also let the cyclic garbage of requests that were in flight when
they ran reach the oldest generation, which CPython then collects only after some fifty million
allocations (40,000-50,000 such objects a minute in a burst of grants). A full collection finds
them but pauses every thread, the reaper's included, for 0.4-0.7 s at 10,000 grants; so it runs
only when no delete is under way or due within QUIET_WITHIN, at most every FULL_EVERY seconds,
and only when middle collections ran since (nothing to find otherwise).

Young and middle collections pause every thread as well. While the reaper has more deletes due
than connections free (an expiry wave, start-up's overdue bindings) it holds collections off
(`hold`) until it has caught up (`release`): the garbage of those seconds waits for the next
collection, and no delete waits behind a pause. A hold that outlasts HOLD_AT_MOST is let go by
`keep_giving_back`, so an API server that stays slow cannot make memory grow for long.

Measured on kube-apiserver, 10,000 grants made at 50 a second, the operator idle with all of
them active: 574 MB before any of this; 313 and 333 MB trimming every 30 s (without and with
a full collection every two minutes), the size climbing 15-30 MB between trims; 279 MB with
the intervals below.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import logging
import time
from collections.abc import Callable
from datetime import timedelta

logger = logging.getLogger(__name__)

# Young collections every 50,000 net allocations instead of 700 (kopf's bodies and patches are
# cyclic: about 450 objects of garbage per grant that only a collection frees; a young
# collection takes ~40 ms); the middle generation every ten of those (it holds what survived
# them: ~150 ms at 10,000 grants, where fifty took 880 ms); the whole heap only after a hundred
# middle ones, and then only once it has grown by a quarter (CPython's own rule).
THRESHOLDS = (50_000, 10, 100)
# glibc's mallopt parameter number for the arena cap (malloc.h: M_ARENA_MAX).
M_ARENA_MAX = -8
# Two heaps: the event loop's and the reaper's thread (and the short-lived others share them).
ARENAS = 2
# A trim takes a few milliseconds at 10,000 grants and runs with the interpreter lock released;
# at 30 s apart the idle operator's resident size was found anywhere from 313 to 333 MB.
TRIM_INTERVAL = 10.0
FULL_EVERY = 60.0
# Longer than a full collection at 10,000 grants takes, with room for a slow machine.
QUIET_WITHIN = timedelta(seconds=5)
# The longest collections are held off for deletes: a wave of 10,000 due at once is deleted in
# about ten seconds on a two-core machine.
HOLD_AT_MOST = 15.0


class _Hold:
    """Whether collections are held off, and since when (monotonic): plain values replaced
    whole, as `hold` and `release` are called from the reaper's thread."""

    since: float | None = None


_HOLD = _Hold()


def hold() -> None:
    """Hold automatic collections off until `release` (or HOLD_AT_MOST has passed)."""
    if _HOLD.since is None:
        _HOLD.since = time.monotonic()
        gc.disable()


def release() -> None:
    """Let automatic collections run again; the next one takes what the hold left."""
    if _HOLD.since is not None:
        _HOLD.since = None
        gc.enable()


def held_for() -> float | None:
    """How long collections have been held off, in seconds; None when they are not."""
    since = _HOLD.since
    return None if since is None else time.monotonic() - since


def tune_collector() -> None:
    """Freeze what exists now (imports, configuration) out of every future collection, and
    collect young objects less often; cap the C heap's arenas while one thread runs."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, ARENAS)


def give_back() -> bool:
    """Return the C heap's free pages to the system; False where the allocator is not glibc's."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


async def keep_giving_back(
    *,
    busy: Callable[[timedelta], bool],
    interval: float = TRIM_INTERVAL,
    full_every: float = FULL_EVERY,
) -> None:
    """For as long as the operator runs: every `interval` seconds a full collection if one is
    due and nothing is `busy` within QUIET_WITHIN, then `give_back`."""
    if _glibc() is None:
        logger.info("Not glibc: the C heap's free pages are left to the allocator.")
    loop = asyncio.get_running_loop()
    last_full = loop.time()
    middle_seen = _middle_collections()
    while True:
        await asyncio.sleep(interval)
        held = held_for()
        if held is not None and held > HOLD_AT_MOST:
            logger.warning(
                "Collections were held off for %.0f s while deletes waited; letting them run.",
                held,
            )
            release()
        due = loop.time() - last_full >= full_every and _middle_collections() > middle_seen
        if due and not busy(QUIET_WITHIN):
            gc.collect()
            last_full, middle_seen = loop.time(), _middle_collections()
        give_back()


def _middle_collections() -> int:
    return int(gc.get_stats()[1]["collections"])


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
