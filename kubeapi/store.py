"""In-memory object storage with one global resourceVersion, event history and watchers.

This plays etcd plus the watch cache: every write gets the next resourceVersion, lands in a
bounded history (so a watch can resume from any recent resourceVersion and an older one gets
410 Gone) and is fanned out to open watches without ever blocking the writer.

Stored objects are never mutated in place: a write stores a new dict. Readers can therefore
serialise what they get without copying, and events can share the stored objects.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

ResKey = tuple[str, str]  # (group, plural): storage is shared by every served version


@dataclass(frozen=True)
class Event:
    rv: int
    key: ResKey
    namespace: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None
    # Watch lines already rendered for this event, by (event type, apiVersion shown).
    rendered: dict[tuple[str, str], bytes] = field(default_factory=dict, compare=False)


@dataclass(eq=False)
class Watcher:
    key: ResKey
    namespace: str | None  # None: every namespace (or a cluster-scoped kind)
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)

    def close(self) -> None:
        self.queue.put_nowait(None)


class TooOld(Exception):
    """The asked resourceVersion is older than the kept history."""


class Store:
    def __init__(self, history: int = 100_000) -> None:
        self.rv = 0
        self._objects: dict[ResKey, dict[str, dict[str, dict[str, Any]]]] = {}
        self._uids: dict[str, tuple[ResKey, str, str]] = {}
        # Dependents by owner uid: what garbage collection visits when an owner goes.
        self._dependents: dict[str, set[tuple[ResKey, str, str]]] = {}
        self._history: list[Event] = []
        self._history_max = history
        # Events at or below this resourceVersion are no longer kept.
        self.compacted_rv = 0
        self._watchers: dict[ResKey, set[Watcher]] = {}
        self.listeners: list[Any] = []  # callables(Event) run synchronously after each write

    # -- reading ----------------------------------------------------------------------------

    def get(self, key: ResKey, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get(key, {}).get(namespace, {}).get(name)

    def by_uid(self, uid: str) -> tuple[ResKey, dict[str, Any]] | None:
        where = self._uids.get(uid)
        if where is None:
            return None
        obj = self.get(*where)
        return (where[0], obj) if obj is not None else None

    def dependents(self, uid: str) -> list[tuple[ResKey, dict[str, Any]]]:
        found = []
        for key, ns, name in list(self._dependents.get(uid, ())):
            obj = self.get(key, ns, name)
            if obj is not None:
                found.append((key, obj))
        return found

    def iter(self, key: ResKey, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        by_ns = self._objects.get(key, {})
        if namespace is not None:
            yield from by_ns.get(namespace, {}).values()
            return
        for objs in by_ns.values():
            yield from objs.values()

    def iter_after(
        self, key: ResKey, namespace: str | None, after: tuple[str, ...] | None
    ) -> Iterator[dict[str, Any]]:
        """Objects in (namespace, name) order, only those after `after`: a paginated listing
        reads one page of them, not the whole kind."""
        by_ns = self._objects.get(key, {})
        spaces = [namespace] if namespace is not None else sorted(by_ns)
        for ns in spaces:
            if after is not None and ns < after[0]:
                continue
            objs = by_ns.get(ns, {})
            names = sorted(objs)
            if after is not None and ns == after[0]:
                names = names[bisect.bisect_right(names, after[1]) :]
            for name in names:
                yield objs[name]

    def count_after(self, key: ResKey, namespace: str | None, after: tuple[str, ...]) -> int:
        """How many objects `iter_after` would give."""
        by_ns = self._objects.get(key, {})
        spaces = [namespace] if namespace is not None else list(by_ns)
        total = 0
        for ns in spaces:
            objs = by_ns.get(ns, {})
            if ns > after[0]:
                total += len(objs)
            elif ns == after[0]:
                total += sum(1 for name in objs if name > after[1])
        return total

    def count(self, key: ResKey, namespace: str | None = None) -> int:
        by_ns = self._objects.get(key, {})
        if namespace is not None:
            return len(by_ns.get(namespace, {}))
        return sum(len(v) for v in by_ns.values())

    def namespaced_keys(self, namespace: str) -> list[ResKey]:
        return [k for k, by_ns in self._objects.items() if by_ns.get(namespace)]

    # -- writing ----------------------------------------------------------------------------

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def put(self, key: ResKey, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a created or updated object under a fresh resourceVersion."""
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        name = meta["name"]
        rv = self.next_rv()
        meta["resourceVersion"] = str(rv)
        bucket = self._objects.setdefault(key, {}).setdefault(ns, {})
        old = bucket.get(name)
        bucket[name] = obj
        where = (key, ns, name)
        if old is not None:
            self._unindex_owners(old, where)
        self._uids[meta["uid"]] = where
        self._index_owners(obj, where)
        self._record(Event(rv, key, ns, "MODIFIED" if old is not None else "ADDED", obj, old))
        return obj

    def remove(
        self, key: ResKey, namespace: str, name: str, final: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Remove an object; `final` is its last state (e.g. without its last finalizer)."""
        bucket = self._objects.get(key, {}).get(namespace, {})
        old = bucket.pop(name, None)
        if old is None:
            return None
        if not bucket:
            self._objects[key].pop(namespace, None)
        where = (key, namespace, name)
        self._unindex_owners(old, where)
        self._uids.pop(old["metadata"]["uid"], None)
        rv = self.next_rv()
        last = final if final is not None else old
        gone = {**last, "metadata": {**last["metadata"], "resourceVersion": str(rv)}}
        self._record(Event(rv, key, namespace, "DELETED", gone, old))
        return gone

    def drop_resource(self, key: ResKey) -> None:
        """Forget a whole kind without events (its CRD is gone; watches were closed)."""
        for obj in list(self.iter(key)):
            meta = obj["metadata"]
            where = (key, meta.get("namespace", ""), meta["name"])
            self._unindex_owners(obj, where)
            self._uids.pop(meta["uid"], None)
        self._objects.pop(key, None)
        for watcher in list(self._watchers.pop(key, ())):
            watcher.close()

    def _index_owners(self, obj: dict[str, Any], where: tuple[ResKey, str, str]) -> None:
        for ref in obj["metadata"].get("ownerReferences") or ():
            uid = ref.get("uid")
            if uid:
                self._dependents.setdefault(uid, set()).add(where)

    def _unindex_owners(self, obj: dict[str, Any], where: tuple[ResKey, str, str]) -> None:
        for ref in obj["metadata"].get("ownerReferences") or ():
            deps = self._dependents.get(ref.get("uid", ""))
            if deps is not None:
                deps.discard(where)
                if not deps:
                    del self._dependents[ref["uid"]]

    def _record(self, event: Event) -> None:
        self._history.append(event)
        if len(self._history) > 2 * self._history_max:
            cut = len(self._history) - self._history_max
            self.compacted_rv = self._history[cut - 1].rv
            del self._history[:cut]
        for watcher in self._watchers.get(event.key, ()):
            if watcher.namespace is None or watcher.namespace == event.namespace:
                watcher.queue.put_nowait(event)
        for listener in self.listeners:
            listener(event)

    # -- watching ---------------------------------------------------------------------------

    def events_since(self, rv: int, key: ResKey, namespace: str | None) -> Iterable[Event]:
        if rv < self.compacted_rv:
            raise TooOld()
        start = bisect.bisect_right(self._history, rv, key=lambda e: e.rv)
        for event in self._history[start:]:
            if event.key == key and (namespace is None or event.namespace == namespace):
                yield event

    def watch(self, key: ResKey, namespace: str | None) -> Watcher:
        watcher = Watcher(key, namespace)
        self._watchers.setdefault(key, set()).add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.get(watcher.key, set()).discard(watcher)

    # -- fault controls (the faults module drives these) --------------------------------------

    def cut_watches(self) -> int:
        count = 0
        for watchers in self._watchers.values():
            for watcher in list(watchers):
                watcher.close()
                count += 1
            watchers.clear()
        return count

    def forget_history(self) -> None:
        self._history.clear()
        self.compacted_rv = self.rv
