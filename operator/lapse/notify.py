"""Outgoing notifications: the audit trail, forwarded to a chat or paging webhook.

The notifier subscribes to `lapse.audit` and forwards the actions listed in `FORWARDED`, so a
new kind of record is announced by adding its action here, not by a second mechanism. Records
go into a bounded queue drained by one background task: a slow or dead receiver never delays a
grant or a revocation; a full queue drops (and counts) rather than blocks. The body is
Slack-compatible: `{"text": "...", "lapse": {...the audit record...}}`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from lapse import audit, metrics

logger = logging.getLogger(__name__)

QUEUE_SIZE = 1000
# A few deliveries in flight at once, so one slow receiver call does not hold up the rest.
WORKERS = 4
FIRST_BACKOFF = 0.5

# Audit action → what the notification says. Other modules' records are forwarded by adding
# their actions here.
FORWARDED: dict[str, str] = {
    "pending": "awaits approval",
    "approval": "was approved by one approver",
    "approved": "was approved",
    "denied": "was denied",
    "granted": "was granted",
    "expiring-soon": "expires soon",
    "expired": "expired",
    "revoked": "was revoked",
    "activated": "broke glass",
    "review-due": "awaits its review",
}


def build_text(record: Mapping[str, Any]) -> str:
    """One line for humans: what happened to which object, for whom, and why."""
    where = f"{record.get('namespace')}/" if record.get("namespace") else ""
    what = FORWARDED.get(str(record.get("action")), str(record.get("action")))
    text = f"{record.get('kind')} {where}{record.get('name')} {what}"
    details = []
    if record.get("subject"):
        details.append(f"for {record['subject']}")
    if record.get("role"):
        details.append(f"role {record['role']}")
    if record.get("approvers"):
        details.append(f"approvers: {record['approvers']}")
    if record.get("pullRequest"):
        details.append(f"PR {record['pullRequest']}")
    if details:
        text += " (" + ", ".join(details) + ")"
    message = record.get("message")
    text = f"{text}: {message}" if message else text + "."
    # Those asked to approve read what they would approve, not only a role's name.
    if record.get("risk") and record.get("action") in ("pending", "activated", "review-due"):
        text += f" {record['risk']}"
    return text


class Notifier:
    def __init__(self, url: str, timeout: float, retries: int) -> None:
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.queue: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self._session: aiohttp.ClientSession | None = None

    def offer(self, record: Mapping[str, Any]) -> None:
        """The audit subscriber: enqueue without waiting, or drop and count."""
        action = str(record.get("action"))
        if action not in FORWARDED:
            return
        try:
            self.queue.put_nowait(dict(record))
        except asyncio.QueueFull:
            metrics.notifications_total.labels(event=action, result="dropped").inc()
            logger.warning("Notification queue full; dropped a %s notification.", action)

    def start(self) -> asyncio.Task[None]:
        audit.subscribe(self.offer)
        return asyncio.create_task(self.run(), name="lapse-notifier")

    async def run(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        workers = [asyncio.create_task(self._drain()) for _ in range(WORKERS)]
        try:
            await asyncio.gather(*workers)
        finally:
            audit.unsubscribe(self.offer)
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self._session.close()

    async def _drain(self) -> None:
        while True:
            record = await self.queue.get()
            await self._deliver(record)

    async def _deliver(self, record: Mapping[str, Any]) -> None:
        assert self._session is not None
        action = str(record.get("action"))
        payload = {"text": build_text(record), "lapse": dict(record)}
        delay = FIRST_BACKOFF
        for attempt in range(1, self.retries + 2):
            try:
                async with self._session.post(self.url, json=payload) as response:
                    if response.status < 300:
                        metrics.notifications_total.labels(event=action, result="sent").inc()
                        return
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                problem = str(error) or type(error).__name__
            if attempt <= self.retries:
                metrics.notifications_total.labels(event=action, result="retried").inc()
                await asyncio.sleep(delay)
                delay *= 2
        metrics.notifications_total.labels(event=action, result="failed").inc()
        logger.warning("Could not deliver a %s notification: %s.", action, problem)
