"""What each active grant's end deletes, when, and from where: the reaper or the operator's loop.

An expiry deletes before it reads (docs/ha.md, "Deadlines first"), so the grant machinery keeps,
per active grant, its expiry and its bindings' references, and which grants must read their
owner first (an extension continues them). Those that need nothing read are handed to the
reaper (`lapse.reaper`), which deletes from its own thread; the operator's scheduler keeps
every deadline too, and deletes itself when the reaper has not reported in time. At start-up,
bindings are known from their own expiry annotation before their owners are read.

This module knows no kind and records nothing: the grant machinery (`lapse.grantor`) gives it
the calls that delete, record an end and expire a grant the long way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from lapse import metrics
from lapse.core.grants import GrantKey
from lapse.core.models import BindingRef
from lapse.deletions import Deletions
from lapse.reaper import Deleter, Reaped, Reaper
from lapse.scheduler import Clock, ExpiryScheduler, OnDue

logger = logging.getLogger(__name__)

# A binding's own expiry, known from its annotation before its owner is read (at start-up).
BINDING_EXPIRY = "binding-expiry"
# A grant handed to the reaper whose delete is not reported this long after its deadline is
# ended from the operator's own loop instead (a UID precondition makes a second delete a 404).
REAPER_CHECK = "reaper-check"
REAPER_GRACE = timedelta(seconds=10)

DeleteRefs = Callable[[Sequence[BindingRef]], Awaitable[int]]
# Record the end of a grant whose bindings went at `revoked_at` (deadline, revoked_at).
Record = Callable[[GrantKey, datetime, datetime], None]


@dataclass(frozen=True)
class Handed:
    """A grant's delete handed to the reaper: under which ticket, for when, and whether it
    was known from its bindings' own expiry only (before its owner was read)."""

    ticket: int
    deadline: datetime
    early: bool = False


class Deadlines:
    def __init__(
        self,
        scheduler: ExpiryScheduler,
        *,
        clock: Clock,
        deletions: Deletions,
        ended: Callable[[GrantKey], bool],
        delete_refs: DeleteRefs,
        record: Record,
        expire: OnDue,
        reaper_connect: Callable[[], Deleter] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self._ended = ended
        self._delete_refs = delete_refs
        self._record = record
        self._expire = expire
        # The expiry and bindings of each active grant, so its end deletes them before
        # reading anything.
        self.bound: dict[GrantKey, tuple[datetime, tuple[BindingRef, ...]]] = {}
        # Grants whose end binds what continues them first (an extension): their end must
        # read the owner before anything is deleted, or access would have a gap.
        self.continued: set[GrantKey] = set()
        # Bindings known only from their own annotations so far, by owner (see expire_binding).
        self.early: dict[GrantKey, dict[str, BindingRef]] = {}
        # Deletes that need nothing read first go from the reaper's own thread when there is
        # one; the grants handed to it, by owner.
        self.reaper: Reaper | None = None
        # Set while the reaper keeps up with what is due (see lapse.reaper, "pressed").
        self._caught_up = asyncio.Event()
        self._caught_up.set()
        if reaper_connect is not None:
            self.reaper = Reaper(
                reaper_connect,
                clock=clock,
                on_reaped=self._reaped,
                deletions=deletions,
                on_pressure=self._pressure,
            )
        self.handed: dict[GrantKey, Handed] = {}
        self._tickets = itertools.count(1)
        scheduler.on(BINDING_EXPIRY, self._binding_due)
        scheduler.on(REAPER_CHECK, self._reaper_late)

    def near(self, within: timedelta) -> bool:
        """Whether a delete is under way or due within `within`, here or in the reaper."""
        if self.reaper is not None and self.reaper.busy(within):
            return True
        return self.scheduler.busy(within)

    async def deletes_first(self, at_most: float) -> None:
        """Wait while more deletes are due than the reaper has connections for, at most
        `at_most` seconds: what can wait (the record of an end) gives way to what cannot."""
        if self._caught_up.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._caught_up.wait(), timeout=at_most)

    def _pressure(self, pressed: bool) -> None:
        metrics.reaper_pressed.set(1 if pressed else 0)
        if pressed:
            self._caught_up.clear()
        else:
            self._caught_up.set()

    def start_reaper(self) -> None:
        """Deadlines handed to the reaper are kept from now on (this replica leads)."""
        if self.reaper is not None:
            self.reaper.start()

    async def stop(self) -> None:
        if self.reaper is not None:
            await self.reaper.stop()

    def remember(self, key: GrantKey, expires_at: datetime, refs: Sequence[BindingRef]) -> None:
        """`key` is active until `expires_at` through `refs`."""
        if refs and all(ref.uid for ref in refs):
            self.bound[key] = (expires_at, tuple(refs))
        self.forget_early(key)

    def forget_early(self, key: GrantKey) -> None:
        """The owner is read: its own deadline governs its bindings from now on."""
        if self.early.pop(key, None) is not None:
            self.scheduler.cancel(key, BINDING_EXPIRY)
            handed = self.handed.get(key)
            if handed is not None and handed.early:
                self.spare(key)

    def schedule_end(self, key: GrantKey, expires_at: datetime) -> None:
        """The grant `key` ends at `expires_at`: its bindings go from the reaper when nothing
        must be read first (no continuation, every binding's UID known), else from here."""
        self.scheduler.schedule(key, expires_at)
        bound = self.bound.get(key)
        if bound is None or key in self.continued or bound[0] != expires_at:
            self.spare(key)
            return
        handed = self.handed.get(key)
        if handed is None or handed.early or handed.deadline != expires_at:
            self._hand(key, expires_at, bound[1])

    def track(self, key: GrantKey, expires_at: datetime, refs: Sequence[BindingRef]) -> None:
        """An active grant known from a listing (the start-up sweep): due at `expires_at`,
        its bindings deleted first then, as for a grant this process made."""
        self.remember(key, expires_at, refs)
        self.schedule_end(key, expires_at)

    def will_hand_over(self, key: GrantKey) -> None:
        """Something continues `key` when it ends (an extension claimed it): its end reads
        the owner first, on the operator's loop, to bind the continuation first."""
        self.continued.add(key)
        self.spare(key)

    def forget(self, key: GrantKey) -> None:
        """`key` is ending some other way (revoked, deleted, ended by the sweep)."""
        self.scheduler.cancel(key)
        self.spare(key)
        self.bound.pop(key, None)
        self.continued.discard(key)

    def reaper_deletes(self, key: GrantKey) -> bool:
        """Whether the reaper deletes `key`'s bindings (its expiry fell due on the operator's
        loop): the loop then only checks later that it did."""
        handed = self.handed.get(key)
        if handed is None or handed.early:
            return False
        self.scheduler.schedule(key, handed.deadline + REAPER_GRACE, REAPER_CHECK)
        return True

    def in_hand(self, key: GrantKey, now: datetime) -> bool:
        """Whether `key`'s end is this module's to carry out now: due within the grace just
        past, here or in the reaper. The sweep leaves such a binding to its deadline rather
        than send a second delete of it; past the grace it is the sweep's again."""
        handed = self.handed.get(key)
        deadline = handed.deadline if handed is not None else self.scheduler.deadline(key)
        return deadline is not None and deadline <= now < deadline + REAPER_GRACE

    def take_due(self, key: GrantKey, now: datetime) -> tuple[BindingRef, ...] | None:
        """The bindings to delete now, before anything is read, if `key` is due and nothing
        continues it; None when its owner must be read first."""
        expires_at, refs = self.bound.get(key) or (None, ())
        if not refs or key in self.continued or expires_at is None or expires_at > now:
            return None
        self.bound.pop(key, None)
        self.scheduler.cancel(key)
        return refs

    def spare(self, key: GrantKey) -> None:
        """Take `key` back from the reaper: its end is decided on the operator's loop now."""
        if self.handed.pop(key, None) is not None and self.reaper is not None:
            self.reaper.spare(key)
            self.scheduler.cancel(key, REAPER_CHECK)

    def expire_binding(self, key: GrantKey, ref: BindingRef, expires_at: datetime) -> None:
        """Delete the binding `ref` of `key` at `expires_at`, its own annotation's time, even
        before its owner is read: after a restart thousands of owners are read and resumed
        while grants keep falling due, and none may wait for that.

        The annotation is Lapse's (the binding guard restores it if edited), so the owner's
        `expiresAt` is the same time. Were it edited earlier, the binding goes early: access
        is only ever taken away on its strength, never kept. Once the owner is read its own
        deadline governs and this one is dropped. What it cannot do is bind an extension
        first: a grant continued in the seconds before its owner is read may see a gap."""
        if key in self.bound or self._ended(key) or not ref.uid:
            return
        refs = self.early.setdefault(key, {})
        refs[ref.uid] = ref
        current = self.scheduler.deadline(key, BINDING_EXPIRY)
        if current is None or expires_at < current:
            self.scheduler.schedule(key, expires_at, BINDING_EXPIRY)
            current = expires_at
        # The operator's loop keeps the deadline too: if the reaper is late, it deletes.
        self._hand(key, current, list(refs.values()), early=True)

    async def delete_at_once(self, refs: Sequence[BindingRef]) -> list[bool] | None:
        """Delete many bindings now from the reaper's connections (start-up's overdue
        bindings); None when there is no running reaper and the caller deletes them itself."""
        if self.reaper is None or not self.reaper.running:
            return None
        return await self.reaper.delete_now(refs)

    def _hand(
        self, key: GrantKey, deadline: datetime, refs: Sequence[BindingRef], *, early: bool = False
    ) -> None:
        if self.reaper is None or not refs or not all(ref.uid for ref in refs):
            return
        handed = Handed(next(self._tickets), deadline, early)
        self.handed[key] = handed
        self.reaper.reap(key, handed.ticket, deadline, refs)

    def _reaped(self, report: Reaped) -> None:
        """On the operator's loop: the reaper deleted the bindings of `report.key`."""
        key = report.key
        handed = self.handed.get(key)
        if handed is None or handed.ticket != report.ticket:
            return
        del self.handed[key]
        self.scheduler.cancel(key, REAPER_CHECK)
        if handed.early:
            self.early.pop(key, None)
            self.scheduler.cancel(key, BINDING_EXPIRY)
            if report.deleted:
                logger.info(
                    "Deleted %d binding(s) of %s at their expiry.", report.deleted, key.describe()
                )
            return
        self.bound.pop(key, None)
        self.scheduler.cancel(key)
        self._record(key, report.deadline, report.deleted_at)

    async def _reaper_late(self, key: GrantKey, deadline: datetime) -> None:
        handed = self.handed.get(key)
        if handed is None:
            return
        logger.warning(
            "The reaper has not deleted the bindings of %s %s after their expiry; deleting "
            "them from here.",
            key.describe(),
            REAPER_GRACE,
        )
        self.spare(key)
        if handed.early:
            await self._binding_due(key, handed.deadline)
        else:
            await self._expire(key, handed.deadline)

    async def _binding_due(self, key: GrantKey, deadline: datetime) -> None:
        handed = self.handed.get(key)
        if handed is not None and handed.early:
            # The reaper has it; if it has not reported in a while, this loop deletes.
            self.scheduler.schedule(key, deadline + REAPER_GRACE, REAPER_CHECK)
            return
        refs = self.early.pop(key, {})
        if key in self.bound or self._ended(key):
            return
        deleted = await self._delete_refs(list(refs.values()))
        if deleted:
            logger.info("Deleted %d binding(s) of %s at their expiry.", deleted, key.describe())
