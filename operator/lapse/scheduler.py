"""The expiry scheduler: one task, one heap, woken for the earliest deadline.

A timer per grant would cost a task each and drift under load; polling would revoke late by up
to its interval. Instead one task sleeps exactly until the earliest `expiresAt`, re-checks the
clock on waking (sleeps can end early), and hands every due grant to the revoke callback. Adding
an earlier deadline wakes it at once.

Other deadlines of a grant (a break-glass review falling due) ride the same heap under their own
kind with their own callback, so there is still one task and one place that knows the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from lapse.core.grants import GrantKey

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
OnDue = Callable[[GrantKey, datetime], Awaitable[None]]

RETRY_DELAY = timedelta(seconds=1)
# The kind of a grant's own end; the callback given to the constructor handles it.
EXPIRY = "expiry"


class ExpiryScheduler:
    def __init__(
        self,
        on_due: OnDue,
        clock: Clock,
        concurrency: int = 64,
        on_change: Callable[[], None] | None = None,
        on_settled: Callable[[], None] | None = None,
    ) -> None:
        self._clock = clock
        self._heap: list[tuple[datetime, str, GrantKey]] = []
        # The current deadline per (kind, key); heap entries that disagree are stale and skipped.
        self._deadlines: dict[tuple[str, GrantKey], datetime] = {}
        self._callbacks: dict[str, OnDue] = {EXPIRY: on_due}
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._on_change = on_change or (lambda: None)
        # Called each time a deadline that fell due has been handled.
        self._on_settled = on_settled or (lambda: None)
        # Deadlines per (kind, owner kind), kept as they change: gauges read them on every
        # change, and counting the deadlines each time would cost a walk over every grant.
        self._counts: Counter[tuple[str, str]] = Counter()

    def __len__(self) -> int:
        return self.count()

    def __contains__(self, key: GrantKey) -> bool:
        return (EXPIRY, key) in self._deadlines

    def count(self, kind: str = EXPIRY, owner_kind: str | None = None) -> int:
        """How many deadlines of `kind` are waiting, of owners of `owner_kind` (or any)."""
        if owner_kind is not None:
            return self._counts[(kind, owner_kind)]
        return sum(n for (each, _), n in self._counts.items() if each == kind)

    def keys(self, kind: str = EXPIRY) -> list[GrantKey]:
        return [key for each, key in self._deadlines if each == kind]

    def deadlines(self, kind: str = EXPIRY) -> dict[GrantKey, datetime]:
        """A snapshot of the waiting deadlines of `kind`, by owner."""
        return {key: at for (each, key), at in self._deadlines.items() if each == kind}

    def deadline(self, key: GrantKey, kind: str = EXPIRY) -> datetime | None:
        return self._deadlines.get((kind, key))

    def _set(self, kind: str, key: GrantKey, deadline: datetime) -> None:
        if (kind, key) not in self._deadlines:
            self._counts[(kind, key.kind)] += 1
        self._deadlines[(kind, key)] = deadline

    def _pop(self, kind: str, key: GrantKey) -> datetime | None:
        deadline = self._deadlines.pop((kind, key), None)
        if deadline is not None:
            self._counts[(kind, key.kind)] -= 1
        return deadline

    def on(self, kind: str, callback: OnDue) -> None:
        """Call `callback` when a deadline of `kind` falls due."""
        self._callbacks[kind] = callback

    def schedule(self, key: GrantKey, deadline: datetime, kind: str = EXPIRY) -> None:
        """Call back for `key` at `deadline`; a later call for the same key and kind replaces
        the deadline."""
        if kind not in self._callbacks:
            raise ValueError(f"no callback for deadlines of kind {kind!r}")
        if self._deadlines.get((kind, key)) == deadline:
            return
        self._set(kind, key, deadline)
        heapq.heappush(self._heap, (deadline, kind, key))
        if self._heap[0] == (deadline, kind, key):
            self._wake.set()
        self._on_change()

    def cancel(self, key: GrantKey, kind: str = EXPIRY) -> None:
        if self._pop(kind, key) is not None:
            self._on_change()

    def cancel_all(self, key: GrantKey) -> None:
        """Forget every deadline of `key`, whatever its kind: the owner is gone."""
        for kind in list(self._callbacks):
            self._pop(kind, key)
        self._on_change()

    def due_by(self, until: datetime, limit: int) -> int:
        """How many deadlines fall due by `until`, counting at most `limit` (a look at the
        `limit` earliest, not a walk over every deadline)."""
        return sum(
            1
            for deadline, kind, key in heapq.nsmallest(limit, self._heap)
            if deadline <= until and self._deadlines.get((kind, key)) == deadline
        )

    def running(self) -> int:
        """Deadlines due and not yet handled: those being handled and those waiting for a
        slot."""
        return len(self._running)

    def earliest(self) -> datetime | None:
        """The next deadline of any kind, or None."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def busy(self, within: timedelta) -> bool:
        """Whether a deadline is being handled or falls due within `within` from now. One
        already past is not counted: the running scheduler hands it over at once, and one
        that is not running would otherwise keep everyone waiting."""
        self._drop_stale()
        # The deadline asking (an end checking itself before it is written) is not "others".
        if self._running - {asyncio.current_task()}:
            return True
        if not self._heap:
            return False
        ahead = self._heap[0][0] - self._clock()
        return timedelta(0) <= ahead <= within

    async def run(self) -> None:
        try:
            while True:
                await self._wait_for_next()
                self._dispatch_due()
        finally:
            for task in list(self._running):
                task.cancel()

    async def _wait_for_next(self) -> None:
        self._drop_stale()
        self._wake.clear()
        if not self._heap:
            await self._wake.wait()
            return
        delay = (self._heap[0][0] - self._clock()).total_seconds()
        if delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)

    def _drop_stale(self) -> None:
        while self._heap:
            deadline, kind, key = self._heap[0]
            if self._deadlines.get((kind, key)) == deadline:
                return
            heapq.heappop(self._heap)

    def _dispatch_due(self) -> None:
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            deadline, kind, key = heapq.heappop(self._heap)
            if self._deadlines.get((kind, key)) != deadline:
                continue
            self._pop(kind, key)
            task = asyncio.create_task(self._revoke(key, deadline, kind))
            self._running.add(task)
            task.add_done_callback(self._settled)
        self._on_change()

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._on_settled()

    async def _revoke(self, key: GrantKey, deadline: datetime, kind: str = EXPIRY) -> None:
        async with self._slots:
            try:
                await self._callbacks[kind](key, deadline)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A failed revocation is retried, never dropped: access must still end.
                logger.exception("Deadline %s of %s failed; retrying.", kind, key.describe())
                if (kind, key) not in self._deadlines:
                    self.schedule(key, max(deadline, self._clock() + RETRY_DELAY), kind)
