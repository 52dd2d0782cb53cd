"""The reaper: bindings deleted at their deadline from a thread and event loop of their own.

Everything else the operator does — kopf's handling of every watch event, status writes,
Events, checks, the start-up re-listing of every owner — runs on one event loop. Under load a
deadline's timer there waits behind thousands of ready callbacks, and every step of a delete
(send, read the answer) waits behind them again: a delete falls due on time and is late by as
long as the loop is busy. The reaper keeps the deadlines of bindings whose delete needs nothing
read first and deletes them from its own loop and its own connections, on its own thread. It
shares only the interpreter lock with the rest, which a waiting thread gets within the switch
interval (5 ms), so its deletes no longer queue behind the operator's other work.

Its connections are shared by two kinds of delete: those at a deadline, and the batches of
`delete_now` (start-up's overdue bindings, thousands after an outage). Each waits for a
connection at a gate (`PriorityGate`) that lets a deadline's delete in before any batch's, so a
grant falling due while the backlog is deleted waits for the next free connection, not for the
whole backlog; the backlog keeps every connection the deadlines do not need.

When more deletes are due than it has connections (an expiry wave, start-up's backlog) it is
*pressed*: it holds the garbage collector's pauses off (`lapse.heap.hold`) and says so on the
operator's loop (`on_pressure`), where the records of ends wait until it has caught up. A
delete then competes with nothing the operator could put off, neither for the API server nor
for the interpreter lock.

It knows nothing of owners or records: it is told what to delete when (`reap`), or not to
(`spare`), and reports each delete back on the operator's loop, where the end is recorded. Its
state lives on its own loop; the operator's side only posts to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from lapse import heap
from lapse.core.grants import GrantKey
from lapse.core.models import BindingRef
from lapse.deletions import Deletions, Sender
from lapse.scheduler import Clock, ExpiryScheduler

logger = logging.getLogger(__name__)

# Deletes in flight at once: about what kube-apiserver takes before more only queue.
CONCURRENCY = 64
# Who goes first at the gate to a connection: lower first.
AT_DEADLINE = 0
BACKLOG = 1
# Pressed once at least this many deletes per connection are due and not done, relieved when
# down to the lower share: apart enough that the end of a wave does not flap between the two.
PRESSED_FROM = 1.0
RELIEVED_AT = 0.125
# Connections for a wave are opened ahead: at the instant 1,000 grants fell due, opening 64 new
# connections (TCP and TLS) delayed the first delete by 0.17 s. Every WARM_EVERY seconds the
# reaper looks WARM_AHEAD ahead; at least WARM_FROM deletes coming, and none made for
# IDLE_FOR seconds (the client keeps an idle connection 15 s), it opens as many as are coming.
WARM_AHEAD = timedelta(seconds=2)
WARM_EVERY = 0.5
WARM_FROM = 16
IDLE_FOR = 10.0


class PriorityGate:
    """At most `capacity` holders at once; waiters are let in by priority (lower first), then
    in the order they came. Used from one event loop."""

    def __init__(self, capacity: int) -> None:
        self._free = capacity
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            # Let in just as it was cancelled: the slot goes to the next waiter.
            if future.done() and not future.cancelled():
                self._release()
            else:
                future.cancel()
            raise

    def _release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1


class Deleter(Protocol):
    async def delete_binding(self, ref: BindingRef) -> bool: ...
    async def warm_revocations(self, connections: int) -> int: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class Reaped:
    """What the reaper did for one `reap`: the ticket it was given, the deadline, when the
    last binding went and how many were still there to delete."""

    key: GrantKey
    ticket: int
    deadline: datetime
    deleted_at: datetime
    deleted: int


OnReaped = Callable[[Reaped], None]
# Told on the operator's loop when the reaper becomes pressed (True) and relieved (False).
OnPressure = Callable[[bool], None]


class Reaper:
    def __init__(
        self,
        connect: Callable[[], Deleter],
        *,
        clock: Clock,
        on_reaped: OnReaped,
        deletions: Deletions,
        concurrency: int = CONCURRENCY,
        on_pressure: OnPressure | None = None,
    ) -> None:
        self._connect = connect
        self._clock = clock
        self._on_reaped = on_reaped
        self._on_pressure = on_pressure
        # Reaper thread only: whether more deletes are due than connections are free, and the
        # deletes of `delete_now` batches not done yet.
        self._pressed = False
        self._batched = 0
        # Reaper loop's clock: when a delete or a warm-up last used the connections.
        self._used_at = float("-inf")
        self._concurrency = concurrency
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        # Posted before the thread runs; replayed in order once it does.
        self._backlog: list[Callable[[], None]] = []
        # Read from the operator's thread (see busy): plain values, replaced whole.
        self._earliest: datetime | None = None
        self._in_flight = 0
        # Reaper thread only.
        self._entries: dict[GrantKey, tuple[int, tuple[BindingRef, ...]]] = {}
        self._scheduler: ExpiryScheduler | None = None
        self._client: Deleter | None = None
        self._stopping: asyncio.Event | None = None
        # Deletes under way on the reaper's loop: a second call for one waits for the first.
        self._sender = Sender(deletions)
        # Reaper thread only: made on its loop.
        self._gate: PriorityGate | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start the thread; called on the operator's loop, where reports are delivered."""
        if self._thread is not None:
            return
        self._main = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run_thread, name="lapse-reaper", daemon=True)
        self._thread.start()
        self._ready.wait()

    def reap(
        self, key: GrantKey, ticket: int, deadline: datetime, refs: Sequence[BindingRef]
    ) -> None:
        """Delete `refs` at `deadline` (replacing whatever was asked for `key` before) and
        report it with `ticket`."""
        frozen = tuple(refs)
        self._post(lambda: self._reap_here(key, ticket, deadline, frozen))

    def spare(self, key: GrantKey) -> None:
        """Forget `key`: its end is someone else's now. A delete already under way finishes
        (and is reported); a UID precondition keeps it from touching anything else."""
        self._post(lambda: self._spare_here(key))

    def busy(self, within: timedelta) -> bool:
        """Whether a delete is under way or falls due within `within` (or is overdue)."""
        if self._in_flight:
            return True
        earliest = self._earliest
        return earliest is not None and earliest - self._clock() <= within

    async def delete_now(self, refs: Sequence[BindingRef]) -> list[bool]:
        """Delete `refs` at once from the reaper's loop and connections, as many at a time as
        its deadlines; whether each was still there. Every delete is tried even when another
        fails; then the first failure is raised."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the reaper is not running")
        future = asyncio.run_coroutine_threadsafe(self._delete_all(tuple(refs)), loop)
        return await asyncio.wrap_future(future)

    async def stop(self) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        loop.call_soon_threadsafe(stopping.set)
        await asyncio.to_thread(thread.join)
        self._thread = None

    # The reaper's own thread -----------------------------------------------------------

    def _post(self, command: Callable[[], None]) -> None:
        if self._loop is None:
            self._backlog.append(command)
            return
        self._loop.call_soon_threadsafe(command)

    def _run_thread(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(loop))
        except Exception:
            logger.exception("The reaper stopped; deadlines fall back to the operator's loop.")
        finally:
            loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        client = self._client = self._connect()
        self._gate = PriorityGate(self._concurrency)
        self._scheduler = ExpiryScheduler(
            self._due,
            self._clock,
            concurrency=self._concurrency,
            on_change=self._changed,
            on_settled=self._weigh,
        )
        self._stopping = asyncio.Event()
        for command in self._backlog:
            command()
        self._backlog.clear()
        self._loop = loop
        self._ready.set()
        runner = asyncio.create_task(self._scheduler.run())
        warmer = asyncio.create_task(self._keep_warm(client))
        try:
            await self._stopping.wait()
        finally:
            runner.cancel()
            warmer.cancel()
            await asyncio.gather(runner, warmer, return_exceptions=True)
            await client.close()
            self._press(False)
            heap.release()
        self._client = None

    def _reap_here(
        self, key: GrantKey, ticket: int, deadline: datetime, refs: tuple[BindingRef, ...]
    ) -> None:
        assert self._scheduler is not None
        self._entries[key] = (ticket, refs)
        self._scheduler.schedule(key, deadline)

    def _spare_here(self, key: GrantKey) -> None:
        assert self._scheduler is not None
        if self._entries.pop(key, None) is not None:
            self._scheduler.cancel(key)

    def _changed(self) -> None:
        assert self._scheduler is not None
        self._earliest = self._scheduler.earliest()
        self._weigh()

    async def _due(self, key: GrantKey, deadline: datetime) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        ticket, refs = entry
        self._in_flight += 1
        try:
            deleted = 0
            for ref in refs:
                if await self._delete(ref, AT_DEADLINE):
                    deleted += 1
        finally:
            self._in_flight -= 1
        deleted_at = self._clock()
        # Failed deletes raise above and are retried by the scheduler with the entry kept.
        if self._entries.get(key) == entry:
            del self._entries[key]
        report = Reaped(key, ticket, deadline, deleted_at, deleted)
        assert self._main is not None
        try:
            self._main.call_soon_threadsafe(self._on_reaped, report)
        except RuntimeError:
            # The operator's loop is closing: a restart records the end (no binding, owner due).
            logger.info("Deleted the bindings of %s as the operator stopped.", key.describe())

    async def _delete_all(self, refs: tuple[BindingRef, ...]) -> list[bool]:
        slots = asyncio.Semaphore(self._concurrency)
        # This batch's deletes not done yet: a cancelled batch (its caller gone) must not
        # leave the reaper pressed by deletes that will never run.
        waiting = len(refs)

        async def one(ref: BindingRef) -> bool:
            nonlocal waiting
            try:
                async with slots:
                    return await self._delete(ref, BACKLOG)
            finally:
                waiting -= 1
                self._batched -= 1
                self._weigh()

        self._batched += waiting
        self._weigh()
        self._in_flight += 1
        try:
            results = await asyncio.gather(*(one(ref) for ref in refs), return_exceptions=True)
        finally:
            self._in_flight -= 1
            self._batched -= waiting
            self._weigh()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [bool(result) for result in results]

    async def _delete(self, ref: BindingRef, priority: int) -> bool:
        """Delete `ref` unless it is known gone, once however many ask (a grant handed over
        again while its delete is under way); True if this delete removed it."""
        client, gate = self._client, self._gate
        assert client is not None and gate is not None

        async def send() -> bool:
            async with gate.slot(priority):
                self._used_at = asyncio.get_running_loop().time()
                return await client.delete_binding(ref)

        uid = ref.uid
        if not uid:
            return await send()
        return await self._sender.delete(uid, send)

    async def _keep_warm(self, client: Deleter) -> None:
        """Open the connections of a wave before it falls due (see WARM_AHEAD)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WARM_EVERY)
            scheduler = self._scheduler
            if scheduler is None or loop.time() - self._used_at < IDLE_FOR:
                continue
            coming = scheduler.due_by(self._clock() + WARM_AHEAD, self._concurrency)
            if coming < WARM_FROM:
                continue
            self._used_at = loop.time()
            opened = await client.warm_revocations(coming)
            logger.debug("Opened %d of %d connections ahead of their deletes.", opened, coming)

    def _weigh(self) -> None:
        """Pressed or relieved, by how many deletes are due and not done."""
        scheduler = self._scheduler
        backlog = self._batched + (scheduler.running() if scheduler is not None else 0)
        if not self._pressed and backlog >= max(1, self._concurrency * PRESSED_FROM):
            self._press(True)
        elif self._pressed and backlog <= self._concurrency * RELIEVED_AT:
            self._press(False)
        if not backlog and not self._pressed:
            # The collection the hold put off takes what those seconds left (a few hundred
            # milliseconds after a wave of 1,000): only once no delete is due.
            heap.release()

    def _press(self, pressed: bool) -> None:
        if pressed == self._pressed:
            return
        self._pressed = pressed
        if pressed:
            heap.hold()
        main, report = self._main, self._on_pressure
        if main is None or report is None:
            return
        with contextlib.suppress(RuntimeError):
            # The operator's loop is closing: nothing waits for the news any more.
            main.call_soon_threadsafe(report, pressed)
