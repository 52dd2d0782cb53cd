"""The audit sink's recorder: who may send, what is queued or dropped, what is written."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lapse.activity import ActivityRecorder, AuditBusy, AuditRefused
from lapse.config import Settings
from tests.unit.builders import audit_event as event
from tests.unit.memory_kube import MemoryKube

NOW = datetime(2026, 11, 24, 14, 5, tzinfo=UTC)
TOKEN = "s3cret-token"


def glass_body(uid: str = "u-1") -> dict[str, Any]:
    return {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "BreakGlass",
        "metadata": {"name": "inc-4711", "uid": uid},
        "spec": {"namespaces": ["payments"]},
        "status": {
            "phase": "Active",
            "subject": {"kind": "User", "name": "carol"},
            "grantedAt": "2026-11-24T14:00:00Z",
            "expiresAt": "2026-11-24T14:30:00Z",
        },
    }


def recorder(tmp_path: Path, kube: MemoryKube, **settings: Any) -> ActivityRecorder:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    return ActivityRecorder(kube, Settings(audit_token_file=token, **settings), clock=lambda: NOW)


def batch(*items: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": list(items)}


def drain(sink: ActivityRecorder) -> None:
    while not sink.queue.empty():
        sink.fold(sink.queue.get_nowait())


def test_only_the_api_server_with_the_token_is_let_in(tmp_path: Path) -> None:
    sink = recorder(tmp_path, MemoryKube())
    sink.admit({"Authorization": f"Bearer {TOKEN}"}, None)
    for headers in ({}, {"Authorization": "Bearer guess"}, {"Authorization": TOKEN}):
        with pytest.raises(AuditRefused):
            sink.admit(headers, None)
    off = ActivityRecorder(MemoryKube(), Settings(), clock=lambda: NOW)
    assert not off.enabled
    with pytest.raises(AuditRefused):
        off.admit({"Authorization": f"Bearer {TOKEN}"}, None)


def test_a_client_certificate_with_an_allowed_name_is_let_in(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("(verified by the TLS layer)")
    sink = ActivityRecorder(
        MemoryKube(),
        Settings(audit_client_ca=ca, audit_client_names=frozenset({"kube-apiserver"})),
        clock=lambda: NOW,
    )
    sink.admit({}, {"subject": ((("commonName", "kube-apiserver"),),)})
    with pytest.raises(AuditRefused):
        sink.admit({}, {"subject": ((("commonName", "mallory"),),)})
    with pytest.raises(AuditRefused):
        sink.admit({}, None)


def test_a_full_queue_drops_and_then_turns_batches_away(tmp_path: Path) -> None:
    sink = recorder(tmp_path, MemoryKube(), audit_queue_size=3)
    sink.receive(batch(*(event("delete", "pods", name=f"p{i}", at=i) for i in range(5))))
    assert sink.queue.qsize() == 3
    with pytest.raises(AuditBusy):
        sink.admit({"Authorization": f"Bearer {TOKEN}"}, None)


def test_events_fold_into_the_grant_and_are_written_once(tmp_path: Path) -> None:
    kube = MemoryKube()
    body = kube.add_owner(glass_body())
    sink = recorder(tmp_path, kube)
    sink.track("BreakGlass", body)
    same = event("delete", "pods", audit_id="a-1")
    sink.receive(batch(same, same, event("get", "pods", user="dave"), {"stage": "Panic"}))
    drain(sink)
    asyncio.run(sink.flush())
    activity = kube.owner("BreakGlass", None, "inc-4711")["status"]["activity"]
    assert activity["events"] == 1
    assert [w["name"] for w in activity["writes"]] == ["web-1"]
    assert activity["updatedAt"]


def test_a_restarted_recorder_carries_on_from_the_written_record(tmp_path: Path) -> None:
    kube = MemoryKube()
    kube.add_owner(glass_body())
    first = recorder(tmp_path, kube)
    first.track("BreakGlass", kube.owner("BreakGlass", None, "inc-4711"))
    first.receive(batch(event("delete", "pods", audit_id="a-1")))
    drain(first)
    asyncio.run(first.flush())

    second = recorder(tmp_path, kube)
    second.track("BreakGlass", kube.owner("BreakGlass", None, "inc-4711"))
    # The API server sends the last batch again, then a new one.
    second.receive(batch(event("delete", "pods", audit_id="a-1")))
    second.receive(batch(event("get", "secrets", name="db", audit_id="a-2")))
    drain(second)
    asyncio.run(second.flush())
    activity = kube.owner("BreakGlass", None, "inc-4711")["status"]["activity"]
    assert activity["events"] == 2
    assert [r["name"] for r in activity["secretReads"]] == ["db"]


def test_a_grant_made_again_under_the_name_never_gets_the_old_record(tmp_path: Path) -> None:
    kube = MemoryKube()
    kube.add_owner(glass_body("old"))
    sink = recorder(tmp_path, kube)
    sink.track("BreakGlass", kube.owner("BreakGlass", None, "inc-4711"))
    sink.receive(batch(event("delete", "pods")))
    drain(sink)
    kube.add_owner(glass_body("new"))
    asyncio.run(sink.flush())
    assert "activity" not in kube.owner("BreakGlass", None, "inc-4711")["status"]
    assert not sink.tallies
