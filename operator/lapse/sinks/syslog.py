"""The trail to a syslog server: RFC 5424 messages over TLS, framed as RFC 5425 says.

Most security teams already collect syslog (rsyslog, syslog-ng, a SIEM's syslog input), so a
trail that arrives there needs nothing new on their side. Each record is one message whose MSG
is the record's canonical JSON, the very bytes the next record's `prev` hashes, so
what a receiver stores can be checked against the chain. A record longer than
`max_message` goes as parts (`lapse.core.trail.compute_parts`) that `join_parts` puts back.

TCP syslog has no application-level acknowledgement: a batch counts as delivered once it is
written, flushed and (on Linux) acknowledged by the receiver's TCP stack. A receiver that
crashes after that loses what it had not stored; a connection that fails before it makes
`send` raise, and the exporter sends the whole batch again. So delivery is at least once, and
receivers drop repeats by the record's `id` (in the structured data as well as the JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import struct
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from lapse.core.trail import PART_KEY, canonical, compute_parts
from lapse.sinks.base import SinkError

try:  # The send queue's size is a Linux ioctl; elsewhere a flushed write is all we know.
    import fcntl
    import termios

    OUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # pragma: no cover - not Linux
    OUTQ = None

# RFC 5424 §6.3.2 requires an SD-ID with an `@` to name a private enterprise number; 32473 is
# the one IANA reserves for documentation (RFC 5612). Lapse has no number of its own, and a
# receiver matches on the whole SD-ID anyway.
SD_ID = "lapse@32473"
PART_MSGID = "lapse-part"
NIL = "-"
# Severity 5, notice: "normal but significant condition" — every record is a fact an
# auditor wants, none is an error of Lapse's.
SEVERITY = 5
# RFC 5424 field limits (§6): HOSTNAME 255, APP-NAME 48, MSGID 32 printable US-ASCII.
HOSTNAME_MAX = 255
APP_NAME_MAX = 48
MSGID_MAX = 32
# Below this, compute_parts has no room for a part's own fields.
MIN_MESSAGE = 512
# How often the unacknowledged bytes are looked at while waiting for the receiver's TCP.
ACK_POLL = 0.005
PEEK_TURNS = 4
# The least time a receiver gets to refuse a new TLS 1.3 connection that brings no session
# ticket: a local receiver answers in well under this.
MIN_OBJECTION = 0.05
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")


def _ascii_field(value: str, limit: int) -> str:
    """A header field as RFC 5424 allows it: printable US-ASCII, no space, bounded; NIL if
    nothing is left."""
    text = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value)[:limit]
    return text or NIL


def _escape_param(value: str) -> str:
    # RFC 5424 §6.3.3: inside PARAM-VALUE, `"`, `\` and `]` must be escaped with `\`.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def format_timestamp(value: Any) -> str:
    """The record's `time` as an RFC 5424 TIMESTAMP (RFC 3339, at most microseconds), or NIL
    when it has none that reads as a time."""
    if not isinstance(value, str):
        return NIL
    if TIMESTAMP.fullmatch(value):
        return value
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return NIL
    if moment.tzinfo is None:
        return NIL
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def build_structured_data(params: Mapping[str, Any]) -> str:
    """One SD element of Lapse's, with the params that have a value."""
    body = "".join(
        f' {name}="{_escape_param(str(value))}"'
        for name, value in params.items()
        if value is not None
    )
    return f"[{SD_ID}{body}]"


def build_messages(
    record: Mapping[str, Any],
    *,
    hostname: str,
    app_name: str,
    facility: int,
    max_message: int,
) -> list[bytes]:
    """The RFC 5424 messages (unframed) that carry `record`: one, or one per part."""
    timestamp = format_timestamp(record.get("time"))
    host, app = _ascii_field(hostname, HOSTNAME_MAX), _ascii_field(app_name, APP_NAME_MAX)
    head = f"<{facility * 8 + SEVERITY}>1 {timestamp} {host} {app} {NIL}"
    messages: list[bytes] = []
    for item in compute_parts(record, max_message):
        part = item.get(PART_KEY)
        if isinstance(part, Mapping):
            msgid = PART_MSGID
            sd = build_structured_data(
                {
                    "id": part.get("id"),
                    "uid": part.get("uid"),
                    "seq": part.get("seq"),
                    "part": part.get("part"),
                    "parts": part.get("parts"),
                }
            )
        else:
            msgid = _ascii_field(str(record.get("action") or ""), MSGID_MAX)
            sd = build_structured_data(
                {"id": record.get("id"), "uid": record.get("uid"), "seq": record.get("seq")}
            )
        # No BOM before the MSG although RFC 5424 §6.4 allows one: receivers that parse the
        # MSG as JSON (Fluent Bit, Vector, a SIEM's JSON extractor) choke on a leading U+FEFF.
        messages.append(f"{head} {msgid} {sd} ".encode() + canonical(item))
    return messages


def frame(message: bytes) -> bytes:
    """RFC 5425 §4.3 octet counting: `MSG-LEN SP SYSLOG-MSG`."""
    return b"%d %s" % (len(message), message)


class SyslogSink:
    """Sends the trail to one syslog server over TLS (or plain TCP when asked to), keeping one
    connection open across batches and making a new one after any failure."""

    def __init__(
        self,
        *,
        name: str,
        host: str,
        port: int,
        hostname: str,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        server_name: str | None = None,
        app_name: str = "lapse",
        # RFC 5424's facility 13, "log audit": what the trail is. authpriv (10) would land it
        # among sshd and sudo lines in most receivers' default rules.
        facility: int = 13,
        max_message: int = 8192,
        timeout: float = 10.0,
        tls: bool = True,
    ) -> None:
        if not 0 <= facility <= 23:
            raise ValueError(f"syslog facility {facility} is not between 0 and 23")
        if max_message < MIN_MESSAGE:
            raise ValueError(f"max_message {max_message} is below {MIN_MESSAGE} bytes")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if key_file and not cert_file:
            raise ValueError("key_file needs cert_file")
        if not tls and (ca_file or cert_file or server_name):
            raise ValueError("ca_file, cert_file and server_name need TLS")
        self.name = name
        self.host = host
        self.port = port
        self.hostname = hostname
        self.app_name = app_name
        self.facility = facility
        self.max_message = max_message
        self.timeout = timeout
        self.server_name = server_name or host
        # Built once: a missing or unreadable file is a configuration error, said at start-up
        # rather than as a delivery failure on every batch.
        self._context = self._build_context(ca_file, cert_file, key_file) if tls else None
        self._client_cert = bool(cert_file)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @staticmethod
    def _build_context(
        ca_file: str | None, cert_file: str | None, key_file: str | None
    ) -> ssl.SSLContext:
        # Verification (chain and host name) is always on: an audit trail sent to whoever
        # answers on the port is not delivered. No ca_file means the system's trust store.
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        # RFC 9662 updates RFC 5425: TLS 1.2 at least.
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
        return context

    @property
    def where(self) -> str:
        return f"syslog at {self.host}:{self.port}"

    async def send(self, records: Sequence[Mapping[str, Any]]) -> None:
        if not records:
            return
        payload = [
            frame(message)
            for record in records
            for message in build_messages(
                record,
                hostname=self.hostname,
                app_name=self.app_name,
                facility=self.facility,
                max_message=self.max_message,
            )
        ]
        stage = "connecting"
        try:
            async with asyncio.timeout(self.timeout):
                writer = await self._connected()
                stage = "sending"
                writer.writelines(payload)
                await writer.drain()
                await self._acknowledged(writer)
                self._check_open()
        except SinkError:
            self._drop()
            raise
        except TimeoutError:
            self._drop()
            raise SinkError(f"{self.where}: timed out after {self.timeout:g}s {stage}") from None
        except (OSError, EOFError, ssl.SSLError) as error:
            self._drop()
            raise SinkError(f"{self.where}: {describe(error, stage)}") from error
        except BaseException:
            # Cancelled mid-write: a frame may be half sent, and the stream cannot go on.
            self._drop()
            raise

    async def _connected(self) -> asyncio.StreamWriter:
        """The open connection, or a new one when there is none or the receiver closed it."""
        if self._writer is not None:
            # Let the loop take in what the peer sent since the last batch: a receiver that
            # restarted has closed the connection, and writing there would only fill a
            # buffer nobody reads. An end the loop has not read yet takes a few turns to
            # reach the reader (socket, then TLS, then stream).
            for _ in range(PEEK_TURNS):
                if self._closed_by_peer():
                    break
                await asyncio.sleep(0)
            if self._closed_by_peer():
                self._drop()
        if self._writer is None:
            started = asyncio.get_running_loop().time()
            self._reader, self._writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self._context,
                server_hostname=self.server_name if self._context else None,
                ssl_handshake_timeout=self.timeout if self._context else None,
            )
            await self._accepted(self._writer, asyncio.get_running_loop().time() - started)
        return self._writer

    async def _accepted(self, writer: asyncio.StreamWriter, handshake: float) -> None:
        """Until the receiver has had its say on a new TLS 1.3 connection.

        TLS 1.3 ends the client's handshake before the server has checked the client's
        certificate: a server that refuses it says so only afterwards, with an alert, and what
        was written meanwhile is lost without an error. A server that accepts sends its
        session tickets then; one that sends none gets as long as the handshake took (about
        two round trips) to object."""
        ssl_object = writer.get_extra_info("ssl_object")
        if not isinstance(ssl_object, ssl.SSLObject) or ssl_object.version() != "TLSv1.3":
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(handshake, MIN_OBJECTION)
        while loop.time() < deadline:
            if self._closed_by_peer():
                reason = _reason(self._reader.exception() if self._reader else None)
                doubt = (
                    "it may refuse this client certificate"
                    if self._client_cert
                    else "it may require a client certificate (none is configured)"
                )
                raise SinkError(
                    f"{self.where}: the receiver closed the connection after the TLS handshake"
                    f"{reason}; {doubt}"
                )
            session = ssl_object.session
            if session is not None and session.has_ticket:
                return
            await asyncio.sleep(ACK_POLL)

    def _closed_by_peer(self) -> bool:
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            return True
        # A syslog receiver never speaks: an end or a TLS alert means the connection is over.
        return writer.is_closing() or reader.at_eof() or reader.exception() is not None

    def _check_open(self) -> None:
        if self._closed_by_peer():
            reason = _reason(self._reader.exception() if self._reader else None)
            raise SinkError(f"{self.where}: the receiver closed the connection{reason}")

    async def _acknowledged(self, writer: asyncio.StreamWriter) -> None:
        """Until every byte has left Lapse's buffers and, on Linux, the receiver's TCP has
        acknowledged it: more than `drain` (which waits only for the buffer to fall below its
        high-water mark), and all TCP syslog can tell."""
        sock = writer.get_extra_info("socket")
        while not self._closed_by_peer():
            if writer.transport.get_write_buffer_size() == 0:
                if OUTQ is None or sock is None:
                    return
                try:
                    unacknowledged = struct.unpack(
                        "i", fcntl.ioctl(sock.fileno(), OUTQ, b"\0" * 4)
                    )[0]
                except OSError:
                    return
                if unacknowledged == 0:
                    return
            await asyncio.sleep(ACK_POLL)

    def _drop(self) -> None:
        """Forget the connection at once; nothing more is sent on it."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.transport.abort()

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is None:
            return
        writer.close()
        # A TLS close waits for the peer's close_notify, which a dead peer never sends.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout):
                await writer.wait_closed()


def _reason(error: BaseException | None) -> str:
    if isinstance(error, ssl.SSLError):
        return f" ({error.reason or error})"
    return f" ({error})" if error else ""


def describe(error: BaseException, stage: str) -> str:
    """What went wrong, in words that name the cause: the certificate first."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {error.verify_message or error.reason}"
    if isinstance(error, ssl.SSLError):
        return f"TLS error {stage}: {error.reason or error}"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is the server listening?)"
    if isinstance(error, OSError) and error.strerror:
        return f"{stage}: {error.strerror}"
    return f"{stage}: {error or type(error).__name__}"
