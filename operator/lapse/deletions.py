"""The bindings Lapse is deleting and has deleted, known to every thread that deletes.

Two threads delete bindings (the reaper's and the operator's loop), and more than one path can
come to the same binding at nearly the same moment: its deadline, the sweep that lists it a
moment before it goes, a restart that learns of it first from its own annotation and then from
its owner. A delete carries the binding's UID as a precondition, so a second one can never touch
anything else; but it is one more request on an API server that is busiest exactly then, in an
expiry wave. A binding whose UID was deleted can never exist again (UIDs are never reused), so
a delete of a UID known gone is skipped, not sent.

The binding watch reads the same record: a DELETED event for a UID Lapse is deleting is Lapse's
own, not an admin's (which would end the grant as Revoked).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable

# UIDs remembered as deleted: a repeat comes within seconds of the first delete, so the last
# tens of thousands are plenty (about 100 bytes each).
REMEMBERED = 50_000


class Deletions:
    """Thread-safe: the reaper's thread and the operator's loop both call it."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._lock = threading.Lock()
        self._remembered = remembered
        # Deletes sent (or about to be) whose DELETED event the binding watch has not seen.
        self._ours: set[str] = set()
        # UIDs known deleted (the API server said so, or said they were gone already).
        self._gone: OrderedDict[str, None] = OrderedDict()

    def start(self, uid: str) -> bool:
        """Lapse is about to delete `uid`; False when it is known gone and nothing need be
        sent."""
        with self._lock:
            if uid in self._gone:
                return False
            self._ours.add(uid)
            return True

    def gone(self, uid: str) -> None:
        """The API server answered a delete of `uid`: deleted now or gone before."""
        with self._lock:
            self._gone[uid] = None
            self._gone.move_to_end(uid)
            while len(self._gone) > self._remembered:
                self._gone.popitem(last=False)

    def is_gone(self, uid: str) -> bool:
        with self._lock:
            return uid in self._gone

    def ours(self, uid: str) -> bool:
        """Whether Lapse has sent a delete of `uid` whose DELETED event is still to come."""
        with self._lock:
            return uid in self._ours

    def observed(self, uid: str) -> bool:
        """The binding watch saw `uid` deleted: True when the delete was Lapse's own."""
        self.gone(uid)
        with self._lock:
            if uid in self._ours:
                self._ours.discard(uid)
                return True
            return False


class Sender:
    """One event loop's deletes under way, by UID: a second call for a binding waits for the
    first instead of sending again; a binding known gone is not sent at all."""

    def __init__(self, deletions: Deletions) -> None:
        self._deletions = deletions
        self._sending: dict[str, asyncio.Task[bool]] = {}

    async def delete(self, uid: str, send: Callable[[], Awaitable[bool]]) -> bool:
        """`send` the delete of `uid` unless it is under way or done; True if this call's
        delete removed it."""
        sending = self._sending.get(uid)
        if sending is not None:
            await asyncio.shield(sending)
            return False
        if not self._deletions.start(uid):
            return False
        task = asyncio.ensure_future(send())
        self._sending[uid] = task
        try:
            deleted = await asyncio.shield(task)
        finally:
            if self._sending.get(uid) is task:
                del self._sending[uid]
        self._deletions.gone(uid)
        return deleted
