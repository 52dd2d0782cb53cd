"""The audit trail: every fact of every grant reaches the sink, signed and chained, whatever
the sink does; retention waits for it.

The session's operator delivers to a real HTTPS collector on this host (`trail_collector`),
and keeps ended owners RETENTION seconds. Records are checked as a receiver would: each
owner's stream from seq 1, each `prev` the hash of the record before, each `sig` made with the
operator's signing key read from its Secret.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from lapse.core.trail import (
    compute_genesis,
    compute_record_hash,
    compute_signature,
    join_parts,
)
from tests.e2e.conftest import RETENTION, Operator, Team, parse_time, wait_for
from tests.e2e.test_cli import lapse
from tests.sinks.https.collector import HecServer


@pytest.fixture
def collector(trail_collector: HecServer) -> HecServer:
    trail_collector.control(answers=[])
    return trail_collector


def signing_key(team: Team, operator: Operator) -> bytes:
    secret = json.loads(
        team.cluster.kubectl(
            "get", "secret", "lapse-signing-key", "-n", operator.namespace, "-o", "json"
        ).stdout
    )
    return base64.b64decode(secret["data"]["key"])


def stream(collector: HecServer, uid: str) -> list[dict[str, Any]]:
    """The records of one owner as received, repeats dropped by id, in arrival order."""
    records = join_parts(e["event"] for e in collector.envelopes())
    seen: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("uid") == uid:
            previous = seen.setdefault(record["id"], record)
            assert previous == record, f"two records with id {record['id']} differ"
    return list(seen.values())


def check_chain(records: list[dict[str, Any]], uid: str, key: bytes) -> None:
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1)), records
    prev = compute_genesis(uid)
    for record in records:
        assert record["prev"] == prev, f"record {record['seq']} does not follow the one before"
        assert record["sig"] == compute_signature(record, key), f"record {record['seq']} sig"
        prev = compute_record_hash(record)


def test_every_fact_of_a_grant_reaches_the_sink_signed_in_order(
    team: Team, operator: Operator, collector: HecServer
) -> None:
    team.policy(default="3s", maximum="1h")
    team.ask("traced", duration="3s")
    uid = team.wait_phase("traced", "Active", timeout=20)["metadata"]["uid"]
    team.wait_phase("traced", "Expired", timeout=30)

    def arrived() -> list[dict[str, Any]] | None:
        records = stream(collector, uid)
        actions = [r["action"] for r in records]
        # The check that access is gone is a fact of the trail too, however it was checked.
        wanted = {"granted", "expired", "verified"}
        return records if wanted <= set(actions) else None

    records = wait_for(arrived, timeout=30, what="the grant's records at the collector")
    check_chain(records, uid, signing_key(team, operator))
    first = records[0]
    assert first["action"] == "granted" and first["requester"] == team.user
    assert first["role"] == "ClusterRole/edit" and first["namespace"] == team.namespace
    assert [r["action"] for r in records[:3]] == ["granted", "expired", "verified"]
    assert records[2]["accessGone"] is True

    # Delivered and written back: the status holds no record every sink has.
    def written_back() -> dict[str, Any] | None:
        trail = team.request("traced")["status"].get("trail") or {}
        done = trail.get("delivered", {}).get("https") == trail.get("seq")
        return trail if done and not trail.get("records") else None

    trail = wait_for(written_back, timeout=40, what="the delivery written back")
    assert trail["seq"] >= 2


def test_a_sink_down_loses_nothing_and_holds_retention_back(
    team: Team, operator: Operator, collector: HecServer
) -> None:
    team.policy(default="2s", maximum="1h")
    collector.stop()
    try:
        team.ask("held", duration="2s")
        uid = team.wait_phase("held", "Active", timeout=20)["metadata"]["uid"]
        team.wait_phase("held", "Expired", timeout=30)
        # Past its retention, still kept: its trail has not reached the sink.
        wait_for(
            lambda: operator.metrics().get('lapse_retention_held{reason="undelivered"}', 0) >= 1,
            timeout=RETENTION + 30,
            what="retention held back by the undelivered trail",
        )
        assert team.request("held")["status"]["phase"] == "Expired"
        assert operator.metrics()['lapse_trail_sink_up{sink="https"}'] == 0
        assert operator.metrics()['lapse_trail_pending_records{sink="https"}'] >= 2
    finally:
        collector.start()

    def retired() -> list[dict[str, Any]] | None:
        records = stream(collector, uid)
        return records if records and records[-1]["action"] == "retired" else None

    records = wait_for(retired, timeout=60, what="the whole trail, retired last")
    check_chain(records, uid, signing_key(team, operator))
    actions = [r["action"] for r in records]
    assert actions[0] == "granted" and "expired" in actions
    assert records[-1]["records"] == len(records) - 1

    def deleted() -> bool:
        found = team.cluster.kubectl(
            "get", "accessrequest", "held", "-n", team.namespace, check=False
        )
        return found.returncode != 0 and "NotFound" in found.stderr

    wait_for(deleted, timeout=30, what="the request deleted once its trail was delivered")


def test_a_sink_that_hangs_holds_up_no_grant_and_no_revocation(
    team: Team, operator: Operator, collector: HecServer
) -> None:
    """The collector takes 30 s to answer each of the next requests (past the sink's own
    timeout): grants and revocations go on at their pace, and the records arrive later."""
    team.policy(default="3s", maximum="1h")
    collector.control(answers=[{"status": 200, "delay": 30}] * 3)
    team.ask("unblocked", duration="3s")
    active = team.wait_phase("unblocked", "Active", timeout=20)
    uid = active["metadata"]["uid"]
    ended = team.wait_phase("unblocked", "Expired", timeout=30)
    late = (
        parse_time(ended["status"]["endedAt"]) - parse_time(ended["status"]["expiresAt"])
    ).total_seconds()
    # Far below the collector's 30 s: the end did not wait for the sink.
    assert late < 10, f"ended {late:.1f}s after its expiry"
    collector.control(answers=[])

    def arrived() -> list[dict[str, Any]] | None:
        records = stream(collector, uid)
        return records if {"granted", "expired"} <= {r["action"] for r in records} else None

    check_chain(
        wait_for(arrived, timeout=90, what="the records after the hang"),
        uid,
        signing_key(team, operator),
    )


def test_the_received_trail_verifies_complete_and_reports_until_tampered(
    team: Team, operator: Operator, collector: HecServer, tmp_path: Path
) -> None:
    """What the collector received, as it wrote it, checked with `kubectl lapse audit verify`
    and listed by `audit report --from`: one complete stream (closed by `retired` once
    retention deleted the request); one altered character and it is broken, named."""
    team.policy(default="2s", maximum="1h")
    team.ask("exported", duration="2s")
    uid = team.wait_phase("exported", "Active", timeout=20)["metadata"]["uid"]
    team.wait_phase("exported", "Expired", timeout=30)

    def retired() -> list[dict[str, Any]] | None:
        records = stream(collector, uid)
        return records if records and records[-1]["action"] == "retired" else None

    wait_for(retired, timeout=RETENTION + 60, what="the trail closed by retention")
    mine = [
        json.dumps(envelope)
        for envelope in collector.envelopes()
        if envelope["event"].get("uid") == uid
    ]
    received = tmp_path / "received.jsonl"
    received.write_text("\n".join(mine) + "\n")
    key_file = tmp_path / "key"
    key_file.write_bytes(base64.b64encode(signing_key(team, operator)))
    verify = ("audit", "verify", "--key-file", str(key_file))
    whole = lapse(team, *verify, str(received))
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert "whole and unaltered" in whole.stdout and "1 complete" in whole.stdout, whole.stdout

    report = lapse(team, "audit", "report", "--since", "1h", "--from", str(received), "-o", "json")
    assert report.returncode == 0, report.stderr
    (row,) = [r for r in json.loads(report.stdout) if r.get("name") == "exported"]
    assert row["requester"] == team.user and row["role"].endswith("edit")

    altered = mine[1].replace('"Expired', '"Revoked', 1) if '"Expired' in mine[1] else None
    lines = list(mine)
    lines[1] = altered or mine[1].replace('"message":"', '"message":"x', 1)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    broken = lapse(team, *verify, str(tampered))
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"{tampered}:2 (seq 2): altered" in broken.stdout, broken.stdout
