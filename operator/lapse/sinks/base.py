"""What every sink promises the exporter, and how it says it failed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class SinkError(Exception):
    """A batch was not delivered (whole or in part: the exporter sends it all again, in the
    same order; receivers drop repeats by each record's `id`).

    `retryable` is False for an answer that repeating will not change (a 4xx other than 408
    and 429: a wrong token, a record refused); the exporter still retries, but slowly, and
    says so loudly, since records must never be dropped.

    `retry_after` is how many seconds the receiver asked to be left alone (an HTTP
    `Retry-After`), or None when it did not say."""

    def __init__(
        self, message: str, *, retryable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Sink(Protocol):
    """One configured destination of the trail."""

    # Unique among the configured sinks; the key of `status.trail.delivered`.
    name: str

    async def send(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Deliver `records` in order, or raise SinkError. Must not block the event loop,
        must give up within the sink's timeout, and must never raise anything else for a
        failure of the network or the receiver."""
        ...

    async def close(self) -> None: ...
