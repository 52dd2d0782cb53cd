"""The audit log file (`--audit-log-path`): what the benchmark counts Lapse's requests from.

kube-apiserver writes one JSON event a line; the local API writes the same. The same requests
are made against each — the local API started here with the benchmark's policy, a real one
whose log is LAPSE_TEST_AUDIT_LOG — with a user agent of the test's own, and the lines they
left are checked field by field: one ResponseComplete line per request, the verb, the
objectRef (resource, subresource, namespace, name), the user agent, the timestamps, the code.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from demo.harness import kubectl_binary
from kubeapi.process import LocalServer

ROOT = Path(__file__).resolve().parents[2]
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture
def audited(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """(environment for kubectl, the audit log) of the backend under test."""
    if os.environ.get("LAPSE_TEST_CLUSTER", "local") == "local":
        log = tmp_path / "audit.log"
        server = LocalServer(
            tmp_path / "kubeapi",
            [
                "--audit-policy-file",
                str(ROOT / "bench" / "audit-policy.yaml"),
                "--audit-log-path",
                str(log),
            ],
        )
        server.start()
        try:
            yield {**os.environ, "KUBECONFIG": str(server.kubeconfig)}, log
        finally:
            server.stop()
        return
    named = os.environ.get("LAPSE_TEST_AUDIT_LOG", "")
    if not named or not Path(named).is_file():
        pytest.skip("the real API server's audit log is not known (LAPSE_TEST_AUDIT_LOG)")
    yield dict(os.environ), Path(named)


def kubectl(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [kubectl_binary(), *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout


def lines_for(log: Path, namespace: str, within: float = 20) -> list[dict[str, Any]]:
    """The log's events about `namespace` (a fresh one keeps the test's lines apart), once
    the namespace's deletion is among them."""
    deadline = time.monotonic() + within
    while True:
        found = [
            event
            for line in log.read_text().splitlines()
            if namespace in line
            for event in [json.loads(line)]
        ]
        done = any(
            e.get("verb") == "delete" and (e.get("objectRef") or {}).get("resource") == "namespaces"
            for e in found
        )
        if done or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_each_request_is_one_line_with_what_the_benchmark_counts(
    audited: tuple[dict[str, str], Path],
) -> None:
    env, log = audited
    namespace = f"audit-log-{uuid.uuid4().hex[:8]}"
    kubectl(env, "create", "namespace", namespace)
    kubectl(env, "-n", namespace, "create", "configmap", "one", "--from-literal=a=b")
    kubectl(env, "-n", namespace, "get", "configmap", "one", "-o", "name")
    kubectl(env, "-n", namespace, "patch", "configmap", "one", "-p", '{"data":{"a":"c"}}')
    kubectl(env, "-n", namespace, "delete", "configmap", "one")
    kubectl(env, "delete", "namespace", namespace, "--wait=false")

    events = [
        e
        for e in lines_for(log, namespace)
        if str(e.get("userAgent", "")).startswith("kubectl/")
        and (e.get("objectRef") or {}).get("resource") in ("configmaps", "namespaces")
    ]
    assert all(e["stage"] == "ResponseComplete" for e in events), events
    calls = [(e["verb"], e["objectRef"]["resource"]) for e in events]
    for call in [
        ("create", "namespaces"),
        ("create", "configmaps"),
        ("get", "configmaps"),
        ("patch", "configmaps"),
        ("delete", "configmaps"),
        ("delete", "namespaces"),
    ]:
        assert call in calls, (call, calls)
    # One line a request (kubectl reads before it patches or deletes: those are lines too).
    assert len({e["auditID"] for e in events}) == len(events), events
    for event in events:
        ref = event["objectRef"]
        assert event["level"] == "Metadata", event
        assert MICRO_TIME.match(event["requestReceivedTimestamp"]), event
        assert MICRO_TIME.match(event["stageTimestamp"]), event
        assert event["requestURI"].startswith("/api/v1/"), event
        # A line is a whole Event object, unlike a webhook batch's items.
        assert (event["kind"], event["apiVersion"]) == ("Event", "audit.k8s.io/v1"), event
        # 404: kubectl's delete reads until the object is gone.
        assert event["responseStatus"]["code"] in (200, 201, 404), event
        if ref["resource"] == "configmaps":
            assert ref["namespace"] == namespace and ref["name"] == "one", event
            assert ref["apiVersion"] == "v1" and "apiGroup" not in ref, event
