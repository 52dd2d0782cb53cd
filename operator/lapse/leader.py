"""Leader election: of several replicas, only the holder of a Lease acts.

The expiry scheduler and the sweep live in memory, and two replicas acting at once would grant,
revoke and audit everything twice. So every replica keeps its webhooks answering (they write
nothing), but only the one holding the `coordination.k8s.io/v1` Lease named by
`LAPSE_LEASE_NAME` in `LAPSE_NAMESPACE` runs the handlers that write, the scheduler and the
sweep. The rules are in `lapse.core.leases`; this module reads and writes the Lease.

A leader that cannot renew within the renew deadline exits at once rather than risk acting
beside a new leader: a restart brings it back as a standby. Handlers that write are wrapped in
`lapse.handlers.leading`, which holds them until this replica leads.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import aiohttp

from lapse.config import Settings
from lapse.core.leases import (
    LeaseAction,
    build_lease,
    build_release,
    compute_lease_action,
    parse_lease,
    renew_deadline,
)
from lapse.kube import LEASES, ApiError, ConflictError, KubeApi

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
T = TypeVar("T")
# The exit status of a leader that lost its lease: not a crash, a deliberate stop.
LOST_LEASE_EXIT = 3


def utcnow() -> datetime:
    return datetime.now(UTC)


class Leadership:
    """Whether this replica may act. Without leader election it always may."""

    def __init__(self, kube: KubeApi, settings: Settings, clock: Clock = utcnow) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock
        self.identity = settings.identity
        self.duration = timedelta(seconds=settings.lease_duration)
        self.renew = timedelta(seconds=settings.lease_renew)
        # Set when the lease is held (at once without leader election).
        self.acquired = asyncio.Event()
        # Set once the new leader has caught up (the sweep ran): handlers may act from then on.
        self.ready = asyncio.Event()
        self._renewed_at: datetime | None = None
        self._seen: tuple[str, datetime | None] | None = None
        self._observed_at: datetime | None = None
        # The lease's resourceVersion at the last attempt: a standby watches it from there.
        self._version = ""
        if not settings.leader_election:
            self.acquired.set()

    @property
    def leading(self) -> bool:
        return self.ready.is_set()

    async def run(self) -> None:
        """Keep trying to take the lease, and keep renewing it once held."""
        if not self.settings.leader_election:
            return
        logger.info(
            "Leader election on: Lease %s/%s as %s (duration %ss, renew every %ss).",
            self.settings.namespace,
            self.settings.lease_name,
            self.identity,
            self.settings.lease_duration,
            self.settings.lease_renew,
        )
        deadline = renew_deadline(self.duration, self.renew)
        while True:
            started = asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(self.attempt(), self.renew.total_seconds())
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
                logger.warning("Could not read or write the lease: %s", error)
            if self.acquired.is_set():
                renewed = self._renewed_at or self.clock()
                if self.clock() - renewed > deadline:
                    self._step_down("it could not renew the lease in time")
            elapsed = asyncio.get_running_loop().time() - started
            wait = max(0.0, self.renew.total_seconds() - elapsed)
            if self.acquired.is_set():
                await asyncio.sleep(wait)
            else:
                await self._until_released(wait)

    async def _until_released(self, within: float) -> None:
        """Wait `within` seconds, or less if the lease is released meanwhile: a leader that
        stops gracefully (a rolling restart) gives the lease up, and grants keep falling due
        while nobody leads, so a standby must not wait for its next attempt to notice."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        version = self._version
        try:
            if version:
                async with asyncio.timeout(within):
                    path = LEASES.format(namespace=self.settings.namespace)
                    async for type_, body in self.kube.watch(path, version):
                        metadata = body.get("metadata") or {}
                        if metadata.get("name") != self.settings.lease_name:
                            continue
                        holder = (body.get("spec") or {}).get("holderIdentity")
                        if type_ == "DELETED" or (type_ == "MODIFIED" and not holder):
                            return
        except TimeoutError:
            return
        except (ApiError, aiohttp.ClientError, OSError, ValueError) as error:
            logger.debug("The watch of the lease failed: %s", error)
        await asyncio.sleep(max(0.0, deadline - loop.time()))

    async def attempt(self) -> None:
        """One round: take the lease if it is free or ours, renew it if held."""
        namespace, name = self.settings.namespace, self.settings.lease_name
        body = await self.kube.get_lease(namespace, name)
        self._version = str(((body or {}).get("metadata") or {}).get("resourceVersion") or "")
        lease = parse_lease(body)
        now = self.clock()
        if lease is not None and (lease.holder, lease.renew_time) != self._seen:
            self._seen = (lease.holder, lease.renew_time)
            self._observed_at = now
        action = compute_lease_action(lease, self.identity, now, self._observed_at)
        if action == LeaseAction.WAIT:
            if self.acquired.is_set():
                self._step_down(f"{lease.holder if lease else 'another replica'} holds the lease")
            return
        manifest = build_lease(name, namespace, self.identity, now, self.duration, lease)
        try:
            if action == LeaseAction.CREATE:
                await self.kube.create_lease(namespace, manifest)
            else:
                await self.kube.replace_lease(namespace, name, manifest)
        except ConflictError:
            # Another replica wrote first: read again on the next round.
            return
        self._renewed_at = now
        if not self.acquired.is_set():
            logger.info("Acquired the lease %s/%s as %s.", namespace, name, self.identity)
            self.acquired.set()

    async def release(self) -> None:
        """Give the lease up on a graceful stop (a rolling restart, a deleted pod): the standby
        leads at its next attempt, within one renew interval, not after the whole duration.
        Only a lease still ours is released; any failure leaves it to expire as before."""
        if not (self.settings.leader_election and self.acquired.is_set()):
            return
        namespace, name = self.settings.namespace, self.settings.lease_name
        try:
            lease = parse_lease(await self.kube.get_lease(namespace, name))
            if lease is None or lease.holder != self.identity:
                return
            # Nothing of this replica may act once another can take over.
            self.ready.clear()
            self.acquired.clear()
            await self.kube.replace_lease(namespace, name, build_release(lease, name, namespace))
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
            logger.warning("Could not release the lease; it expires by itself: %s", error)
            return
        logger.info("Released the lease %s/%s.", namespace, name)

    def _step_down(self, why: str) -> None:
        logger.critical("Stopping at once because %s; a restart comes back as a standby.", why)
        # Not a graceful shutdown: handlers in flight must not write beside the new leader.
        os._exit(LOST_LEASE_EXIT)
