"""The history benchmark's eyes on AccessRequests: when each one began to leave the cluster.

Retention may delete an owner only after every sink has its whole trail. The benchmark checks
that from the outside: the moment rsyslog received an owner's last record against the moment
the cluster showed the owner being deleted (the first event carrying its deletionTimestamp, or
its DELETED event, whichever came first). Like `bench.watch`, it runs on its own thread with
its own event loop and stamps events when their bytes arrive, so the benchmark's own work
cannot delay the stamps; the watch's delivery delay makes the deletion look later, never
earlier, so the check allows for it by reporting the margin of every owner, not a bare yes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from bench.cluster import Credentials
from bench.kube import ApiError, Kube

logger = logging.getLogger(__name__)

PATH = "/apis/lapse.dev/v1alpha1/accessrequests"


@dataclass
class Seen:
    """One AccessRequest as the watch saw it; times are wall-clock seconds."""

    namespace: str
    name: str
    phase: str = ""
    deleting: float | None = None  # first event with metadata.deletionTimestamp
    deleted: float | None = None  # the DELETED event

    @property
    def leaving(self) -> float | None:
        """When the cluster first showed it going."""
        times = [t for t in (self.deleting, self.deleted) if t is not None]
        return min(times) if times else None


class RequestWatch:
    def __init__(self, credentials: Credentials, namespaces: Collection[str]) -> None:
        self._credentials = credentials
        self._namespaces = frozenset(namespaces)
        self._lock = threading.Lock()
        self._seen: dict[str, Seen] = {}
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._main, name="bench-requests", daemon=True)
        self.reconnects = 0
        self.error: BaseException | None = None

    def start(self, timeout: float = 30) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the AccessRequest watch did not start: {self.error}")

    def stop(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout=10)

    def snapshot(self) -> dict[str, Seen]:
        """By uid."""
        with self._lock:
            return {
                uid: Seen(s.namespace, s.name, s.phase, s.deleting, s.deleted)
                for uid, s in self._seen.items()
            }

    def counts(self) -> tuple[int, int]:
        """(requests seen, requests seen deleted)."""
        with self._lock:
            return len(self._seen), sum(1 for s in self._seen.values() if s.deleted is not None)

    def _main(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._task = self._loop.create_task(self._run())
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as error:
            self.error = error
            logger.exception("The AccessRequest watch failed.")
        finally:
            self._loop.close()

    async def _run(self) -> None:
        kube = Kube(self._credentials, connections=4)
        try:
            listing = await kube.call("GET", PATH, params={"limit": "1"})
            version = str(listing["metadata"]["resourceVersion"])
            self._ready.set()
            while True:
                try:
                    params = {
                        "resourceVersion": version,
                        "allowWatchBookmarks": "true",
                        "timeoutSeconds": "3600",
                    }
                    async for arrived, event in kube.stream(PATH, params):
                        kind = event.get("type")
                        obj = event.get("object") or {}
                        if kind == "ERROR":
                            raise ApiError(int(obj.get("code", 500)), str(obj.get("message")))
                        version = str((obj.get("metadata") or {}).get("resourceVersion", version))
                        if kind in ("ADDED", "MODIFIED", "DELETED"):
                            self._record(kind, obj, arrived)
                except (OSError, TimeoutError, ApiError) as error:
                    if isinstance(error, ApiError) and error.status == 410:
                        raise
                    logger.warning("AccessRequest watch dropped (%s); resuming.", error)
                self.reconnects += 1
        finally:
            await kube.close()

    def _record(self, kind: str, obj: dict[str, Any], arrived: float) -> None:
        metadata = obj.get("metadata") or {}
        namespace = str(metadata.get("namespace", ""))
        if namespace not in self._namespaces:
            return
        uid = str(metadata.get("uid", ""))
        with self._lock:
            seen = self._seen.get(uid)
            if seen is None:
                seen = self._seen[uid] = Seen(namespace, str(metadata.get("name", "")))
            seen.phase = str((obj.get("status") or {}).get("phase") or seen.phase)
            if metadata.get("deletionTimestamp") and seen.deleting is None:
                seen.deleting = arrived
            if kind == "DELETED" and seen.deleted is None:
                seen.deleted = arrived
