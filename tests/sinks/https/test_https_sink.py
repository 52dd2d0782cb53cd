"""The HTTPS sink against a real HTTPS collector that answers as Splunk HEC does.

Everything goes through the sink's public API (`send`, `close`) and is checked on what the
collector stored: the envelopes, the requests and their sizes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lapse.core.bindings import format_time
from lapse.core.trail import (
    STREAM,
    canonical,
    compute_genesis,
    compute_record_hash,
    compute_signature,
    join_parts,
)
from lapse.sinks.base import SinkError
from lapse.sinks.https import HttpsSink, parse_retry_after
from tests.sinks.https.collector import TOKEN, HecServer, Pki

SIGNING_KEY = b"k" * 32
OPERATOR_POD = "lapse-operator-7d9f-x2x4q"
START = datetime(2026, 11, 24, 12, 0, 0, 250000, tzinfo=UTC)


def build_records(count: int, *, message: str = "", uid: str = "0f3c9a") -> list[dict[str, Any]]:
    """`count` records of one owner's stream, chained and signed as the trail makes them."""
    records: list[dict[str, Any]] = []
    prev = compute_genesis(uid)
    for seq in range(1, count + 1):
        record: dict[str, Any] = {
            "time": format_time(START + timedelta(seconds=seq)),
            "action": "granted",
            "kind": "AccessRequest",
            "namespace": "payments",
            "name": "edit-fxsrc",
            "uid": uid,
            "requester": "alice",
            "role": "ClusterRole/edit",
            "reason": "Policy",
            "message": message or f"Step {seq} of the grant.",
            "id": f"{uid}-{seq:04d}",
            "stream": STREAM,
            "fact": f"history/{seq - 1}",
            "seq": seq,
            "prev": prev,
        }
        record["sig"] = compute_signature(record, SIGNING_KEY)
        prev = compute_record_hash(record)
        records.append(record)
    return records


def make_sink(url: str, pki: Pki, **overrides: Any) -> HttpsSink:
    settings: dict[str, Any] = {
        "name": "splunk",
        "url": url,
        "token": TOKEN,
        "ca_file": str(pki.ca),
        "host": OPERATOR_POD,
        "timeout": 5.0,
        **overrides,
    }
    return HttpsSink(**settings)


def deliver(sink: HttpsSink, *batches: Sequence[Mapping[str, Any]]) -> None:
    """Send each batch in turn through one session, then close it."""

    async def run() -> None:
        try:
            for batch in batches:
                await sink.send(batch)
        finally:
            await sink.close()

    asyncio.run(run())


def refusal(sink: HttpsSink, batch: Sequence[Mapping[str, Any]]) -> SinkError:
    with pytest.raises(SinkError) as caught:
        deliver(sink, batch)
    return caught.value


def epoch(record: Mapping[str, Any]) -> float:
    return datetime.fromisoformat(record["time"]).timestamp()


# 1. Whole, in order, in HEC's envelope ---------------------------------------------------


def test_a_batch_arrives_whole_in_order_in_hec_envelopes(hec: HecServer, pki: Pki) -> None:
    records = build_records(7)
    deliver(make_sink(hec.url, pki, index="security"), records)

    envelopes = hec.envelopes()
    assert [e["event"] for e in envelopes] == records
    for envelope, record in zip(envelopes, records, strict=True):
        assert list(envelope) == ["time", "host", "source", "sourcetype", "index", "event"]
        assert envelope["time"] == pytest.approx(epoch(record), abs=1e-6)
        assert envelope["host"] == OPERATOR_POD
        assert (envelope["source"], envelope["sourcetype"]) == ("lapse", "lapse:audit")
        assert envelope["index"] == "security"
    assert [(r["status"], r["events"]) for r in hec.requests()] == [(200, 7)]
    assert hec.requests()[0]["auth"] == f"Splunk {TOKEN}"


def test_no_index_field_unless_configured_and_bearer_for_other_collectors(
    hec: HecServer, pki: Pki
) -> None:
    deliver(make_sink(hec.url, pki), build_records(1))
    assert "index" not in hec.envelopes()[0]
    # The stand-in takes only Splunk's scheme, as HEC does: 401, not retryable.
    error = refusal(make_sink(hec.url, pki, auth_scheme="Bearer"), build_records(1))
    assert hec.requests()[-1]["auth"] == f"Bearer {TOKEN}"
    assert "401" in str(error) and "Invalid authorization" in str(error)
    assert not error.retryable


def test_an_empty_batch_sends_nothing(hec: HecServer, pki: Pki) -> None:
    deliver(make_sink(hec.url, pki), [])
    assert hec.requests() == []


# 2. Size limits --------------------------------------------------------------------------


def test_a_batch_over_max_batch_bytes_goes_as_several_posts_in_order(
    hec: HecServer, pki: Pki
) -> None:
    records = build_records(60)
    deliver(make_sink(hec.url, pki, max_batch_bytes=4096), records)

    assert [e["event"] for e in hec.envelopes()] == records
    sizes = [r["bytes"] for r in hec.requests()]
    assert len(sizes) > 5 and max(sizes) <= 4096
    assert sum(r["events"] for r in hec.requests()) == 60


def test_a_record_over_max_event_bytes_arrives_in_parts_join_parts_restores(
    hec: HecServer, pki: Pki
) -> None:
    # Multi-byte text: the limits are in bytes of UTF-8, not characters.
    big = build_records(1, message="Fenêtre de maintenance ✓ " * 800, uid="big")[0]
    records = [*build_records(2, uid="before"), big, *build_records(2, uid="after")]
    assert len(canonical(big)) > 20_000
    deliver(make_sink(hec.url, pki, max_event_bytes=2048, max_batch_bytes=8192), records)

    envelopes = hec.envelopes()
    events = [e["event"] for e in envelopes]
    assert len(events) > len(records)
    assert all(len(canonical(event)) <= 2048 for event in events)
    assert max(r["bytes"] for r in hec.requests()) <= 8192
    assert join_parts(events) == records
    # Every part is indexed at its record's time.
    parts = [e for e in envelopes if "lapsePart" in e["event"]]
    assert len(parts) > 10
    assert all(e["time"] == pytest.approx(epoch(big), abs=1e-6) for e in parts)


def test_a_413_halves_the_body_once_then_gives_up_not_retryable(hec: HecServer, pki: Pki) -> None:
    records = build_records(20)
    sink = make_sink(hec.url, pki)
    whole = sum(len(canonical(r)) for r in records)
    hec.control(max_body=whole * 3 // 4)
    deliver(sink, records)
    assert [r["status"] for r in hec.requests()] == [413, 200, 200]
    assert [e["event"] for e in hec.envelopes()] == records

    hec.reset()
    hec.control(max_body=300)
    error = refusal(sink, records)
    assert not error.retryable and "413" in str(error) and "max_batch_bytes" in str(error)
    assert [r["status"] for r in hec.requests()] == [413, 413]


# 3. The receiver's answers ---------------------------------------------------------------


def test_a_wrong_token_is_not_retryable_and_quotes_hec(hec: HecServer, pki: Pki) -> None:
    error = refusal(make_sink(hec.url, pki, token="not-the-token"), build_records(2))
    # HEC answers an unknown token with 403 (401 is for a missing or malformed header).
    assert "403" in str(error) and '"text":"Invalid token"' in str(error)
    assert "not-the-token" not in str(error)
    assert not error.retryable and error.retry_after is None

    error = refusal(make_sink(hec.url, pki, token=None), build_records(1))
    assert "401" in str(error) and "Token is required" in str(error)
    assert not error.retryable
    assert hec.envelopes() == []


@pytest.mark.parametrize("status", [503, 500, 408])
def test_server_errors_are_retryable(hec: HecServer, pki: Pki, status: int) -> None:
    hec.control(answers=[{"status": status}])
    records = build_records(3)
    sink = make_sink(hec.url, pki)
    error = refusal(sink, records)
    assert error.retryable and str(status) in str(error) and error.retry_after is None
    # The next attempt, the collector healthy again, delivers it all.
    deliver(sink, records)
    assert [e["event"] for e in hec.envelopes()] == records


@pytest.mark.parametrize(
    ("status", "says"), [(400, "Invalid data format"), (307, "redirects are not followed")]
)
def test_other_refusals_are_not_retryable(hec: HecServer, pki: Pki, status: int, says: str) -> None:
    hec.control(answers=[{"status": status, "body": {"text": "Invalid data format", "code": 6}}])
    error = refusal(make_sink(hec.url, pki), build_records(1))
    assert not error.retryable and str(status) in str(error) and says in str(error)


def test_429_is_retryable_and_carries_retry_after(hec: HecServer, pki: Pki) -> None:
    hec.control(answers=[{"status": 429, "retry_after": "7", "body": {"text": "slow down"}}])
    error = refusal(make_sink(hec.url, pki), build_records(1))
    assert error.retryable and error.retry_after == 7.0
    assert "429" in str(error) and "slow down" in str(error)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    later = datetime.now(UTC) + timedelta(seconds=90)
    assert 80 < (parse_retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT")) or 0) <= 90
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# 4. TLS ----------------------------------------------------------------------------------


def test_a_server_certificate_from_another_ca_is_refused(hec: HecServer, pki: Pki) -> None:
    error = refusal(make_sink(hec.url, pki, ca_file=str(pki.other_ca)), build_records(1))
    assert "certificate" in str(error) and str(pki.other_ca) in str(error)
    assert error.retryable
    # Nor does the system's trust store know a private CA.
    error = refusal(make_sink(hec.url, pki, ca_file=None), build_records(1))
    assert "certificate" in str(error) and "trust store" in str(error)
    assert hec.requests() == []


def test_a_renewed_ca_file_is_read_again_after_a_failure(
    hec: HecServer, pki: Pki, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(pki.other_ca.read_bytes())
    sink = make_sink(hec.url, pki, ca_file=str(bundle))
    records = build_records(2)

    async def run() -> None:
        try:
            with pytest.raises(SinkError, match="certificate"):
                await sink.send(records)
            # The bundle is renewed in place (a Secret's mounted file), the sink not rebuilt.
            bundle.write_bytes(pki.ca.read_bytes())
            await sink.send(records)
        finally:
            await sink.close()

    asyncio.run(run())
    assert [e["event"] for e in hec.envelopes()] == records


def test_plain_http_is_refused_and_tls_files_are_checked_at_configuration(pki: Pki) -> None:
    with pytest.raises(ValueError, match="plain http"):
        HttpsSink(name="s", url="http://collector:8088/services/collector/event", host="h")
    HttpsSink(name="s", url="http://127.0.0.1:1/", host="h", allow_plain_http=True)
    with pytest.raises(ValueError, match="TLS files"):
        HttpsSink(name="s", url="https://collector/", host="h", ca_file="/nonexistent/ca.pem")
    with pytest.raises(ValueError, match="leave"):
        HttpsSink(name="s", url="https://collector/", host="h", max_batch_bytes=600)


# 5. Slow and absent collectors -----------------------------------------------------------


def test_a_collector_slower_than_the_timeout_fails_within_it(hec: HecServer, pki: Pki) -> None:
    hec.control(answers=[{"status": 200, "delay": 4}])
    sink = make_sink(hec.url, pki, timeout=1.0)
    records = build_records(2)
    started = time.monotonic()
    error = refusal(sink, records)
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, elapsed
    assert error.retryable and "within 1s" in str(error)
    deliver(sink, records)
    assert [e["event"] for e in hec.envelopes()] == records


def test_a_collector_down_then_up_again(start_hec: Any, pki: Pki) -> None:
    server: HecServer = start_hec()
    first, second, third = build_records(9)[0:3], build_records(9)[3:6], build_records(9)[6:9]
    sink = make_sink(server.url, pki, timeout=2.0)

    async def run() -> None:
        # One session throughout, as the exporter keeps the sink: its pooled connection to
        # the stopped collector must not poison the sends after it comes back.
        try:
            await sink.send(first)
            server.stop()
            # The connection it had, then a new one refused: both retryable.
            for _ in range(2):
                with pytest.raises(SinkError) as caught:
                    await sink.send(second)
                assert caught.value.retryable
            assert "could not be reached" in str(caught.value)
            server.start()
            await sink.send(second)
            await sink.send(third)
        finally:
            await sink.close()

    asyncio.run(run())
    assert [e["event"] for e in server.envelopes()] == first + second + third


# 6. Mutual TLS ---------------------------------------------------------------------------


def test_mutual_tls(start_hec: Any, pki: Pki) -> None:
    server: HecServer = start_hec(client_ca=pki.client_ca)
    records = build_records(2)
    with_cert = make_sink(
        server.url, pki, cert_file=str(pki.client_cert), key_file=str(pki.client_key)
    )
    deliver(with_cert, records)
    assert [e["event"] for e in server.envelopes()] == records

    error = refusal(make_sink(server.url, pki), records)
    assert error.retryable
    assert len(server.envelopes()) == 2
