"""Requests and break-glasses made around Lapse's admission webhook, seen through to a phase.

Lapse's CREATE webhook puts kopf's finalizer on every new AccessRequest and BreakGlass (see
lapse.core.kinds), so kopf never has to add it. One made around the webhook — its
configurations deleted by an admin, or the webhook failing open while no replica served —
comes without it, and then every replica's kopf adds it at the same moment, each with a JSON
patch that tests the resourceVersion. The replica whose patch comes second meets a conflict and
keeps its patch for the next cycle; in that cycle (the other replica's patch) it finds nothing
left to patch and calls no handler, and waits for a change to the object that never comes.
On the leader such an object would never get a phase.

The leader makes that change: an object with no phase and no signature from the webhook,
unchanged for `QUIET_SECONDS`, gets one annotation, and kopf runs the handlers (which find it
Invalid: nothing signed its requester). An object that passed the webhook is never touched.
Every replica follows these objects from the grant index's watch; only the leader writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lapse import metrics
from lapse.core.kinds import GRANT_KINDS
from lapse.core.owners import key_of
from lapse.core.requester import build_nudge, compute_unadmitted
from lapse.kube import ApiError, KubeApi, NotFoundError, RefusedError

logger = logging.getLogger(__name__)

# Long enough for kopf to handle an object it was not stuck on (one that then gets a phase
# costs no write here), short enough that the requester soon learns why it was refused.
QUIET_SECONDS = 2.0
# A handler that fails on the object is kopf's to retry; more nudges would not help it.
MAX_NUDGES = 3
KINDS = frozenset(kind.kind for kind in GRANT_KINDS)


@dataclass
class _Waiting:
    kind: str
    body: Mapping[str, Any]
    since: float
    nudges: int = 0


class Unadmitted:
    """Objects made around the webhook that have no phase yet, nudged while this replica leads."""

    def __init__(
        self,
        kube: KubeApi,
        *,
        key: bytes,
        leading: asyncio.Event,
        quiet: float = QUIET_SECONDS,
    ) -> None:
        self.kube = kube
        self.key = key
        self.leading = leading
        self.quiet = quiet
        self._waiting: dict[str, _Waiting] = {}
        # Nudged MAX_NUDGES times in vain: left to kopf for as long as the object lives.
        self._given_up: set[str] = set()
        self._pending = asyncio.Event()

    def observe(self, kind: str, body: Mapping[str, Any], deleted: bool) -> None:
        """One owner as the grant index's listing or watch saw it."""
        if kind not in KINDS:
            return
        metadata = body.get("metadata") or {}
        uid = str(metadata.get("uid") or "")
        if deleted or not compute_unadmitted(kind, body, self.key):
            self._waiting.pop(uid, None)
            self._given_up.discard(uid)
            return
        if uid in self._given_up:
            return
        seen = self._waiting.get(uid)
        if seen is not None and seen.body.get("metadata", {}).get("resourceVersion") == (
            metadata.get("resourceVersion")
        ):
            return
        nudges = seen.nudges if seen is not None else 0
        loop = asyncio.get_running_loop()
        self._waiting[uid] = _Waiting(kind, body, since=loop.time(), nudges=nudges)
        self._pending.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._pending.wait()
            await self.leading.wait()
            now = loop.time()
            for uid, waiting in list(self._waiting.items()):
                # Seen again or gone while an earlier nudge was on its way: not due as it was.
                if self._waiting.get(uid) is not waiting or now - waiting.since < self.quiet:
                    continue
                if waiting.nudges >= MAX_NUDGES:
                    del self._waiting[uid]
                    self._given_up.add(uid)
                    logger.warning(
                        "%s %s still has no phase after %d nudges; left to kopf's retries.",
                        waiting.kind,
                        _named(waiting.body),
                        waiting.nudges,
                    )
                    continue
                waiting.nudges += 1
                waiting.since = now
                await self._nudge(uid, waiting)
            if not self._waiting:
                self._pending.clear()
                continue
            await asyncio.sleep(self.quiet / 4)

    async def _nudge(self, uid: str, waiting: _Waiting) -> None:
        try:
            await self.kube.json_patch_owner(
                key_of(waiting.kind, waiting.body), build_nudge(waiting.body)
            )
        except NotFoundError:
            self._waiting.pop(uid, None)
            return
        except RefusedError:
            return  # changed since it was seen: that change was kopf's event
        except (ApiError, OSError, TimeoutError) as error:
            logger.warning("Could not nudge %s %s: %s", waiting.kind, _named(waiting.body), error)
            return
        metrics.unadmitted_nudges_total.inc()
        logger.info(
            "%s %s was made around Lapse's admission webhook and had no phase after %.0fs: "
            "nudged so that it is handled.",
            waiting.kind,
            _named(waiting.body),
            self.quiet,
        )


def _named(body: Mapping[str, Any]) -> str:
    metadata = body.get("metadata") or {}
    namespace = metadata.get("namespace")
    name = str(metadata.get("name") or "")
    return f"{namespace}/{name}" if namespace else name
