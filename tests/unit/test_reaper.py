"""The reaper deletes from its own thread: a busy operator loop does not hold up a delete.

The deleter here stands in for the reaper's own API client only; what it is asked to delete,
when, on which thread, and what reaches the operator's loop afterwards is the reaper's own work.
The e2e and reliability suites run the same reaper against real API servers.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from lapse.core.grants import GrantKey
from lapse.core.models import BindingRef
from lapse.deletions import Deletions
from lapse.reaper import AT_DEADLINE, BACKLOG, Deleter, PriorityGate, Reaped, Reaper

KEY = GrantKey("AccessRequest", "payments", "fix", "uid-fix")
OTHER = GrantKey("AccessRequest", "payments", "other", "uid-other")
REF = BindingRef(kind="RoleBinding", name="lapse-fix-1a2b3c", namespace="payments", uid="b-1")
OTHER_REF = BindingRef(kind="RoleBinding", name="lapse-other-4d5e", namespace="payments", uid="b-2")


class RecordingDeleter:
    """Says where and when each delete ran; `blocked` is set while the operator's loop is
    stuck in work of its own."""

    def __init__(self, blocked: threading.Event) -> None:
        self.blocked = blocked
        self.deletes: list[tuple[BindingRef, str, bool]] = []
        # (connections asked for, deletes made before)
        self.warmed: list[tuple[int, int]] = []
        self.closed = False

    async def delete_binding(self, ref: BindingRef) -> bool:
        self.deletes.append((ref, threading.current_thread().name, self.blocked.is_set()))
        return True

    async def warm_revocations(self, connections: int) -> int:
        self.warmed.append((connections, len(self.deletes)))
        return connections

    async def close(self) -> None:
        self.closed = True


def now() -> datetime:
    return datetime.now(UTC)


def running_reaper(
    deleter: Deleter,
    on_reaped: Callable[[Reaped], None],
    *,
    deletions: Deletions | None = None,
    **options: Any,
) -> Reaper:
    """A running reaper deleting through `deleter` (called on the operator's loop)."""
    reaper = Reaper(
        lambda: deleter,
        clock=now,
        on_reaped=on_reaped,
        deletions=deletions or Deletions(),
        **options,
    )
    reaper.start()
    return reaper


class Reports(list[Reaped]):
    """What reached the operator's loop; `arrived` is set on each report."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    def __call__(self, report: Reaped) -> None:
        self.append(report)
        self.arrived.set()

    async def first(self) -> None:
        async with asyncio.timeout(30):
            await self.arrived.wait()

    async def all(self, count: int) -> None:
        while len(self) < count:
            self.arrived.clear()
            await self.arrived.wait()


def test_a_delete_goes_at_its_deadline_while_the_operator_loop_is_busy() -> None:
    blocked = threading.Event()
    deleter = RecordingDeleter(blocked)
    reports = Reports()
    deletions = Deletions()

    async def scenario() -> None:
        reaper = running_reaper(deleter, reports, deletions=deletions)
        reaper.reap(KEY, 7, now() + timedelta(milliseconds=100), [REF])
        # The operator's loop does three seconds of work of its own without yielding.
        blocked.set()
        started = time.monotonic()
        # Blocking on purpose: the loop is stuck, as under a flood of watch events.
        while time.monotonic() - started < 3.0 and not deleter.deletes:
            time.sleep(0.01)  # noqa: ASYNC251
        time.sleep(0.2)  # noqa: ASYNC251
        blocked.clear()
        await reports.first()
        await reaper.stop()

    asyncio.run(scenario())
    ((ref, thread, during_block),) = deleter.deletes
    assert ref == REF
    assert thread == "lapse-reaper"
    assert during_block, "the delete waited for the operator's loop"
    # Marked as Lapse's own before it went, so the binding watch does not call it an admin's.
    assert deletions.is_gone("b-1")
    assert deletions.observed("b-1")
    (report,) = reports
    assert (report.key, report.ticket, report.deleted) == (KEY, 7, 1)
    assert deleter.closed


def test_a_spared_grant_is_not_deleted_and_a_later_reap_replaces_an_earlier_one() -> None:
    deleter = RecordingDeleter(threading.Event())
    reports = Reports()

    async def scenario() -> None:
        reaper = Reaper(lambda: deleter, clock=now, on_reaped=reports, deletions=Deletions())
        # Asked before it runs (a standby becoming leader): kept in order until it starts.
        soon = now() + timedelta(milliseconds=200)
        reaper.reap(KEY, 1, soon, [REF])
        reaper.reap(OTHER, 2, soon, [OTHER_REF])
        reaper.spare(OTHER)
        reaper.reap(KEY, 3, soon + timedelta(milliseconds=100), [REF])
        reaper.start()
        assert reaper.busy(timedelta(seconds=5))
        await reports.first()
        await asyncio.sleep(0.5)
        assert not reaper.busy(timedelta(seconds=5))
        await reaper.stop()

    asyncio.run(scenario())
    assert [ref for ref, _, _ in deleter.deletes] == [REF]
    assert [(r.key, r.ticket) for r in reports] == [(KEY, 3)]


def test_a_failed_delete_is_tried_again_and_reported_once() -> None:
    class Flaky(RecordingDeleter):
        async def delete_binding(self, ref: BindingRef) -> bool:
            await super().delete_binding(ref)
            if len(self.deletes) == 1:
                raise OSError("connection reset")
            return True

    deleter = Flaky(threading.Event())
    reports = Reports()

    async def scenario() -> None:
        reaper = running_reaper(deleter, reports)
        reaper.reap(KEY, 5, now(), [REF])
        await reports.first()
        await asyncio.sleep(0.2)
        await reaper.stop()

    asyncio.run(scenario())
    assert len(deleter.deletes) == 2
    assert [(r.key, r.ticket, r.deleted) for r in reports] == [(KEY, 5, 1)]


def test_a_binding_is_deleted_once_however_often_it_is_handed_over() -> None:
    """A restart learns of a binding from its own annotation, then from its owner: the grant
    is handed to the reaper again while the first delete is under way. One request, not two;
    and a binding the operator's loop deleted already is not asked for again."""

    class Slow(RecordingDeleter):
        async def delete_binding(self, ref: BindingRef) -> bool:
            await super().delete_binding(ref)
            await asyncio.sleep(0.3)
            return True

    deleter = Slow(threading.Event())
    reports = Reports()
    deletions = Deletions()
    deletions.start("b-2")
    deletions.gone("b-2")

    async def scenario() -> None:
        reaper = running_reaper(deleter, reports, deletions=deletions)
        reaper.reap(KEY, 1, now(), [REF])
        await asyncio.sleep(0.1)
        reaper.reap(KEY, 2, now(), [REF])
        reaper.reap(OTHER, 3, now(), [OTHER_REF])
        async with asyncio.timeout(30):
            while len(reports) < 3:
                reports.arrived.clear()
                await reports.arrived.wait()
        await reaper.stop()

    asyncio.run(scenario())
    assert [ref for ref, _, _ in deleter.deletes] == [REF]
    assert sorted((r.ticket, r.deleted) for r in reports) == [(1, 1), (2, 0), (3, 0)]


def test_a_deadline_during_a_backlog_takes_the_next_free_connection() -> None:
    """Start-up deletes thousands of overdue bindings in pages, all through the reaper's
    connections; a grant falling due meanwhile is deleted with the next connection that frees
    up, not after every page queued before it."""
    connections = 4

    class Pooled(RecordingDeleter):
        """As the API client: `connections` requests at once, the rest queue in order."""

        def __init__(self, blocked: threading.Event) -> None:
            super().__init__(blocked)
            self.pool: asyncio.Semaphore | None = None
            self.under_way = threading.Event()  # set once 20 deletes went

        async def delete_binding(self, ref: BindingRef) -> bool:
            self.pool = self.pool or asyncio.Semaphore(connections)
            async with self.pool:
                await super().delete_binding(ref)
                if len(self.deletes) >= 20:
                    self.under_way.set()
                await asyncio.sleep(0.005)
                return True

    deleter = Pooled(threading.Event())
    reports = Reports()
    pages = [
        [
            BindingRef(
                kind="RoleBinding", name=f"old-{p}-{i}", namespace="payments", uid=f"{p}-{i}"
            )
            for i in range(50)
        ]
        for p in range(8)
    ]

    async def scenario() -> tuple[int, list[list[bool]]]:
        reaper = running_reaper(deleter, reports, concurrency=connections)
        backlog = [asyncio.create_task(reaper.delete_now(page)) for page in pages]
        assert await asyncio.to_thread(deleter.under_way.wait, 30)
        reaper.reap(KEY, 1, now(), [REF])
        await reports.first()
        results = await asyncio.gather(*backlog)
        await reaper.stop()
        return [ref for ref, _, _ in deleter.deletes].index(REF), results

    position, results = asyncio.run(scenario())
    assert all(all(page) for page in results), "every overdue binding deleted"
    # Asked for after about 20 of 400 went: in at the next free connection, give or take the
    # few that were let in while it was being scheduled.
    assert position < 20 + 3 * connections, position


def test_the_gate_lets_the_urgent_in_first_and_loses_no_slot_to_a_cancelled_waiter() -> None:
    async def scenario() -> list[str]:
        gate = PriorityGate(1)
        order: list[str] = []
        held = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            async with gate.slot(BACKLOG):
                held.set()
                await release.wait()

        async def waiter(name: str, priority: int) -> None:
            async with gate.slot(priority):
                order.append(name)

        first = asyncio.create_task(holder())
        await held.wait()
        tasks = [asyncio.create_task(waiter(f"backlog-{i}", BACKLOG)) for i in range(3)]
        cancelled = asyncio.create_task(waiter("cancelled", AT_DEADLINE))
        urgent = asyncio.create_task(waiter("urgent", AT_DEADLINE))
        await asyncio.sleep(0)
        cancelled.cancel()
        release.set()
        await asyncio.gather(first, urgent, *tasks)
        # The slot is free again: someone new gets it at once.
        async with asyncio.timeout(1), gate.slot(BACKLOG):
            order.append("after")
        return order

    assert asyncio.run(scenario()) == ["urgent", "backlog-0", "backlog-1", "backlog-2", "after"]


def test_a_wave_presses_the_reaper_until_it_has_caught_up() -> None:
    """More deletes due than connections: the garbage collector's pauses are held off and the
    operator's loop is told, so the records of ends wait; once the reaper has caught up, both
    are let go."""
    connections = 4

    class Slow(RecordingDeleter):
        def __init__(self) -> None:
            super().__init__(threading.Event())
            self.collecting: list[bool] = []

        async def delete_binding(self, ref: BindingRef) -> bool:
            self.collecting.append(gc.isenabled())
            await asyncio.sleep(0.01)
            return await super().delete_binding(ref)

    deleter = Slow()
    reports = Reports()
    told: list[tuple[bool, bool]] = []
    keys = [GrantKey("AccessRequest", "payments", f"g{i}", f"uid-{i}") for i in range(40)]

    async def scenario() -> None:
        relieved = asyncio.Event()

        def tell(pressed: bool) -> None:
            # Told on this loop, with whether collections ran then.
            told.append((pressed, gc.isenabled()))
            if not pressed:
                relieved.set()

        reaper = running_reaper(deleter, reports, concurrency=connections, on_pressure=tell)
        due = now()
        for i, key in enumerate(keys):
            ref = BindingRef(kind="RoleBinding", name=f"b{i}", namespace="payments", uid=f"b-{i}")
            reaper.reap(key, i, due, [ref])
        async with asyncio.timeout(30):
            await relieved.wait()
            await reports.all(len(keys))
        await reaper.stop()

    assert gc.isenabled()
    asyncio.run(scenario())
    assert len(deleter.deletes) == len(keys)
    assert told == [(True, False), (False, False)] or told == [(True, False), (False, True)]
    # Collections held while the backlog lasted; running again once nothing is in flight.
    assert deleter.collecting.count(False) >= len(keys) - connections
    assert gc.isenabled()


def test_a_few_deletes_at_once_do_not_press_the_reaper() -> None:
    deleter = RecordingDeleter(threading.Event())
    reports = Reports()
    told: list[bool] = []

    async def scenario() -> None:
        reaper = running_reaper(deleter, reports, on_pressure=told.append)
        reaper.reap(KEY, 1, now(), [REF])
        reaper.reap(OTHER, 2, now(), [OTHER_REF])
        async with asyncio.timeout(30):
            await reports.all(2)
        await reaper.stop()

    asyncio.run(scenario())
    assert told == []
    assert gc.isenabled()


def test_the_connections_of_a_wave_are_opened_before_it_falls_due() -> None:
    deleter = RecordingDeleter(threading.Event())
    reports = Reports()
    keys = [GrantKey("AccessRequest", "payments", f"w{i}", f"uid-w{i}") for i in range(30)]

    async def scenario() -> None:
        reaper = running_reaper(deleter, reports)
        due = now() + timedelta(seconds=1.5)
        for i, key in enumerate(keys):
            ref = BindingRef(kind="RoleBinding", name=f"w{i}", namespace="payments", uid=f"w-{i}")
            reaper.reap(key, i, due, [ref])
        async with asyncio.timeout(30):
            await reports.all(len(keys))
        await reaper.stop()

    asyncio.run(scenario())
    # Once, before the first delete, as many as were coming.
    assert deleter.warmed == [(len(keys), 0)]


def test_a_few_deletes_coming_open_nothing_ahead() -> None:
    deleter = RecordingDeleter(threading.Event())
    reports = Reports()

    async def scenario() -> None:
        reaper = running_reaper(deleter, reports)
        reaper.reap(KEY, 1, now() + timedelta(seconds=1.5), [REF])
        async with asyncio.timeout(30):
            await reports.all(1)
        await reaper.stop()

    asyncio.run(scenario())
    assert deleter.warmed == []


def test_a_cancelled_batch_leaves_the_reaper_relieved() -> None:
    """Start-up's batch given up half-way (its caller stopped): the deletes it will never make
    must not keep the reaper pressed, nor collections held off."""
    release = threading.Event()

    class Stuck(RecordingDeleter):
        async def delete_binding(self, ref: BindingRef) -> bool:
            await asyncio.to_thread(release.wait, 30)
            return await super().delete_binding(ref)

    deleter = Stuck(threading.Event())
    told: list[bool] = []
    refs = [
        BindingRef(kind="RoleBinding", name=f"old-{i}", namespace="payments", uid=f"old-{i}")
        for i in range(10)
    ]

    async def scenario() -> None:
        relieved, pressed_now = asyncio.Event(), asyncio.Event()

        def tell(pressed: bool) -> None:
            told.append(pressed)
            (pressed_now if pressed else relieved).set()

        reaper = running_reaper(deleter, Reports(), concurrency=2, on_pressure=tell)
        batch = asyncio.create_task(reaper.delete_now(refs))
        async with asyncio.timeout(30):
            await pressed_now.wait()
            assert not gc.isenabled()
            batch.cancel()
            release.set()
            await relieved.wait()
        await reaper.stop()

    asyncio.run(scenario())
    assert told == [True, False]
    assert gc.isenabled()
