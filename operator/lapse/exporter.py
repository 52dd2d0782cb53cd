"""The exporter: each owner's facts into its trail, and the trail to every configured sink.

The owner is the outbox. A fact of a grant (a phase entered, an approval, a review, the
verdict that access is gone) is durable once its status holds it; the exporter turns the facts
not yet in `status.trail` into signed records (`lapse.core.trail`) and appends them there with
a JSON patch that tests the trail's length, so two writers can never fork a stream. Only then
does a sink see a record. What each sink has received is kept in memory as it happens and
written back to the trail when an owner has nothing more on its way (or every half minute),
dropping the records every sink has: a restart sends again what was not written back, and
receivers drop the repeats by `id`.

A sink that is down holds its records in their owners, not in this process: nothing is lost
however long it lasts, and retention (`lapse.retention`) deletes no owner before every sink has
its every record. The exporter sees every owner from the grant index's watch (on every replica);
it writes and sends only while this replica leads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from lapse import metrics
from lapse.core.activity import compute_activity_summary
from lapse.core.bindings import parse_time
from lapse.core.breakglass import compute_audit_fields
from lapse.core.grants import GrantKey
from lapse.core.models import BreakGlassStatus, GrantStatus, Trail
from lapse.core.owners import key_of, parse_role, parse_status
from lapse.core.trail import (
    HISTORY,
    RETIRED,
    Fact,
    build_retired_fact,
    build_trail_record,
    compute_genesis,
    compute_new_facts,
    compute_record_hash,
)
from lapse.kube import ApiError, KubeApi, NotFoundError, RefusedError
from lapse.sinks.base import Sink, SinkError

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Records sent to a sink in one call.
BATCH = 200
# Owners whose trail is written at once.
WRITERS = 8
# How long a partly delivered owner waits before its progress is written back anyway.
PERSIST_EVERY = timedelta(seconds=30)
# Retries of a sink that fails: from 1 s, doubling, to at most a minute.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
# The records of a grant's end, which carry what was done with it.
ENDING_ACTIONS = frozenset({"expired", "revoked"})


NO_TRAIL = Trail()


@dataclass
class Owner:
    """What the exporter and retention keep of one owner: small, for every owner there is."""

    key: GrantKey
    ended_at: datetime | None = None
    needs_review: bool = False
    # Its finalizers as last seen: retention takes Lapse's off once it has deleted it.
    finalizers: tuple[str, ...] = ()
    # Replaced whole, never changed in place: owners without a trail share one empty one.
    trail: Trail = field(default_factory=lambda: NO_TRAIL)
    # Delivered to each sink in this process, beyond what the trail says (not written yet).
    sent: dict[str, int] = field(default_factory=dict)
    persisted_at: datetime | None = None
    # The latest body while facts or records wait for this process; None when nothing does.
    body: Mapping[str, Any] | None = None
    retire: bool = False

    def delivered(self, sink: str) -> int:
        return max(self.sent.get(sink, 0), self.trail.delivered.get(sink, 0))

    def first_held(self) -> int:
        """The seq of the first record still held in the status."""
        return self.trail.seq - len(self.trail.records) + 1

    def complete(self, sinks: Sequence[str]) -> bool:
        """Every record delivered to every sink, and written back."""
        return all(self.trail.delivered.get(s, 0) >= self.trail.seq for s in sinks)

    @property
    def retired(self) -> bool:
        return self.trail.covered.get(RETIRED, 0) > 0


@dataclass
class Lane:
    """One sink's queue: records in the order they joined their trails."""

    sink: Sink
    queue: deque[tuple[str, dict[str, Any]]] = field(default_factory=deque)
    # Highest seq queued per owner, so a record is queued once.
    queued: dict[str, int] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    up: bool = True


class Exporter:
    def __init__(
        self,
        kube: KubeApi,
        *,
        sinks: Sequence[Sink],
        signing_key: bytes,
        clock: Clock,
        leading: asyncio.Event,
        retry_max: float = BACKOFF_MAX,
    ) -> None:
        self.kube = kube
        self.clock = clock
        self._retry_max = retry_max
        self._key = signing_key
        self._leading = leading
        self.lanes = {sink.name: Lane(sink) for sink in sinks}
        self.owners: dict[str, Owner] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._to_persist: set[str] = set()

    @property
    def enabled(self) -> bool:
        return bool(self.lanes)

    @property
    def sinks(self) -> tuple[str, ...]:
        return tuple(self.lanes)

    # What the watch says -----------------------------------------------------------------

    def observe(self, kind: str, body: Mapping[str, Any], deleted: bool) -> None:
        """One owner as the API server holds it now (from the grant index's watch)."""
        metadata = body.get("metadata") or {}
        uid = str(metadata.get("uid") or "")
        if not uid:
            return
        if deleted:
            self.owners.pop(uid, None)
            self._dirty.discard(uid)
            for lane in self.lanes.values():
                lane.queued.pop(uid, None)
            return
        try:
            status = parse_status(kind, body)
            trail = _parse_trail(body)
        except ValidationError:
            return  # an owner the models cannot read ends Invalid elsewhere
        ended_at = status.ended_at if status.phase and status.phase.ended else None
        owner = self.owners.get(uid)
        if owner is None:
            if ended_at is None and not self.enabled:
                return  # retention alone keeps only ended owners: 100,000 cost little
            owner = self.owners[uid] = Owner(key_of(kind, body))
        owner.ended_at = ended_at
        owner.finalizers = tuple(metadata.get("finalizers") or ())
        owner.needs_review = (
            isinstance(status, BreakGlassStatus)
            and status.review_deadline is not None
            and status.review is None
        )
        if trail.seq >= owner.trail.seq:
            owner.trail = trail
        if not self.enabled:
            return
        waiting = bool(compute_new_facts(kind, status, owner.trail.covered)) or any(
            owner.delivered(s) < owner.trail.seq for s in self.lanes
        )
        owner.body = body if waiting or owner.retire else None
        if owner.body is not None:
            self._dirty.add(uid)
            self._wake.set()

    def retire(self, uid: str) -> None:
        """Retention will delete this owner: its trail's last record says so first."""
        owner = self.owners.get(uid)
        if owner is None or owner.retired or owner.retire:
            return
        owner.retire = True
        self._dirty.add(uid)
        self._wake.set()

    # The leader's work ---------------------------------------------------------------------

    async def run(self) -> None:
        if not self.enabled:
            return
        await self._leading.wait()
        tasks = [asyncio.create_task(self._deliver(lane)) for lane in self.lanes.values()]
        tasks.append(asyncio.create_task(self._persist_forever()))
        try:
            await self._write_forever()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _write_forever(self) -> None:
        slots = asyncio.Semaphore(WRITERS)

        async def one(uid: str) -> None:
            async with slots:
                try:
                    await self._write(uid)
                except (ApiError, OSError, TimeoutError) as error:
                    logger.warning("Could not write the audit trail of %s: %s", uid, error)
                    await asyncio.sleep(1)
                    self._dirty.add(uid)
                    self._wake.set()

        while True:
            await self._wake.wait()
            self._wake.clear()
            batch = list(self._dirty)
            self._dirty.clear()
            await asyncio.gather(*(one(uid) for uid in batch))

    async def _write(self, uid: str) -> None:
        """Append the owner's new facts to its trail, then queue what each sink lacks."""
        owner = self.owners.get(uid)
        if owner is None:
            return
        body = owner.body
        if body is None and owner.retire and not owner.retired:
            # Nothing was waiting, so the last body was not kept: retiring needs it now.
            body = await self.kube.get_owner(owner.key)
            if body is None:
                self.owners.pop(uid, None)
                return
        if body is not None:
            for _attempt in range(5):
                facts = self._new_facts(owner, body)
                if not facts:
                    break
                try:
                    written = await self._append(owner, body, facts)
                except RefusedError:
                    # Another writer got there first (a leader before this one): read again.
                    fresh = await self.kube.get_owner(owner.key)
                    if fresh is None:
                        self.owners.pop(uid, None)
                        return
                    body = fresh
                    owner.trail = _parse_trail(body)
                    continue
                except NotFoundError:
                    self.owners.pop(uid, None)
                    return
                owner.trail = _parse_trail(written)
                break
            owner.body = None
        self._queue(uid, owner)

    def _new_facts(self, owner: Owner, body: Mapping[str, Any]) -> list[Fact]:
        status = parse_status(owner.key.kind, body)
        facts = (
            [] if owner.retired else compute_new_facts(owner.key.kind, status, owner.trail.covered)
        )
        if owner.retire and not owner.retired and not facts:
            facts = [
                build_retired_fact(
                    at=self.clock(), records=owner.trail.seq, ended_at=status.ended_at
                )
            ]
        return facts

    async def _append(
        self, owner: Owner, body: Mapping[str, Any], facts: Sequence[Fact]
    ) -> Mapping[str, Any]:
        status: GrantStatus = parse_status(owner.key.kind, body)
        role = parse_role(body)
        trail = _parse_trail(body)
        seq = trail.seq
        head = trail.head or compute_genesis(owner.key.uid)
        covered = dict(trail.covered)
        records: list[str] = []
        # A break-glass's incident on each record, so the trail reads incident by incident.
        fields: dict[str, Any] = {
            k: v for k, v in compute_audit_fields(owner.key.kind, body).items() if v
        }
        for fact in facts:
            seq += 1
            extra = dict(fields)
            closing = fact.kind == RETIRED or (
                fact.kind == HISTORY and fact.action in ENDING_ACTIONS
            )
            if closing and status.activity is not None:
                # What was done with the access: final by the time the owner is retired.
                extra["activity"] = compute_activity_summary(status.activity)
            record = build_trail_record(
                key=owner.key,
                status=status,
                role=role,
                fact=fact,
                seq=seq,
                prev=head,
                signing_key=self._key,
                extra=extra,
            )
            head = compute_record_hash(record)
            records.append(json.dumps(record, sort_keys=True, separators=(",", ":")))
            covered[fact.kind] = max(covered.get(fact.kind, 0), fact.index + 1)
        delivered, drop = self._progress(owner, trail)
        ops: list[dict[str, Any]] = []
        if body.get("status", {}).get("trail") is None:
            version = (body.get("metadata") or {}).get("resourceVersion")
            ops.append({"op": "test", "path": "/metadata/resourceVersion", "value": version})
            ops.append(
                {
                    "op": "add",
                    "path": "/status/trail",
                    "value": {"records": records, "seq": seq, "head": head, "covered": covered},
                }
            )
        else:
            ops.append({"op": "test", "path": "/status/trail/seq", "value": trail.seq})
            ops += [{"op": "remove", "path": "/status/trail/records/0"}] * drop
            ops += [{"op": "add", "path": "/status/trail/records/-", "value": r} for r in records]
            ops += [
                {"op": "replace", "path": "/status/trail/seq", "value": seq},
                {"op": "add", "path": "/status/trail/head", "value": head},
                {"op": "add", "path": "/status/trail/covered", "value": covered},
            ]
        if delivered:
            ops.append({"op": "add", "path": "/status/trail/delivered", "value": delivered})
        written = await self.kube.json_patch_status(owner.key, ops)
        owner.persisted_at = self.clock()
        metrics.trail_records_total.inc(len(records))
        return written

    def _progress(self, owner: Owner, trail: Trail) -> tuple[dict[str, int], int]:
        """What to write back: each sink's delivered count, and how many of the held records
        every sink has (dropped from the status)."""
        delivered = {s: max(owner.delivered(s), trail.delivered.get(s, 0)) for s in self.lanes}
        if delivered == {s: trail.delivered.get(s, 0) for s in self.lanes}:
            return {}, 0
        everywhere = min(delivered.values()) if delivered else 0
        first = trail.seq - len(trail.records) + 1
        drop = max(0, min(len(trail.records), everywhere - first + 1))
        return {**trail.delivered, **delivered}, drop

    def _queue(self, uid: str, owner: Owner) -> None:
        held = owner.trail.records
        first = owner.first_held()
        for name, lane in self.lanes.items():
            start = max(owner.delivered(name), lane.queued.get(uid, 0)) + 1
            if start > owner.trail.seq:
                continue
            for seq in range(max(start, first), owner.trail.seq + 1):
                lane.queue.append((uid, json.loads(held[seq - first])))
            lane.queued[uid] = owner.trail.seq
            lane.wake.set()
            self._gauges(lane)

    async def _deliver(self, lane: Lane) -> None:
        name = lane.sink.name
        backoff = BACKOFF_FIRST
        while True:
            if not lane.queue:
                lane.wake.clear()
                await lane.wake.wait()
                continue
            batch = [lane.queue[i] for i in range(min(BATCH, len(lane.queue)))]
            try:
                await lane.sink.send([record for _, record in batch])
            except SinkError as error:
                lane.up = False
                metrics.trail_sink_up.labels(sink=name).set(0)
                metrics.trail_send_failures_total.labels(
                    sink=name, retryable=str(error.retryable).lower()
                ).inc()
                wait = getattr(error, "retry_after", None) or backoff
                if not error.retryable:
                    wait = max(wait, self._retry_max)
                logger.warning(
                    "The audit sink %s did not take %d record(s): %s; trying again in %.0f s.",
                    name,
                    len(batch),
                    error,
                    wait,
                )
                self._gauges(lane)
                await asyncio.sleep(wait * random.uniform(0.9, 1.1))
                backoff = min(self._retry_max, backoff * 2)
                continue
            backoff = BACKOFF_FIRST
            if not lane.up:
                logger.info("The audit sink %s takes records again.", name)
            lane.up = True
            metrics.trail_sink_up.labels(sink=name).set(1)
            metrics.trail_delivered_total.labels(sink=name).inc(len(batch))
            for _ in batch:
                lane.queue.popleft()
            for uid, record in batch:
                owner = self.owners.get(uid)
                if owner is not None:
                    owner.sent[name] = max(owner.sent.get(name, 0), int(record["seq"]))
                    self._to_persist.add(uid)
            self._gauges(lane)

    async def _persist_forever(self) -> None:
        slots = asyncio.Semaphore(WRITERS)

        async def one(uid: str) -> None:
            async with slots:
                try:
                    await self._persist(uid)
                except (ApiError, OSError, TimeoutError) as error:
                    logger.warning("Could not write back the delivery of %s: %s", uid, error)
                    self._to_persist.add(uid)

        while True:
            await asyncio.sleep(1.0)
            now = self.clock()
            due = []
            for uid in list(self._to_persist):
                owner = self.owners.get(uid)
                if owner is None:
                    self._to_persist.discard(uid)
                    continue
                everywhere = all(owner.delivered(s) >= owner.trail.seq for s in self.lanes)
                stale = owner.persisted_at is None or now - owner.persisted_at >= PERSIST_EVERY
                if everywhere or stale:
                    self._to_persist.discard(uid)
                    due.append(uid)
            await asyncio.gather(*(one(uid) for uid in due))

    async def _persist(self, uid: str) -> None:
        owner = self.owners.get(uid)
        if owner is None:
            return
        trail = owner.trail
        delivered, drop = self._progress(owner, trail)
        if not delivered:
            return
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/status/trail/seq", "value": trail.seq},
            *[{"op": "remove", "path": "/status/trail/records/0"}] * drop,
            {"op": "add", "path": "/status/trail/delivered", "value": delivered},
        ]
        try:
            written = await self.kube.json_patch_status(owner.key, ops)
        except NotFoundError:
            self.owners.pop(uid, None)
            return
        except RefusedError:
            # The trail grew meanwhile: its next append writes the progress back with it.
            self._to_persist.add(uid)
            return
        owner.trail = _parse_trail(written)
        owner.persisted_at = self.clock()

    def _gauges(self, lane: Lane) -> None:
        name = lane.sink.name
        metrics.trail_pending.labels(sink=name).set(len(lane.queue))
        oldest = 0.0
        if lane.queue:
            at = parse_time(str(lane.queue[0][1].get("time") or ""))
            if at is not None:
                oldest = max(0.0, (self.clock() - at).total_seconds())
        metrics.trail_oldest_pending_seconds.labels(sink=name).set(oldest)


def _parse_trail(body: Mapping[str, Any]) -> Trail:
    raw = (body.get("status") or {}).get("trail")
    return Trail.model_validate(raw) if isinstance(raw, Mapping) else NO_TRAIL
