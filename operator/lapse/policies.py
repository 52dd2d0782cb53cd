"""The AccessPolicy an object names, even when kopf's policy index has not heard of it yet.

Keepers and webhooks judge by kopf's `lapse_policies` index, fed by a watch. After the API
server restarts, that watch can stay in kopf's backoff for many seconds (kube-apiserver answers
429 "storage is (re)initializing" while its caches fill), and a policy created meanwhile is in
the API but not in the index. A request granted or left pending under such a policy names it
in its status; refusing its approver, or ignoring their approval, because the index lags would
be wrong. So a name the index lacks is read from the API, once, when it is needed. A policy the
API does not have either stays missing: nothing is granted on a name alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from lapse.core.models import AccessPolicy
from lapse.core.policy import parse_policy
from lapse.kube import KubeApi

logger = logging.getLogger(__name__)


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
            f"AccessPolicy {name} was not in the policy index yet; read from the API: "
            f"{'found' if read is not None else 'none that can be read'}."
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
