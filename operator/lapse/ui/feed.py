"""The live lists: watches on the API, fanned out to every open page as they arrive.

The CLI's client is synchronous, so each kind is followed by one thread (list, then watch
from the list's resourceVersion, list again when the watch ends or its version is too old)
that hands every change to the event loop. One feed serves every tab: a new page gets the
current objects at once and each change the moment the API server reports it — which is
what turns a grant Expired on screen within a second of Lapse ending it.
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
from lapse.core.kinds import Kind

logger = logging.getLogger(__name__)

# How long one watch request lasts before the thread lists again: short enough that a
# stopped page server ends promptly, long enough to cost the API server nothing.
WATCH_SECONDS = 50
# After a refusal or an outage, how long before trying again: doubling up to a minute, since a
# user's permissions rarely change while a page is open and an outage may last.
RETRY_SECONDS = 2.0
RETRY_MAX_SECONDS = 60.0


@dataclass(frozen=True)
class Change:
    """One object changed (`gone` when deleted), or a kind's whole list (`reset`)."""

    kind: str
    uid: str
    body: dict[str, Any] | None
    gone: bool = False


Listener = Callable[[Change], None]


class Feed:
    """Objects of some kinds as the user may see them, kept current by watches."""

    def __init__(self, kube: Kube, loop: asyncio.AbstractEventLoop) -> None:
        self.kube = kube
        self.loop = loop
        self.objects: dict[str, dict[str, Any]] = {}
        # Why a kind cannot be shown (the user may not list it), by kind name.
        self.refused: dict[str, str] = {}
        self.listeners: set[Listener] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def follow(self, resource: Kind, namespace: str | None) -> None:
        thread = threading.Thread(
            target=self._run, args=(resource, namespace), name=f"watch-{resource.plural}",
            daemon=True,
        )  # fmt: skip
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _publish(self, change: Change) -> None:
        self.loop.call_soon_threadsafe(self._apply, change)

    def _apply(self, change: Change) -> None:
        if change.gone:
            self.objects.pop(change.uid, None)
        elif change.body is not None:
            self.objects[change.uid] = change.body
        for listener in list(self.listeners):
            listener(change)

    def _reset(self, resource: Kind, items: list[dict[str, Any]]) -> None:
        def apply() -> None:
            fresh = {_uid(item): item for item in items}
            for uid, body in list(self.objects.items()):
                if body.get("kind") == resource.kind and uid not in fresh:
                    self._apply(Change(resource.kind, uid, None, gone=True))
            for uid, body in fresh.items():
                if self.objects.get(uid) != body:
                    self._apply(Change(resource.kind, uid, body))
            if self.refused.pop(resource.kind, None) is not None:
                for listener in list(self.listeners):
                    listener(Change(resource.kind, "", None))

        self.loop.call_soon_threadsafe(apply)

    def _refuse(self, resource: Kind, why: str) -> None:
        def apply() -> None:
            self.refused[resource.kind] = why
            for listener in list(self.listeners):
                listener(Change(resource.kind, "", None))

        self.loop.call_soon_threadsafe(apply)

    def _run(self, resource: Kind, namespace: str | None) -> None:
        delay = RETRY_SECONDS
        while not self._stop.is_set():
            try:
                items, version = self.kube.collection(resource, namespace)
                for item in items:
                    item.setdefault("kind", resource.kind)
                self._reset(resource, items)
                delay = RETRY_SECONDS
                for kind, body in self.kube.changes(resource, namespace, version, WATCH_SECONDS):
                    if self._stop.is_set():
                        return
                    body.setdefault("kind", resource.kind)
                    self._publish(Change(resource.kind, _uid(body), body, gone=kind == "DELETED"))
                continue
            except CliError as error:
                self._refuse(resource, error.message)
            except Exception:  # a watch thread must outlive any one failure
                logger.exception("watching %s failed; listing again", resource.plural)
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_MAX_SECONDS)


def _uid(body: dict[str, Any]) -> str:
    meta = body.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
