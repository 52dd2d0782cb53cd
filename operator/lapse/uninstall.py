"""Uninstalling ends every grant: the last replicas revoke before they go.

Helm never deletes CRDs, and `kubectl delete -k` deletes them together with the operator:
either way, once no replica runs, nothing removes the bindings Lapse made (temporary access
becomes permanent) and requests the API server is deleting wait for ever on Lapse's finalizer.
So a replica stopping because its Deployment or its namespace is going away (decided in
`lapse.core.uninstall`) first ends every grant through the grant machinery, with the status,
Event and audit line of any revocation; deletes every binding that is Lapse's by all three
marks; and takes its finalizer off every owner that has ended or is being deleted.

Both replicas stop at once and may do this together: every step reads before it writes,
deletes by UID and patches finalizers with a `test`, so a second pass finds nothing to do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from lapse.core.bindings import MANAGED_SELECTOR, compute_binding_ref, compute_owner_uid
from lapse.core.models import Phase
from lapse.core.owners import (
    STATUS_MODELS,
    key_of,
    parse_generation,
    parse_role,
    parse_status,
)
from lapse.core.uninstall import (
    UNINSTALLED_ACTIVE,
    UNINSTALLED_REASON,
    UNINSTALLED_WAITING,
    compute_finalizer_removal,
    compute_uninstalling,
    is_deleting,
)
from lapse.grantor import Grantor
from lapse.kube import ApiError, NotFoundError, RefusedError

logger = logging.getLogger(__name__)

# Calls in flight at once: thousands of grants must end within the pod's grace period.
CONCURRENCY = 32
FAILURES = (ApiError, OSError, TimeoutError)


@dataclass
class UninstallCounts:
    """What the uninstall did, kept as it goes so a pass cut short by its deadline still says."""

    ended: int = 0
    bindings: int = 0
    finalizers: int = 0
    # Owners still carrying the finalizer because they could not be ended, and calls that failed.
    kept: int = 0
    failed: int = 0

    def describe(self) -> str:
        return (
            f"ended {self.ended} grant(s), deleted {self.bindings} binding(s), removed the "
            f"finalizer from {self.finalizers} object(s); {self.kept} kept it, "
            f"{self.failed} call(s) failed"
        )


class Uninstaller:
    def __init__(self, grantor: Grantor) -> None:
        self.grantor = grantor
        self.kube = grantor.kube
        self.settings = grantor.settings
        # The Deployment seen at start-up: only its going away is an uninstall.
        self.deployment_uid: str | None = None

    async def arm(self) -> None:
        """At start-up: remember the Deployment this replica runs under. A name that finds
        none leaves the check disarmed, so a wrong setting can never end every grant."""
        name, namespace = self.settings.deployment, self.settings.namespace
        if not name:
            return
        try:
            found = await self.kube.get_deployment(namespace, name)
        except FAILURES as error:
            logger.warning(
                "Could not read Deployment %s/%s: %s; stopping will not end grants.",
                namespace,
                name,
                error,
            )
            return
        if found is None:
            logger.warning(
                "Deployment %s/%s (LAPSE_DEPLOYMENT) does not exist; stopping will not end grants.",
                namespace,
                name,
            )
            return
        self.deployment_uid = str((found.get("metadata") or {}).get("uid") or "") or None

    async def uninstalling(self) -> bool:
        """Whether this stop is an uninstall; a read that fails counts as a restart."""
        if self.deployment_uid is None:
            return False
        namespace = self.settings.namespace
        try:
            found_namespace = await self.kube.get_namespace(namespace)
            deployment = await self.kube.get_deployment(namespace, self.settings.deployment)
        except FAILURES as error:
            logger.warning("Could not tell an uninstall from a restart: %s; ending nothing.", error)
            return False
        return compute_uninstalling(found_namespace, deployment, deployment_uid=self.deployment_uid)

    async def stop(self) -> UninstallCounts | None:
        """At shutdown: if Lapse is being uninstalled, end everything within the time allowed.
        None when this is only a restart."""
        if not await self.uninstalling():
            return None
        timeout = self.settings.uninstall_timeout
        logger.warning("Lapse is being uninstalled: ending every grant (within %ss).", timeout)
        counts = UninstallCounts()
        try:
            await asyncio.wait_for(self.end_everything(counts), timeout)
        except TimeoutError:
            logger.error("Uninstall cut short after %ss: %s.", timeout, counts.describe())
            return counts
        except FAILURES as error:
            logger.error("Uninstall failed (%s): %s.", error, counts.describe())
            return counts
        logger.info("Uninstalled: %s.", counts.describe())
        return counts

    async def end_everything(self, counts: UninstallCounts) -> None:
        """Bindings first (access ends now, whatever happens next), then the records, then
        the finalizers of what has ended."""
        bindings = await self._listed(self.kube.list_bindings(MANAGED_SELECTOR))
        ours = [b for b in bindings or () if compute_owner_uid(b) is not None]
        await self._bounded([partial(self._delete_binding, b) for b in ours], counts, "bindings")
        for kind in STATUS_MODELS:
            owners = await self._owners(kind)
            await self._bounded(
                [partial(self._end_owner, kind, body) for body in owners], counts, "ended"
            )
        for kind in STATUS_MODELS:
            owners = await self._owners(kind)
            await self._bounded(
                [partial(self._release, kind, body) for body in owners], counts, "finalizers"
            )
        for kind in STATUS_MODELS:
            owners = await self._owners(kind)
            counts.kept += sum(1 for body in owners if compute_finalizer_removal(body) is not None)

    async def _delete_binding(self, binding: Mapping[str, Any]) -> bool:
        return await self.grantor.delete_binding(compute_binding_ref(binding))

    async def _end_owner(self, kind: str, listed: Mapping[str, Any]) -> bool:
        """Revoke one owner that has not ended, read afresh so that another replica's end is
        not written twice."""
        key = key_of(kind, listed)
        if parse_status(kind, listed).phase in _ENDED:
            return False
        body = await self.grantor.read_owner(key)
        if body is None:
            return False
        status = parse_status(kind, body)
        if status.phase in _ENDED:
            return False
        self.grantor.reporter.note(key, body)
        active = status.phase == Phase.ACTIVE
        await self.grantor.end(
            key,
            role=parse_role(body),
            status=status,
            phase=Phase.REVOKED,
            reason=UNINSTALLED_REASON,
            message=UNINSTALLED_ACTIVE if active else UNINSTALLED_WAITING,
            generation=parse_generation(body),
            # An owner being deleted keeps its end in the Event and the audit line, as any
            # deleted owner does.
            patch_status=not is_deleting(body),
        )
        return True

    async def _release(self, kind: str, body: Mapping[str, Any]) -> bool:
        """Take the finalizer off an owner that has ended or is being deleted; one that could
        not be ended keeps it, so deleting it later still revokes."""
        key = key_of(kind, body)
        for _ in range(2):
            removal = compute_finalizer_removal(body)
            if removal is None:
                return False
            ended = parse_status(kind, body).phase in _ENDED or key in self.grantor.ended
            if not ended and not is_deleting(body):
                return False
            try:
                await self.kube.json_patch_owner(key, removal)
            except NotFoundError:
                return False
            except RefusedError:
                # The finalizers changed since the listing: look again.
                fresh = await self.grantor.read_owner(key)
                if fresh is None:
                    return False
                body = fresh
                continue
            return True
        return False

    async def _owners(self, kind: str) -> list[dict[str, Any]]:
        """Every owner of `kind`; none when the kind is not served (its CRD is gone)."""
        found: list[dict[str, Any]] = []
        try:
            async for page in self.kube.owner_pages(kind):
                found.extend(page)
        except NotFoundError:
            return []
        return found

    async def _listed(
        self, listing: Awaitable[list[dict[str, Any]]]
    ) -> list[dict[str, Any]] | None:
        try:
            return await listing
        except FAILURES as error:
            logger.warning("Uninstall could not list bindings: %s", error)
            return None

    async def _bounded(
        self, jobs: Sequence[Callable[[], Awaitable[bool]]], counts: UninstallCounts, field: str
    ) -> None:
        """Run `jobs` a few at a time; each that did something adds one to `field`. A failure
        is counted and logged, and never stops the others."""
        slots = asyncio.Semaphore(CONCURRENCY)

        async def run(job: Callable[[], Awaitable[bool]]) -> None:
            async with slots:
                try:
                    done = await job()
                except FAILURES as error:
                    counts.failed += 1
                    logger.warning("Uninstall step failed: %s", error)
                    return
            if done:
                setattr(counts, field, getattr(counts, field) + 1)

        await asyncio.gather(*(run(job) for job in jobs))


_ENDED = frozenset(p for p in Phase if p.ended)
