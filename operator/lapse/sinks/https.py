"""The HTTPS JSON batch sink: the trail POSTed to a collector in Splunk HEC's event shape.

Most security teams already run something that takes Splunk's HTTP Event Collector protocol:
Splunk itself, or Vector, Fluent Bit or an OpenTelemetry collector in front of Elastic or
OpenSearch. So this sink speaks exactly that and nothing more: a POST of newline-separated JSON
objects to `/services/collector/event`, each an envelope (`time`, `host`, `source`,
`sourcetype`, `index`) around one trail record as `event`, with the token in
`Authorization: Splunk <token>` (or `Bearer` for collectors that want it).

It keeps nothing: the exporter holds every record in its owner's status until this sink has
taken the whole batch, so a failure is only ever a `SinkError` that says whether repeating can
help. A batch may arrive in part before a failure; the exporter then sends all of it again and
receivers drop the repeats by `event.id`.

The server's certificate is always verified, against `ca_file` or the system's trust store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import ssl
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from lapse.core.trail import compute_parts
from lapse.sinks.base import SinkError

log = logging.getLogger(__name__)

NO_HEADERS: Mapping[str, str] = MappingProxyType({})
# How much of a refusal's body an error quotes: enough for HEC's `{"text":...,"code":...}`
# or a proxy's one-line page, never a whole HTML error page in a status.
QUOTED_BODY_CHARS = 200
# A receiver's answer is read no further than this: its body only ever explains a status.
READ_LIMIT = 64 * 1024
# The smallest record limit that leaves `compute_parts` room for a useful part.
MIN_EVENT_BYTES = 1024
# The widest `time` an envelope carries (epoch seconds to the microsecond), so the room an
# envelope takes is known before any record is seen.
WIDEST_TIME = 9999999999.999999
# Answers that a later attempt may not get: the receiver timed out, was told to slow down, or
# failed on its side. Every other 4xx says the request itself is wrong.
RETRYABLE_STATUSES = frozenset({408, 429})


class HttpsSink:
    """POSTs batches of trail records to an HTTPS collector as Splunk HEC events."""

    def __init__(
        self,
        *,
        name: str,
        url: str,
        host: str,
        token: str | None = None,
        auth_scheme: str = "Splunk",
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        source: str = "lapse",
        sourcetype: str = "lapse:audit",
        index: str | None = None,
        max_batch_bytes: int = 1_000_000,
        max_event_bytes: int = 500_000,
        timeout: float = 10.0,
        extra_headers: Mapping[str, str] = NO_HEADERS,
        allow_plain_http: bool = False,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"sink {name}: {url!r} is not an https:// URL")
        # Plain HTTP would hand the token and every record to whoever is on the path; it
        # exists for tests against a local receiver only.
        if parts.scheme == "http" and not allow_plain_http:
            raise ValueError(f"sink {name}: {url!r} is plain http; the trail goes over https only")
        if key_file and not cert_file:
            raise ValueError(f"sink {name}: key_file without cert_file")
        if timeout <= 0:
            raise ValueError(f"sink {name}: timeout must be positive, not {timeout}")
        self.name = name
        self.url = url
        self.host = host
        self.token = token
        self.auth_scheme = auth_scheme
        self.ca_file = ca_file
        self.cert_file = cert_file
        self.key_file = key_file
        self.source = source
        self.sourcetype = sourcetype
        self.index = index
        self.max_batch_bytes = max_batch_bytes
        self.timeout = timeout
        self.extra_headers = dict(extra_headers)
        # Errors name the endpoint without its query: HEC also takes `?token=` there.
        self._where = f"{parts.scheme}://{parts.netloc}{parts.path}"
        # Every line of a body must fit in a batch on its own, so a record's limit is also
        # what a batch leaves once the envelope is around it.
        envelope_room = len(self._encode_line({}, WIDEST_TIME)) - len(b"{}")
        self.max_event_bytes = min(max_event_bytes, max_batch_bytes - envelope_room)
        if self.max_event_bytes < MIN_EVENT_BYTES:
            raise ValueError(
                f"sink {name}: max_event_bytes={max_event_bytes} and "
                f"max_batch_bytes={max_batch_bytes} leave {self.max_event_bytes} bytes for a "
                f"record; at least {MIN_EVENT_BYTES} are needed"
            )
        # Built once here so that a missing or unreadable CA or key fails at configuration,
        # not at the first send; built again with each session (after any failure below
        # HTTP) to pick up renewed files.
        self._ssl = self._build_ssl()
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # The Sink protocol ---------------------------------------------------------------------

    async def send(self, records: Sequence[Mapping[str, Any]]) -> None:
        if not records:
            return
        session = self._open_session()
        for lines in self._compute_bodies(records):
            await self._post_lines(session, lines, may_split=True)

    async def close(self) -> None:
        session, self._session, self._loop = self._session, None, None
        if session is not None and not session.closed:
            await session.close()

    # Bodies --------------------------------------------------------------------------------

    def _encode_line(self, event: Mapping[str, Any], at: float) -> bytes:
        envelope: dict[str, Any] = {
            "time": at,
            "host": self.host,
            "source": self.source,
            "sourcetype": self.sourcetype,
        }
        if self.index is not None:
            envelope["index"] = self.index
        envelope["event"] = event
        # The same separators and encoding as `lapse.core.trail.canonical`, so an event takes
        # exactly the bytes `compute_parts` measured.
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()

    def _compute_lines(self, records: Sequence[Mapping[str, Any]]) -> list[bytes]:
        lines: list[bytes] = []
        for record in records:
            # Parts carry no time of their own; each is indexed at its record's time.
            at = compute_epoch(record.get("time"))
            lines.extend(
                self._encode_line(part, at) for part in compute_parts(record, self.max_event_bytes)
            )
        return lines

    def _compute_bodies(self, records: Sequence[Mapping[str, Any]]) -> list[list[bytes]]:
        """The lines of `records`, in order, grouped into bodies of at most max_batch_bytes
        (lines joined by newlines)."""
        bodies: list[list[bytes]] = []
        current: list[bytes] = []
        size = 0
        for line in self._compute_lines(records):
            added = len(line) + (1 if current else 0)
            if current and size + added > self.max_batch_bytes:
                bodies.append(current)
                current, added, size = [], len(line), 0
            current.append(line)
            size += added
        if current:
            bodies.append(current)
        return bodies

    # The wire ------------------------------------------------------------------------------

    def _build_ssl(self) -> ssl.SSLContext | None:
        if urlsplit(self.url).scheme != "https":
            return None
        try:
            # Hostname checked and chain verified; a `ca_file` replaces the system's store,
            # so a collector's private CA is the only one trusted for it.
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(f"sink {self.name}: cannot load its TLS files: {error}") from error
        return context

    def _open_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None and not self._session.closed and self._loop is loop:
            return self._session
        # A session belongs to the loop it was made in; one left from another loop cannot
        # even be closed from this one, so it is only dropped.
        try:
            context = self._build_ssl()
        except ValueError:
            # The files were readable at configuration; a renewal caught half-written keeps
            # the context that worked until the next session.
            context = self._ssl
        else:
            self._ssl = context
        connector = aiohttp.TCPConnector(ssl=context if context is not None else True)
        self._session = aiohttp.ClientSession(connector=connector)
        self._loop = loop
        return self._session

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "lapse", **self.extra_headers}
        if self.token is not None:
            headers["Authorization"] = f"{self.auth_scheme} {self.token}"
        return headers

    async def _post_lines(
        self, session: aiohttp.ClientSession, lines: list[bytes], *, may_split: bool
    ) -> None:
        body = b"\n".join(lines)
        status, text, retry_after = await self._post(session, body)
        if 200 <= status < 300:
            return
        # A 413 says the receiver takes less than max_batch_bytes (a proxy's or HEC's
        # max_content_length set lower). The body is halved once, not down to single events:
        # that delivers through a limit down to half ours at the cost of two more requests
        # per body, while a limit far lower needs max_batch_bytes set to it, which only a
        # loud non-retryable error brings about. A single line cannot be halved.
        if status == 413 and may_split and len(lines) > 1:
            log.warning(
                "sink %s: %s refused %d bytes as too large (413); sending them in two "
                "halves. Set max_batch_bytes below the receiver's limit.",
                self.name,
                self._where,
                len(body),
            )
            half = len(lines) // 2
            await self._post_lines(session, lines[:half], may_split=False)
            await self._post_lines(session, lines[half:], may_split=False)
            return
        raise self._refusal(status, text, retry_after, body_bytes=len(body), events=len(lines))

    async def _post(
        self, session: aiohttp.ClientSession, body: bytes
    ) -> tuple[int, str, float | None]:
        try:
            async with session.post(
                self.url,
                data=body,
                headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                # A redirect would take the token and the records somewhere not configured;
                # it is refused as an answer instead.
                allow_redirects=False,
            ) as response:
                text = (await response.content.read(READ_LIMIT)).decode("utf-8", "replace")
                return response.status, text, parse_retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, OSError) as error:
            failure = self._describe(error)
        # Whatever failed below HTTP, the next send starts over: a fresh connection instead of
        # a pooled one the receiver dropped, and a TLS context read again from the files, so
        # a renewed CA bundle or client certificate is used without a restart.
        await self.close()
        raise failure

    def _describe(self, error: aiohttp.ClientError | OSError) -> SinkError:
        if isinstance(error, aiohttp.ClientConnectorCertificateError):
            message = (
                f"{self._prefix()} has a certificate this sink does not trust "
                f"({self._trust()}): {error.certificate_error}"
            )
        elif isinstance(error, aiohttp.ClientSSLError):
            message = f"{self._prefix()}: TLS handshake failed: {error}"
        elif isinstance(error, TimeoutError):
            message = f"{self._prefix()} did not answer within {self.timeout:g}s"
        else:
            message = f"{self._prefix()} could not be reached: {type(error).__name__}: {error}"
        failure = SinkError(message)
        failure.__cause__ = error
        return failure

    # Errors --------------------------------------------------------------------------------

    def _prefix(self) -> str:
        return f"sink {self.name}: {self._where}"

    def _trust(self) -> str:
        return f"CA file {self.ca_file}" if self.ca_file else "the system's trust store"

    def _refusal(
        self, status: int, text: str, retry_after: float | None, *, body_bytes: int, events: int
    ) -> SinkError:
        retryable = status in RETRYABLE_STATUSES or status >= 500
        quoted = " ".join(text.split())[:QUOTED_BODY_CHARS]
        message = f"{self._prefix()} answered {status} to {events} event(s), {body_bytes} bytes"
        if quoted:
            message += f": {quoted}"
        if 300 <= status < 400:
            message += " (redirects are not followed: configure the final URL)"
        if status == 413:
            message += " (set max_batch_bytes/max_event_bytes below the receiver's limit)"
        if retry_after is not None:
            message += f" (retry after {retry_after:g}s)"
        return SinkError(message, retryable=retryable, retry_after=retry_after)


def compute_epoch(value: object) -> float:
    """A record's RFC 3339 `time` as epoch seconds to the microsecond; now when a record has
    none that reads (HEC would otherwise index it at arrival, which is no better)."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return round(moment.timestamp(), 6)
    return round(time.time(), 6)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None
