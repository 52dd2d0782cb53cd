"""The benchmark's eyes: one watch on Lapse's RoleBindings across all namespaces.

Grant latency and revocation lag are measured from the outside, as a user would see them: the
moment a binding's ADDED or DELETED event arrives here. The watch runs on its own thread with
its own event loop, so the creating side of the benchmark cannot delay the stamps; the watch's
own delivery lag is part of every measurement (an upper bound on Lapse's, never an excuse).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bench.cluster import Credentials
from bench.kube import ApiError, Kube

logger = logging.getLogger(__name__)

SELECTOR = "app.kubernetes.io/managed-by=lapse"
REQUEST_LABEL = "lapse.dev/request"
EXPIRES_AT = "lapse.dev/expires-at"
PATH = "/apis/rbac.authorization.k8s.io/v1/rolebindings"

Key = tuple[str, str]  # (namespace, request name)


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Binding:
    """What the watch saw of one request's binding; times are wall-clock seconds."""

    name: str
    expires_at: float | None
    added: float | None = None
    deleted: float | None = None


class BindingWatch:
    def __init__(self, credentials: Credentials, namespaces: Collection[str] = ()) -> None:
        self._credentials = credentials
        # On a shared cluster other Lapse bindings come and go (another install's, a test
        # run's leftovers); only the benchmark's namespaces count. Empty: every namespace.
        self._namespaces = frozenset(namespaces)
        self._lock = threading.Lock()
        self._bindings: dict[Key, Binding] = {}
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._main, name="bench-watch", daemon=True)
        self.events = 0
        self._added = 0
        self._deleted = 0
        self.reconnects = 0
        self.error: BaseException | None = None

    def start(self, timeout: float = 30) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the binding watch did not start: {self.error}")

    def stop(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        # A run refused before the watch started (a foreign Lapse installed) stops it too.
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def snapshot(self) -> dict[Key, Binding]:
        with self._lock:
            return {
                key: Binding(b.name, b.expires_at, b.added, b.deleted)
                for key, b in self._bindings.items()
            }

    def counts(self) -> tuple[int, int]:
        """(bindings seen added, bindings seen deleted) so far."""
        with self._lock:
            return self._added, self._deleted

    def _main(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._task = self._loop.create_task(self._run())
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as error:
            self.error = error
            logger.exception("The binding watch failed.")
        finally:
            self._loop.close()

    async def _run(self) -> None:
        kube = Kube(self._credentials, connections=4)
        try:
            listing = await kube.call("GET", PATH, params={"labelSelector": SELECTOR})
            for item in listing.get("items", []):
                self._record("ADDED", item, None)
            version = str(listing["metadata"]["resourceVersion"])
            self._ready.set()
            while True:
                try:
                    params = {
                        "labelSelector": SELECTOR,
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
                    # A 410 would lose events and so measurements: fail loudly instead.
                    if isinstance(error, ApiError) and error.status == 410:
                        raise
                    logger.warning("Binding watch dropped (%s); resuming.", error)
                self.reconnects += 1
        finally:
            await kube.close()

    def _record(self, kind: str, obj: dict[str, Any], arrived: float | None) -> None:
        metadata = obj.get("metadata") or {}
        request = (metadata.get("labels") or {}).get(REQUEST_LABEL)
        if not request:
            return
        key = (str(metadata.get("namespace", "")), str(request))
        if self._namespaces and key[0] not in self._namespaces:
            return
        expires_at = parse_time((metadata.get("annotations") or {}).get(EXPIRES_AT))
        with self._lock:
            self.events += 1
            binding = self._bindings.get(key)
            if binding is None:
                binding = self._bindings[key] = Binding(str(metadata.get("name", "")), expires_at)
            if expires_at is not None:
                binding.expires_at = expires_at
            if kind != "DELETED" and binding.added is None:
                # Bindings that already existed when the watch started have no arrival time.
                binding.added = arrived if arrived is not None else float("nan")
                self._added += 1
            if kind == "DELETED" and binding.deleted is None:
                binding.deleted = arrived
                self._deleted += 1
