"""The audit sink: the API server's audit events, turned into each grant's activity record.

The API server's audit webhook backend POSTs `audit.k8s.io/v1` EventLists to Lapse's webhook
server (`/audit`). `AuditSink.receive` authenticates the caller and puts the events on a bounded
queue, answering at once: the API server must never wait on Lapse, so when the queue is full
events are dropped and counted (`lapse_audit_events_total{result="dropped"}`), never queued
without bound. One task folds queued events into the record of every grant they belong to
(`lapse.core.activity`); another writes changed records to the grants' status every
`flush_interval`, so a review reads them from the API and an operator restart loses only what
was not written yet. The grants it knows come from the watch Lapse already has (`track`),
ended ones included for `grace` after their end, since audit batches arrive late.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from lapse import metrics
from lapse.config import Settings
from lapse.core.activity import (
    ActivityGrant,
    ActivityTally,
    AuditEvent,
    build_activity_grant,
    compute_event_keys,
    compute_matches,
    is_write,
    parse_audit_event,
)
from lapse.core.grants import GrantKey
from lapse.core.owners import parse_status
from lapse.kube import ApiError, ConflictError, KubeApi, NotFoundError, RefusedError

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Events folded between two chances for everything else in the process to run.
FOLD_CHUNK = 100


class AuditRefused(Exception):
    """The caller is not the API server Lapse was told to trust."""


class AuditBusy(Exception):
    """The queue is full: the batch is not taken."""


def read_token(path: Path | None) -> str:
    if path is None:
        return ""
    return path.read_text().strip()


class ActivityRecorder:
    def __init__(self, kube: KubeApi, settings: Settings, clock: Clock) -> None:
        self.kube = kube
        self.clock = clock
        self.token = read_token(settings.audit_token_file)
        self.client_names = settings.audit_client_names
        self.flush_interval = settings.audit_flush_interval
        self.max_rate = settings.audit_max_rate
        self.grace = timedelta(seconds=settings.audit_grace)
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(settings.audit_queue_size)
        # Grants by subject key, and each grant's tally once it has a record.
        self.grants: dict[str, dict[GrantKey, ActivityGrant]] = {}
        self.tallies: dict[GrantKey, ActivityTally] = {}
        self.dirty: set[GrantKey] = set()
        self.enabled = bool(self.token or settings.audit_client_ca)

    # Grants -----------------------------------------------------------------------------

    def track(self, kind: str, body: Mapping[str, Any], deleted: bool = False) -> None:
        """Follow a grant owner's object: its window and scope, and the record it carries."""
        grant = build_activity_grant(kind, body)
        metadata = body.get("metadata") or {}
        key = GrantKey(
            kind, metadata.get("namespace"), str(metadata.get("name", "")), metadata.get("uid", "")
        )
        # Grants long ended (a restart lists every request ever kept) get no more events.
        if deleted or grant is None or grant.end + self.grace < self.clock():
            self._forget(key)
            return
        self.grants.setdefault(grant.subject_key, {})[key] = grant
        if key not in self.tallies:
            self.tallies[key] = ActivityTally.of(parse_status(kind, body).activity)

    def _forget(self, key: GrantKey) -> None:
        for held in self.grants.values():
            held.pop(key, None)
        self.tallies.pop(key, None)
        self.dirty.discard(key)

    def _prune(self, now: datetime) -> None:
        """Ended grants are followed for `grace` after their end, then let go."""
        for subject in list(self.grants):
            held = self.grants[subject]
            for key, grant in list(held.items()):
                if grant.end + self.grace < now and key not in self.dirty:
                    del held[key]
                    self.tallies.pop(key, None)
            if not held:
                del self.grants[subject]

    # Receiving ----------------------------------------------------------------------------

    def authenticate(self, headers: Mapping[str, str], peercert: Any) -> None:
        """The webhook's bearer token, or a client certificate the TLS layer verified against
        `LAPSE_AUDIT_CLIENT_CA` (and, if listed, with one of the allowed common names)."""
        if not self.enabled:
            raise AuditRefused("the audit sink is not configured (LAPSE_AUDIT_TOKEN_FILE)")
        authorization = headers.get("Authorization") or headers.get("authorization") or ""
        if self.token and authorization.startswith("Bearer "):
            given = authorization.removeprefix("Bearer ").strip()
            if hmac.compare_digest(given.encode(), self.token.encode()):
                return
        if peercert:
            names = {
                value
                for rdn in peercert.get("subject", ())
                for name, value in rdn
                if name == "commonName"
            }
            if not self.client_names or names & self.client_names:
                return
        raise AuditRefused("unauthenticated")

    def admit(self, headers: Mapping[str, str], peercert: Any) -> None:
        """Before a batch is read: the caller authenticated (AuditRefused otherwise), and room
        in the queue (AuditBusy otherwise: the API server sends the batch again later, and
        drops it when its own buffer is full)."""
        try:
            self.authenticate(headers, peercert)
        except AuditRefused:
            metrics.audit_batches_total.labels(result="refused").inc()
            raise
        if self.queue.full():
            metrics.audit_batches_total.labels(result="busy").inc()
            raise AuditBusy("the audit queue is full")

    def receive(self, batch: Any) -> dict[str, Any]:
        """Queue what fits of one admitted EventList; the rest is dropped and counted."""
        items = batch.get("items") if isinstance(batch, Mapping) else None
        metrics.audit_batches_total.labels(result="accepted").inc()
        dropped = 0
        for item in items or ():
            if not isinstance(item, Mapping) or item.get("stage") != "ResponseComplete":
                continue
            try:
                self.queue.put_nowait(dict(item))
            except asyncio.QueueFull:
                dropped += 1
        if dropped:
            metrics.audit_events_total.labels(result="dropped").inc(dropped)
        metrics.audit_queue_depth.set(self.queue.qsize())
        return {}

    # Folding and writing ------------------------------------------------------------------

    def fold(self, item: Mapping[str, Any]) -> int:
        """One queued event into the record of every grant it belongs to; how many."""
        event = parse_audit_event(item)
        if event is None:
            metrics.audit_events_total.labels(result="unreadable").inc()
            return 0
        matched = 0
        for subject_key in dict.fromkeys(compute_event_keys(event)):
            held = self.grants.get(subject_key)
            if not held:
                continue
            for grant in compute_matches(event, held.values()):
                tally = self.tallies.setdefault(grant.key, ActivityTally())
                if tally.add(event):
                    matched += 1
                    self.dirty.add(grant.key)
                    self._count(grant, event)
        metrics.audit_events_total.labels(result="matched" if matched else "unmatched").inc()
        return matched

    @staticmethod
    def _count(grant: ActivityGrant, event: AuditEvent) -> None:
        if grant.breakglass and is_write(event):
            metrics.breakglass_writes_total.labels(resource=event.resource).inc()

    async def run(self) -> None:
        """Fold queued events as they come, in chunks, at most `max_rate` a second: grants and
        revocations share this process and must never wait behind a flood of audit events
        (past the rate the queue fills, and then events are dropped and counted). Changed
        records are written every flush_interval."""
        flusher = asyncio.create_task(self._flush_forever(), name="lapse-activity-flush")
        loop = asyncio.get_running_loop()
        window, done = loop.time(), 0
        try:
            while True:
                self.fold(await self.queue.get())
                folded = 1
                while folded < FOLD_CHUNK and not self.queue.empty():
                    self.fold(self.queue.get_nowait())
                    folded += 1
                metrics.audit_queue_depth.set(self.queue.qsize())
                done += folded
                elapsed = loop.time() - window
                if elapsed >= 1.0:
                    window, done = loop.time(), 0
                elif done >= self.max_rate:
                    await asyncio.sleep(1.0 - elapsed)
                    window, done = loop.time(), 0
                else:
                    await asyncio.sleep(0)
        finally:
            flusher.cancel()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except Exception:
                logger.exception("Could not write activity records; trying again")

    async def flush(self, only: GrantKey | None = None) -> None:
        """Write each changed record to its grant's status (under a UID test: a grant deleted
        and made again under its name never gets the old one's record)."""
        now = self.clock()
        keys = [only] if only is not None else list(self.dirty)
        for key in keys:
            if key not in self.dirty or key not in self.tallies:
                continue
            self.dirty.discard(key)
            record = self.tallies[key].build(now)
            operations: list[dict[str, Any]] = [
                {"op": "test", "path": "/metadata/uid", "value": key.uid},
                {"op": "add", "path": "/status/activity", "value": record.to_wire()},
            ]
            try:
                await self.kube.json_patch_status(key, operations)
            except (NotFoundError, ConflictError):
                self._forget(key)
            except RefusedError as error:
                # The grant was made again under its name (the UID test), or the record was
                # refused: either way this record has nowhere to go.
                logger.warning("Activity of %s not written: %s", key.describe(), error)
                self._forget(key)
            except (ApiError, OSError, TimeoutError) as error:
                self.dirty.add(key)
                logger.warning("Could not write the activity of %s: %s", key.describe(), error)
        self._prune(now)

    def record_of(self, key: GrantKey) -> Any:
        tally = self.tallies.get(key)
        return tally.build(self.clock()) if tally is not None else None
