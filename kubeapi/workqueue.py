"""The loop under the local API's controllers: store events in, one task doing the work.

A store listener runs inside the writer's call, so it must never write: it only queues. One
task per controller takes the queue in order and calls the method each item names (`_owner_gone`
for "owner-gone"). A write that lost a race to a concurrent one is only logged: the event that
write makes brings the work back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from . import errors
from .objects import Objects
from .store import Event

log = logging.getLogger(__name__)


class QueuedController:
    #: How the log names this controller.
    name = "controller"

    def __init__(self, objects: Objects) -> None:
        self.objects = objects
        self.store = objects.store
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.store.listeners.append(self._on_event)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_event(self, event: Event) -> None:
        raise NotImplementedError

    def _handle(self, kind: str, arg: Any) -> None:
        getattr(self, "_" + kind.replace("-", "_"))(arg)

    async def _run(self) -> None:
        while True:
            kind, arg = await self._queue.get()
            try:
                self._handle(kind, arg)
            except errors.ApiError as exc:
                log.debug("%s %s(%s): %s", self.name, kind, arg, exc)
            except Exception:
                log.exception("%s %s(%s) failed", self.name, kind, arg)
            if self._queue.empty():
                await asyncio.sleep(0)
