"""How the operator's garbage collector is set, once, before the event loop starts.

CPython's default thresholds collect the youngest generation every 700 net allocations, so the
objects of requests in flight (coroutines, futures, parsed bodies) survive two young collections
and land in the oldest generation, whose collections traverse the whole heap: with a thousand
grants in memory that is a pause of a quarter of a second every second of a burst, and the
pauses grow with the number of grants. Objects in flight should die young instead, and what
was built at import time (kopf, pydantic's schemas, the handlers) never needs traversing."""

from __future__ import annotations

import gc

# Young collections every 50,000 net allocations instead of 700 (kopf's bodies and patches are
# cyclic: about 450 objects of garbage per grant that only a collection frees; a young
# collection takes ~40 ms); the middle generation every ten of those (it holds what survived
# them: ~150 ms at 10,000 grants, where fifty took 880 ms); the whole heap only after a hundred
# middle ones, and then only once it has grown by a quarter (CPython's own rule).
THRESHOLDS = (50_000, 10, 100)


def tune_collector() -> None:
    """Freeze what exists now (imports, configuration) out of every future collection, and
    collect young objects less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
