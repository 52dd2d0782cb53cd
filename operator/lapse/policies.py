"""The AccessPolicies Lapse judges by: its own index of them, and a fresh read of one it lacks.

Every decision and every webhook answer rests on the policies, so their index must never hold a
policy that is gone: a deleted policy still in it would keep granting. kopf's indexes cannot
promise that: when a watch must list again (410 Gone, after a long disconnection) kopf adds what
the new listing holds but never drops what it no longer holds. `PolicyIndex` lists and watches
itself, and a new listing replaces the whole index. It also retries a broken watch every second,
where kopf's backoff after an API server restart (429 "storage is (re)initializing") left a
policy created meanwhile unseen for many seconds.

Even so the index can lag a policy created a moment ago. A request granted or left pending
under it names it in its status; refusing its approver, or ignoring their approval, because the
index lags would be wrong, so `PolicyReader` reads a name the index lacks from the API, once.
A policy the API does not have either stays missing: nothing is granted on a name alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from lapse import metrics
from lapse.core.kinds import ACCESS_POLICY, GROUP, VERSION
from lapse.core.models import AccessPolicy
from lapse.core.policy import parse_policy
from lapse.kube import ApiError, GoneError, KubeApi

logger = logging.getLogger(__name__)

PATH = f"/apis/{GROUP}/{VERSION}/{ACCESS_POLICY.plural}"
# How long a webhook waits for the first listing before it answers from what there is.
WEBHOOK_WAIT_SECONDS = 5.0


class PolicyIndex:
    """Every readable AccessPolicy by name, as listed and then watched; `ready` once listed."""

    def __init__(self) -> None:
        self._policies: dict[str, AccessPolicy] = {}
        self._version: str | None = None
        self.ready = asyncio.Event()

    def all(self) -> list[AccessPolicy]:
        return list(self._policies.values())

    async def current(self, *, wait: float | None = None) -> list[AccessPolicy]:
        """Every policy, once the first listing is in (or after `wait` seconds, whatever
        there is: an empty answer grants nothing)."""
        if not self.ready.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ready.wait(), wait)
        return self.all()

    def observe(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        name = str((body.get("metadata") or {}).get("name") or "")
        if deleted:
            self._forget(name)
            return
        policy = parse_policy(body)
        if policy is None:
            # A policy that cannot be read matches nothing: a broken policy must not grant.
            logger.warning(f"AccessPolicy {name} cannot be read and matches nothing.")
            self._forget(name)
            return
        self._policies[name] = policy
        metrics.policy_info.labels(policy=name).set(1)

    def _forget(self, name: str) -> None:
        if self._policies.pop(name, None) is not None:
            metrics.policy_info.remove(name)

    async def load(self, kube: KubeApi) -> None:
        """List every policy; what the listing does not hold leaves the index."""
        versions: list[str] = []
        listed: dict[str, AccessPolicy] = {}
        async for page in kube.pages(PATH, versions):
            for body in page:
                policy = parse_policy(body)
                name = str((body.get("metadata") or {}).get("name") or "")
                if policy is None:
                    logger.warning(f"AccessPolicy {name} cannot be read and matches nothing.")
                else:
                    listed[name] = policy
        gone = sorted(set(self._policies) - set(listed))
        if gone:
            logger.info(f"AccessPolicies gone since the last listing: {', '.join(gone)}.")
        for name in gone:
            self._forget(name)
        self._policies = listed
        for name in listed:
            metrics.policy_info.labels(policy=name).set(1)
        self._version = versions[0] if versions and versions[0] else None
        self.ready.set()

    async def follow(self, kube: KubeApi) -> None:
        """Keep the index current: watch, resume where the last event left off, list again
        when that is too old."""
        while True:
            try:
                if self._version is None:
                    await self.load(kube)
                if self._version is None:
                    await asyncio.sleep(1)
                    continue
                async for type_, body in kube.watch(PATH, self._version):
                    version = (body.get("metadata") or {}).get("resourceVersion")
                    if version:
                        self._version = str(version)
                    if type_ in ("ADDED", "MODIFIED", "DELETED"):
                        self.observe(body, deleted=type_ == "DELETED")
            except GoneError:
                self._version = None
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
                logger.warning("The watch of AccessPolicy for the policy index failed: %s", error)
                await asyncio.sleep(1)


class PolicyReader:
    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube

    async def named(
        self, policies: Sequence[AccessPolicy], name: str | None
    ) -> AccessPolicy | None:
        """The policy `name` from `policies` (the index), else from the API; None when neither
        has one that can be read."""
        if not name:
            return None
        for known in policies:
            if known.metadata.name == name:
                return known
        body = await self.kube.get_policy(name)
        read = parse_policy(body) if body is not None else None
        logger.info(
            f"AccessPolicy {name} is not in the policy index; read from the API: "
            f"{'there' if read is not None else 'none there that can be read'}."
        )
        return read

    async def complete(
        self, policies: Sequence[AccessPolicy], name: str | None
    ) -> list[AccessPolicy]:
        """`policies` with the one named `name` added when the index lacks it."""
        if not name or any(p.metadata.name == name for p in policies):
            return list(policies)
        policy = await self.named(policies, name)
        return [*policies, policy] if policy is not None else list(policies)
