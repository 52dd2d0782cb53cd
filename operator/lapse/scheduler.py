"""The expiry scheduler: one task, one heap, woken for the earliest deadline.

A timer per grant would cost a task each and drift under load; polling would revoke late by up
to its interval. Instead one task sleeps exactly until the earliest `expiresAt`, re-checks the
clock on waking (sleeps can end early), and hands every due grant to the revoke callback. Adding
an earlier deadline wakes it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from lapse.core.grants import GrantKey

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
OnDue = Callable[[GrantKey, datetime], Awaitable[None]]

RETRY_DELAY = timedelta(seconds=1)


class ExpiryScheduler:
    def __init__(
        self,
        on_due: OnDue,
        clock: Clock,
        concurrency: int = 64,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._on_due = on_due
        self._clock = clock
        self._heap: list[tuple[datetime, GrantKey]] = []
        # The current deadline per key; heap entries that disagree are stale and skipped.
        self._deadlines: dict[GrantKey, datetime] = {}
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._on_change = on_change or (lambda: None)

    def __len__(self) -> int:
        return len(self._deadlines)

    def __contains__(self, key: GrantKey) -> bool:
        return key in self._deadlines

    def keys(self) -> list[GrantKey]:
        return list(self._deadlines)

    def schedule(self, key: GrantKey, deadline: datetime) -> None:
        """Revoke `key` at `deadline`; a later call for the same key replaces the deadline."""
        if self._deadlines.get(key) == deadline:
            return
        self._deadlines[key] = deadline
        heapq.heappush(self._heap, (deadline, key))
        if self._heap[0] == (deadline, key):
            self._wake.set()
        self._on_change()

    def cancel(self, key: GrantKey) -> None:
        if self._deadlines.pop(key, None) is not None:
            self._on_change()

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
        while self._heap and self._deadlines.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)

    def _dispatch_due(self) -> None:
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            deadline, key = heapq.heappop(self._heap)
            if self._deadlines.get(key) != deadline:
                continue
            del self._deadlines[key]
            task = asyncio.create_task(self._revoke(key, deadline))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        self._on_change()

    async def _revoke(self, key: GrantKey, deadline: datetime) -> None:
        async with self._slots:
            try:
                await self._on_due(key, deadline)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A failed revocation is retried, never dropped: access must still end.
                logger.exception("Revoking %s failed; retrying.", key.describe())
                if key not in self._deadlines:
                    self.schedule(key, max(deadline, self._clock() + RETRY_DELAY))
