"""Retention: ended requests and break-glasses leave the cluster a set time after they end.

Kept forever, ended owners fill etcd (about 10 KB each; at a thousand grants a day the default
2 GiB quota in months, and then the whole cluster turns read-only) and every start of the
operator lists them all. History lasts in the audit sinks instead: an owner is deleted only
once every configured sink has its every record, the last of which says it was retired
(`lapse.exporter`), so a sink that is down for days holds retention back and loses nothing.
A break-glass still waiting for its review is kept until it is reviewed: deleting it would
erase the obligation. Deletion carries the owner's UID as a precondition.

The owner's Events go with it. They said what the trail says, which every sink now holds;
kube-apiserver would keep them its `--event-ttl` (an hour by default) about an object that no
longer exists, and in etcd they weigh more than the owner did. One request per owner (a
collection delete selected by the owner's UID) removes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from lapse import metrics
from lapse.core.uninstall import compute_finalizer_removal
from lapse.exporter import Exporter, Owner
from lapse.kube import (
    ApiError,
    ConflictError,
    ForbiddenError,
    KubeApi,
    NotFoundError,
    RefusedError,
    owner_path,
)
from lapse.reporting import CLUSTER_EVENTS_NAMESPACE

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Deletes in flight at once: a first run after retention is turned on may face a backlog of
# tens of thousands, which must not crowd out grants and revocations.
DELETERS = 4


class Retention:
    def __init__(
        self,
        kube: KubeApi,
        exporter: Exporter,
        *,
        keep: timedelta,
        interval: timedelta,
        clock: Clock,
        leading: asyncio.Event,
    ) -> None:
        self.kube = kube
        self.exporter = exporter
        self.keep = keep
        self.interval = interval
        self.clock = clock
        self._leading = leading
        self._events_forbidden = False

    @property
    def enabled(self) -> bool:
        return self.keep > timedelta(0)

    async def run(self) -> None:
        if not self.enabled:
            return
        await self._leading.wait()
        while True:
            try:
                await self.pass_once()
            except (ApiError, OSError, TimeoutError) as error:
                logger.warning("Retention could not finish a pass: %s", error)
            await asyncio.sleep(self.interval.total_seconds())

    async def pass_once(self) -> int:
        """Delete every owner past its retention whose trail is delivered; ask the exporter
        to retire those whose trail is not closed yet. Returns how many were deleted."""
        now = self.clock()
        due: list[Owner] = []
        undelivered = unreviewed = 0
        sinks = self.exporter.sinks
        for owner in list(self.exporter.owners.values()):
            if owner.ended_at is None or owner.ended_at + self.keep > now:
                continue
            if owner.needs_review:
                unreviewed += 1
                continue
            if sinks and not (owner.retired and owner.complete(sinks)):
                self.exporter.retire(owner.key.uid)
                undelivered += 1
                continue
            due.append(owner)
        metrics.retention_held.labels(reason="undelivered").set(undelivered)
        metrics.retention_held.labels(reason="unreviewed").set(unreviewed)
        slots = asyncio.Semaphore(DELETERS)

        async def one(owner: Owner) -> bool:
            async with slots:
                return await self._delete(owner)

        results = await asyncio.gather(*(one(owner) for owner in due))
        deleted = sum(results)
        if deleted:
            logger.info("Retention deleted %d ended owner(s).", deleted)
        return deleted

    async def _delete_events(self, owner: Owner) -> None:
        key = owner.key
        if self._events_forbidden or not key.uid:
            return
        try:
            await self.kube.delete_events_about(key.namespace or CLUSTER_EVENTS_NAMESPACE, key.uid)
        except ForbiddenError as error:
            # RBAC without `deletecollection` on Events (narrowed, or an older chart's): the
            # Events expire by themselves; said once, not for every owner.
            self._events_forbidden = True
            logger.warning("Retention leaves Events to expire: %s", error)
        except (ApiError, OSError, TimeoutError) as error:
            logger.info("Events about %s left to expire: %s", key.describe(), error)

    async def _delete(self, owner: Owner) -> bool:
        key = owner.key
        try:
            await self.kube.delete_object(
                owner_path(key.kind, key.namespace, key.name), uid=key.uid
            )
        except (NotFoundError, ConflictError):
            self.exporter.owners.pop(key.uid, None)
            return False
        except (ApiError, OSError, TimeoutError) as error:
            # One owner's failure (a 403 where RBAC was narrowed) holds back only that one.
            logger.warning("Retention could not delete %s: %s", key.describe(), error)
            return False
        # Deleting only marks it while Lapse's finalizer is on, and kopf takes that off in
        # its own time, behind every other object's events: tens of thousands of them when
        # retention first runs. The owner has ended; nothing is left to revoke on its
        # deletion, so the finalizer comes off now (the patch tests it is still where seen).
        removal = compute_finalizer_removal({"metadata": {"finalizers": list(owner.finalizers)}})
        if removal is not None:
            try:
                await self.kube.json_patch_owner(key, removal)
            except (NotFoundError, RefusedError):
                # Gone already, or its finalizers changed since seen: kopf takes it off.
                logger.debug("%s left without Lapse releasing it.", key.describe())
            except (ApiError, OSError, TimeoutError) as error:
                logger.warning("Could not release %s after deleting it: %s", key.describe(), error)
        await self._delete_events(owner)
        metrics.retention_deleted_total.labels(kind=key.kind).inc()
        # Gone from the table now: the watch's DELETED event may come after the next pass.
        self.exporter.owners.pop(key.uid, None)
        return True
