"""The live lists: watches on the API, fanned out to every open page as they arrive.

The CLI's client is synchronous, so each kind is followed by one thread (list, then watch
from the list's resourceVersion, list again when the watch ends or its version is too old)
that hands every change to the event loop. One feed serves every tab: a new page gets the
current objects at once and each change the moment the API server reports it — which is
what turns a grant Expired on screen within a second of Lapse ending it.

A feed follows one cluster. When its API server stops answering, the feed says so (`Reach`)
and keeps what the cluster said last, tries again by itself, and lists afresh when it answers:
a page over several clusters shows one gone away without losing the others, nor needing a
reload when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lapse.cli.client import Kube
from lapse.cli.errors import CliError
from lapse.cli.fleet import unreachable_error
from lapse.core.kinds import Kind

logger = logging.getLogger(__name__)

# How long one watch request lasts before the thread lists again: short enough that a
# stopped page server ends promptly, long enough to cost the API server nothing.
WATCH_SECONDS = 50
# After a refusal or an outage, how long before trying again: doubling up to a minute, since a
# user's permissions rarely change while a page is open and an outage may last.
RETRY_SECONDS = 2.0
RETRY_MAX_SECONDS = 60.0
# A cluster that does not answer is asked again more often than a refusal: a refused
# connection costs it nothing, and someone is watching the page for it to come back.
UNREACHABLE_MAX_SECONDS = 10.0

CONNECTING, CONNECTED, UNREACHABLE = "connecting", "connected", "unreachable"


@dataclass(frozen=True)
class Change:
    """One object changed (`gone` when deleted), or a kind's whole list (`reset`)."""

    kind: str
    uid: str
    body: dict[str, Any] | None
    gone: bool = False
    cluster: str = ""


@dataclass(frozen=True)
class Reach:
    """A cluster's state changed: it answers again, stopped answering, or refused a kind."""

    cluster: str


Listener = Callable[[Change | Reach], None]


class Feed:
    """Objects of some kinds as the user may see them in one cluster, kept current by watches."""

    def __init__(self, kube: Kube, loop: asyncio.AbstractEventLoop, cluster: str = "") -> None:
        self.kube = kube
        self.loop = loop
        self.cluster = cluster
        self.objects: dict[str, dict[str, Any]] = {}
        # Why a kind cannot be shown (the user may not list it), by kind name.
        self.refused: dict[str, str] = {}
        # Why the cluster does not answer, by what asked it (a kind, or the start-up probe).
        self.unreachable: dict[str, str] = {}
        self.answered = False
        self.listeners: set[Listener] = set()
        self._stop = threading.Event()
        # Set when the cluster answers one thread: the others, waiting out their backoff,
        # try again at once instead of leaving their kind empty for up to a backoff.
        self._answered_again = threading.Event()
        # The askers that last failed to reach the cluster, as their threads know it.
        self._down: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def state(self) -> str:
        if self.unreachable:
            return UNREACHABLE
        return CONNECTED if self.answered else CONNECTING

    @property
    def why(self) -> str | None:
        return next(iter(self.unreachable.values()), None)

    def follow(self, resource: Kind, namespace: str | None) -> None:
        thread = threading.Thread(
            target=self._run, args=(resource, namespace),
            name=f"watch-{self.cluster + '-' if self.cluster else ''}{resource.plural}",
            daemon=True,
        )  # fmt: skip
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._answered_again.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> None:
        """Sleep out a backoff, ending early when stopped or when the cluster answered."""
        self._answered_again.clear()
        self._answered_again.wait(seconds)

    def _tell(self) -> None:
        for listener in list(self.listeners):
            listener(Reach(self.cluster))

    def _publish(self, change: Change) -> None:
        self.loop.call_soon_threadsafe(self._apply, change)

    def _apply(self, change: Change) -> None:
        if change.gone:
            self.objects.pop(change.uid, None)
        elif change.body is not None:
            self.objects[change.uid] = change.body
        for listener in list(self.listeners):
            listener(change)

    def reached(self, asker: str) -> None:
        """`asker` got an answer from the cluster (from any thread)."""

        def apply() -> None:
            before = self.state
            self.answered = True
            self.unreachable.pop(asker, None)
            if self.state != before:
                self._tell()

        with self._lock:
            was_down = bool(self._down)
            self._down.discard(asker)
        if was_down:
            # Only on coming back: two refused kinds must not wake each other for ever.
            self._answered_again.set()
        self.loop.call_soon_threadsafe(apply)

    def lost(self, asker: str, why: str) -> None:
        """`asker` could not reach the cluster (from any thread)."""
        with self._lock:
            self._down.add(asker)

        def apply() -> None:
            before, said = self.state, self.why
            self.unreachable[asker] = why
            if (self.state, self.why) != (before, said):
                self._tell()

        self.loop.call_soon_threadsafe(apply)

    def _reset(self, resource: Kind, items: list[dict[str, Any]]) -> None:
        def apply() -> None:
            fresh = {_uid(item): item for item in items}
            for uid, body in list(self.objects.items()):
                if body.get("kind") == resource.kind and uid not in fresh:
                    self._apply(Change(resource.kind, uid, None, gone=True, cluster=self.cluster))
            for uid, body in fresh.items():
                if self.objects.get(uid) != body:
                    self._apply(Change(resource.kind, uid, body, cluster=self.cluster))
            if self.refused.pop(resource.kind, None) is not None:
                self._tell()

        self.loop.call_soon_threadsafe(apply)

    def _refuse(self, resource: Kind, why: str) -> None:
        def apply() -> None:
            self.refused[resource.kind] = why
            self._tell()

        self.loop.call_soon_threadsafe(apply)

    def _run(self, resource: Kind, namespace: str | None) -> None:
        delay = RETRY_SECONDS
        while not self._stop.is_set():
            ceiling = RETRY_MAX_SECONDS
            try:
                items, version = self.kube.collection(resource, namespace)
                for item in items:
                    item.setdefault("kind", resource.kind)
                self.reached(resource.kind)
                self._reset(resource, items)
                delay = RETRY_SECONDS
                for kind, body in self.kube.changes(resource, namespace, version, WATCH_SECONDS):
                    if self._stop.is_set():
                        return
                    body.setdefault("kind", resource.kind)
                    self._publish(
                        Change(
                            resource.kind, _uid(body), body, gone=kind == "DELETED",
                            cluster=self.cluster,
                        )
                    )  # fmt: skip
                continue
            except CliError as error:
                if unreachable_error(error):
                    self.lost(resource.kind, error.message)
                    ceiling = UNREACHABLE_MAX_SECONDS
                else:
                    self.reached(resource.kind)
                    self._refuse(resource, error.message)
            except Exception:  # a watch thread must outlive any one failure
                logger.exception("watching %s failed; listing again", resource.plural)
            self.wait(min(delay, ceiling))
            delay = min(delay * 2, ceiling)


def _uid(body: dict[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
