"""The syslog sink against a real rsyslog: what arrives, in what shape, and how every failure of
the network or the receiver comes back as a SinkError in time, never as a hang."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import pytest

from lapse.core.trail import (
    STREAM,
    canonical,
    compute_genesis,
    compute_record_hash,
    compute_signature,
    join_parts,
)
from lapse.sinks.base import SinkError
from lapse.sinks.syslog import SyslogSink, build_messages
from tests.sinks.syslog.conftest import SERVER_MAX_MESSAGE, Pki, Rsyslog, Servers

KEY = b"test-signing-key"
UID = "5f0c6d1e-2b7a-4c1e-9a55-3f1d2e4b6a70"
HOSTNAME = "lapse-7d9f8-abcde"
# What the sink may put in MSG; rsyslog's own limit covers the header as well.
MAX_MESSAGE = SERVER_MAX_MESSAGE - 1024
T = TypeVar("T")


def build_records(count: int, *, start: int = 1, odd_ids: bool = False) -> list[dict[str, Any]]:
    """A signed chain of `count` records of one owner, the shape the trail gives them;
    `odd_ids` gives them ids that the structured data must escape."""
    records: list[dict[str, Any]] = []
    prev = compute_genesis(UID)
    for seq in range(start, start + count):
        record: dict[str, Any] = {
            "time": f"2026-11-24T14:18:{seq % 60:02d}.{seq:06d}Z",
            "action": "granted" if seq % 2 else "expired",
            "kind": "AccessRequest",
            "namespace": "payments",
            "name": "edit-fxsrc",
            "uid": UID,
            "requester": "alice",
            "reason": "Policy",
            # Non-ASCII, quotes, backslashes and brackets: the JSON must come back byte for byte.
            "message": f'Grant n°{seq} for "alice" [payments] \\ ✓',
            "id": f'rec "{seq}" [\\]' if odd_ids else f"rec-{seq:04d}",
            "stream": STREAM,
            "fact": f"history/{seq}",
            "seq": seq,
            "prev": prev,
        }
        record["sig"] = compute_signature(record, KEY)
        prev = compute_record_hash(record)
        records.append(record)
    return records


def make_sink(server: Rsyslog | int, pki: Pki, **overrides: Any) -> SyslogSink:
    port = server if isinstance(server, int) else server.port
    options: dict[str, Any] = {
        "name": "siem",
        "host": "127.0.0.1",
        "port": port,
        "ca_file": str(pki.ca),
        "hostname": HOSTNAME,
        "max_message": MAX_MESSAGE,
        "timeout": 3.0,
    }
    options.update(overrides)
    return SyslogSink(**options)


def run(step: Callable[[], Awaitable[T]], limit: float = 15.0) -> T:
    """One step of a test on its own loop, failed (not hung) if it outlasts `limit`."""

    async def bounded() -> T:
        async with asyncio.timeout(limit):
            return await step()

    return asyncio.run(bounded())


async def send_and_close(sink: SyslogSink, records: Sequence[Mapping[str, Any]]) -> None:
    try:
        await sink.send(records)
    finally:
        await sink.close()


def received(server: Rsyslog, count: int) -> list[dict[str, Any]]:
    """The JSON of the first `count` messages, as rsyslog parsed each one's MSG."""
    server.wait_for(count)
    return [json.loads(fields[-1]) for fields in server.field_lines()[:count]]


def expect_sink_error(step: Callable[[], Awaitable[None]], within: float) -> SinkError:
    started = time.monotonic()
    with pytest.raises(SinkError) as caught:
        run(step)
    assert time.monotonic() - started < within, f"took {time.monotonic() - started:.1f}s"
    assert caught.value.retryable
    return caught.value


def test_a_batch_arrives_whole_in_order_and_as_rfc_5424(servers: Servers, pki: Pki) -> None:
    server = servers.make()
    records = build_records(5, odd_ids=True)

    run(lambda: send_and_close(make_sink(server, pki), records))

    raw = server.wait_for(len(records))
    fields = server.field_lines()
    assert len(raw) == len(fields) == len(records)
    for line, parsed, record in zip(raw, fields, records, strict=True):
        # rsyslog read each field of the RFC 5424 header where the sink put it.
        pri, version, timestamp, hostname, app, procid, msgid, sd, msg = parsed
        assert (pri, version, hostname, app, procid) == ("109", "1", HOSTNAME, "lapse", "-")
        assert timestamp == record["time"]
        assert msgid == record["action"]
        # RFC 5424 §6.3.3: `"`, `\` and `]` escaped with a backslash in a param value.
        seq = record["seq"]
        assert sd == rf'[lapse@32473 id="rec \"{seq}\" [\\\]" uid="{UID}" seq="{seq}"]'
        # MSG is exactly the record's canonical JSON, no BOM, and parses back to the record.
        assert msg.encode() == canonical(record)
        assert json.loads(msg) == record
        assert line.endswith(" " + msg)
    # The chain is intact as received.
    prev = compute_genesis(UID)
    for parsed in fields:
        record = json.loads(parsed[-1])
        assert record["prev"] == prev
        prev = compute_record_hash(record)


def test_a_record_longer_than_max_message_arrives_in_parts(servers: Servers, pki: Pki) -> None:
    server = servers.make()
    before, big, after = build_records(3)
    big["message"] = "Long justification é✓ " * 700  # ~16 kB of UTF-8: several parts
    big["sig"] = compute_signature({k: v for k, v in big.items() if k != "sig"}, KEY)
    parts = build_messages(
        big, hostname=HOSTNAME, app_name="lapse", facility=13, max_message=MAX_MESSAGE
    )
    assert len(parts) > 2

    run(lambda: send_and_close(make_sink(server, pki), [before, big, after]))

    count = len(parts) + 2
    items = received(server, count)
    msgids = [fields[6] for fields in server.field_lines()[:count]]
    assert msgids == [before["action"], *["lapse-part"] * len(parts), after["action"]]
    for fields in server.field_lines()[1 : count - 1]:
        assert len(fields[-1].encode()) <= MAX_MESSAGE
        assert f'id="{big["id"]}"' in fields[7] and f'parts="{len(parts)}"' in fields[7]
    assert join_parts(items) == [before, big, after]


@pytest.mark.parametrize(
    ("rogue", "server_name", "expected"),
    [
        # Signed by an authority the sink does not trust.
        (True, None, "certificate verify failed"),
        # Trusted, but not issued for the name the sink checks.
        (False, "syslog.example.org", "certificate verify failed"),
    ],
    ids=["other-authority", "other-name"],
)
def test_a_wrong_certificate_is_a_prompt_sink_error(
    servers: Servers, pki: Pki, rogue: bool, server_name: str | None, expected: str
) -> None:
    server = servers.make(rogue=rogue)
    sink = make_sink(server, pki, server_name=server_name, timeout=5.0)

    error = expect_sink_error(lambda: send_and_close(sink, build_records(1)), within=3.0)

    assert expected in str(error)
    assert f"127.0.0.1:{server.port}" in str(error)
    time.sleep(0.3)
    assert server.lines() == []


def test_server_down_then_up_reconnects(servers: Servers, pki: Pki) -> None:
    server = servers.make(start=False)
    sink = make_sink(server, pki, timeout=2.0)
    records = build_records(2)

    async def scenario() -> None:
        started = time.monotonic()
        with pytest.raises(SinkError, match="refused"):
            await sink.send(records)
        assert time.monotonic() - started < sink.timeout
        server.start()
        await sink.send(records)
        await sink.close()

    run(scenario)
    assert received(server, 2) == records


def test_a_receiver_that_never_answers_times_out(pki: Pki) -> None:
    # Accepts the TCP connection (the kernel does, from the backlog) and never says a word.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        sink = make_sink(silent.getsockname()[1], pki, timeout=1.0)

        error = expect_sink_error(lambda: send_and_close(sink, build_records(1)), within=3.0)

    assert "timed out after 1s" in str(error)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["restart", "crash"])
def test_a_restarted_server_gets_the_next_batch(
    servers: Servers, pki: Pki, stop: signal.Signals
) -> None:
    server = servers.make()
    sink = make_sink(server, pki)
    first, second = build_records(2), build_records(3, start=3)

    async def scenario() -> None:
        await sink.send(first)
        server.wait_for(len(first))
        assert server.process is not None
        server.process.send_signal(stop)
        server.process.wait(timeout=10)
        server.start()
        try:
            await sink.send(second)
        except SinkError:
            # What the exporter does: the same batch again.
            await sink.send(second)
        await sink.close()

    run(scenario)
    server.wait_for(len(first) + len(second))
    ids = [json.loads(fields[-1])["id"] for fields in server.field_lines()]
    assert ids[: len(first)] == [r["id"] for r in first]
    # At least once: the second batch whole and in order, perhaps after a partial repeat.
    assert ids[-len(second) :] == [r["id"] for r in second]


def test_mutual_tls(servers: Servers, pki: Pki) -> None:
    server = servers.make(require_client_cert=True)
    records = build_records(2)
    sink = make_sink(server, pki, cert_file=str(pki.client_cert), key_file=str(pki.client_key))

    run(lambda: send_and_close(sink, records))

    assert received(server, 2) == records


def test_mutual_tls_without_a_client_certificate_is_a_sink_error(
    servers: Servers, pki: Pki
) -> None:
    server = servers.make(require_client_cert=True)

    error = expect_sink_error(
        lambda: send_and_close(make_sink(server, pki), build_records(1)), within=3.0
    )

    assert "client certificate" in str(error)
    time.sleep(0.3)
    assert server.lines() == []


def test_plain_tcp_when_asked_for(servers: Servers, pki: Pki) -> None:
    server = servers.make(tls=False)
    records = build_records(2)

    run(lambda: send_and_close(make_sink(server, pki, ca_file=None, tls=False), records))

    assert received(server, 2) == records


def test_the_header_fields_stay_within_rfc_5424() -> None:
    record = build_records(1)[0]
    record.update(time="not a time", action="a very long action name with spaces é" * 2)
    (message,) = build_messages(
        record, hostname="pod é 1", app_name="lapse", facility=10, max_message=MAX_MESSAGE
    )
    head = message.split(b" [", 1)[0].decode("ascii")
    pri, timestamp, hostname, app, procid, msgid = head.split(" ")
    assert (pri, timestamp, hostname, app, procid) == ("<85>1", "-", "pod___1", "lapse", "-")
    assert len(msgid) == 32 and " " not in msgid
    assert not message.split(b"] ", 1)[1].startswith(b"\xef\xbb\xbf")


def test_settings_that_cannot_work_are_refused(pki: Pki) -> None:
    with pytest.raises(ValueError, match="need TLS"):
        SyslogSink(name="s", host="h", port=1, hostname="p", tls=False, ca_file=str(pki.ca))
    with pytest.raises(ValueError, match="max_message"):
        SyslogSink(name="s", host="h", port=1, hostname="p", max_message=100)
    with pytest.raises(FileNotFoundError):
        SyslogSink(name="s", host="h", port=1, hostname="p", ca_file="/nonexistent/ca.pem")
