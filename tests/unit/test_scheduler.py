"""The expiry scheduler on a real event loop: order, early wake-up, cancellation, retries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from lapse.core.grants import GrantKey
from lapse.scheduler import ExpiryScheduler


def key(name: str) -> GrantKey:
    return GrantKey("AccessRequest", "ns", name, f"uid-{name}")


def now() -> datetime:
    return datetime.now(UTC)


def test_fires_in_deadline_order_and_on_time() -> None:
    fired: list[tuple[str, float]] = []

    async def on_due(k: GrantKey, deadline: datetime) -> None:
        fired.append((k.name, (now() - deadline).total_seconds()))

    async def scenario() -> None:
        scheduler = ExpiryScheduler(on_due, now)
        task = asyncio.create_task(scheduler.run())
        scheduler.schedule(key("late"), now() + timedelta(milliseconds=300))
        await asyncio.sleep(0.05)
        # An earlier deadline added while the scheduler sleeps must wake it.
        scheduler.schedule(key("early"), now() + timedelta(milliseconds=100))
        scheduler.schedule(key("cancelled"), now() + timedelta(milliseconds=150))
        scheduler.cancel(key("cancelled"))
        await asyncio.sleep(0.5)
        task.cancel()

    asyncio.run(scenario())
    assert [name for name, _ in fired] == ["early", "late"]
    print(f"\nlags: {fired}")
    assert all(0 <= lag < 0.1 for _, lag in fired)


def test_rescheduling_replaces_the_deadline() -> None:
    fired: list[str] = []

    async def on_due(k: GrantKey, deadline: datetime) -> None:
        fired.append(k.name)

    async def scenario() -> None:
        scheduler = ExpiryScheduler(on_due, now)
        task = asyncio.create_task(scheduler.run())
        scheduler.schedule(key("a"), now() + timedelta(milliseconds=50))
        scheduler.schedule(key("a"), now() + timedelta(seconds=60))
        await asyncio.sleep(0.2)
        assert len(scheduler) == 1
        task.cancel()

    asyncio.run(scenario())
    assert fired == []


def test_failed_revocation_is_retried() -> None:
    attempts: list[datetime] = []

    async def on_due(k: GrantKey, deadline: datetime) -> None:
        attempts.append(now())
        if len(attempts) == 1:
            raise RuntimeError("API unavailable")

    async def scenario() -> None:
        scheduler = ExpiryScheduler(on_due, now)
        task = asyncio.create_task(scheduler.run())
        scheduler.schedule(key("a"), now())
        await asyncio.sleep(1.6)
        task.cancel()

    asyncio.run(scenario())
    assert len(attempts) == 2


def test_counts_follow_schedule_cancel_and_dispatch() -> None:
    async def on_due(k: GrantKey, deadline: datetime) -> None:
        return None

    async def scenario() -> None:
        scheduler = ExpiryScheduler(on_due, now)
        scheduler.on("warning", on_due)
        glass = GrantKey("BreakGlass", None, "g", "uid-g")
        far = now() + timedelta(seconds=60)
        scheduler.schedule(key("a"), far)
        scheduler.schedule(key("a"), far + timedelta(seconds=1))
        scheduler.schedule(key("b"), far)
        scheduler.schedule(key("b"), far, "warning")
        scheduler.schedule(glass, far)
        assert (len(scheduler), scheduler.count(owner_kind="BreakGlass")) == (3, 1)
        assert scheduler.count("warning") == 1
        assert scheduler.deadlines() == {
            key("a"): far + timedelta(seconds=1),
            key("b"): far,
            glass: far,
        }
        scheduler.cancel(key("a"))
        scheduler.cancel(key("a"))
        scheduler.cancel_all(key("b"))
        assert (len(scheduler), scheduler.count("warning")) == (1, 0)
        scheduler.schedule(key("c"), now() - timedelta(seconds=1))
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0.05)
        assert scheduler.count(owner_kind="AccessRequest") == 0
        assert len(scheduler) == 1
        task.cancel()

    asyncio.run(scenario())


def test_busy_while_a_deadline_is_handled_or_falls_due_soon() -> None:
    """What revocation checks wait for: a deadline being handled or due within the window;
    not one further ahead, and not one already past that no running scheduler hands over."""
    release = asyncio.Event()

    async def on_due(k: GrantKey, deadline: datetime) -> None:
        await release.wait()

    async def scenario() -> None:
        fixed = now()
        scheduler = ExpiryScheduler(on_due, lambda: fixed)
        window = timedelta(seconds=1)
        assert not scheduler.busy(window)
        scheduler.schedule(key("later"), fixed + timedelta(seconds=5))
        assert not scheduler.busy(window)
        scheduler.schedule(key("past"), fixed - timedelta(seconds=5))
        assert not scheduler.busy(window)
        scheduler.cancel(key("past"))
        scheduler.schedule(key("soon"), fixed + timedelta(milliseconds=500))
        assert scheduler.busy(window)
        scheduler.cancel(key("soon"))
        assert not scheduler.busy(window)
        scheduler.schedule(key("now"), fixed)
        task = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0.05)
        assert scheduler.busy(window)  # handed over, still being handled
        release.set()
        await asyncio.sleep(0.05)
        assert not scheduler.busy(window)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
