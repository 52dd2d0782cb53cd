"""Faults on demand through the local API, as Lapse's reliability suite uses them: injected
errors seen by a real client, watches cut, history forgotten (410 Gone), an outage and the
recovery after it."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from tests.cluster import Cluster
from tests.conformance.conftest import admin_tls, as_admin

pytestmark = pytest.mark.faults


@pytest.fixture
def faults(cluster: Cluster) -> Iterator[Any]:
    assert cluster.faults is not None
    cluster.faults.reset()
    try:
        yield cluster.faults
    finally:
        cluster.faults.reset()


def core(cluster: Cluster) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(cluster.api())


def test_a_share_of_requests_fails_with_500(cluster: Cluster, namespace: str, faults: Any) -> None:
    faults.set(error_rate=0.5, error_codes=[500], seed=3, match={"namespaces": [namespace]})
    api = core(cluster)
    outcomes = []
    for _ in range(60):
        try:
            api.list_namespaced_config_map(namespace, _request_timeout=10)
            outcomes.append(200)
        except ApiException as exc:
            outcomes.append(exc.status)
            assert exc.reason == "Internal Server Error"
    assert set(outcomes) == {200, 500}
    state = faults.state()
    assert state["counters"]["errors"]["500"] == outcomes.count(500)
    # Requests outside the filter are untouched.
    for _ in range(10):
        api.list_namespaced_config_map("default", _request_timeout=10)


def test_429_carries_retry_after(cluster: Cluster, namespace: str, faults: Any) -> None:
    faults.set(
        error_rate=1.0,
        error_codes=[429],
        retry_after_seconds=3,
        match={"namespaces": [namespace], "verbs": ["create"]},
    )
    api = core(cluster)
    with pytest.raises(ApiException) as caught:
        api.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
    assert caught.value.status == 429
    assert caught.value.headers["Retry-After"] == "3"
    api.list_namespaced_config_map(namespace)  # reads are not targeted
    faults.reset()
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})


def test_watch_from_a_forgotten_resource_version_gets_410(
    cluster: Cluster, namespace: str, faults: Any
) -> None:
    api = core(cluster)
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "before"}})
    old_rv = api.list_namespaced_config_map(namespace).metadata.resource_version
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "after"}})
    faults.forget_history()
    with pytest.raises(ApiException) as caught:
        response = api.list_namespaced_config_map(
            namespace,
            watch=True,
            resource_version=old_rv,
            timeout_seconds=5,
            _preload_content=False,
            _request_timeout=10,
        )
        # Some servers answer 200 and send the 410 as an ERROR event on the stream.
        for line in response.stream():
            if b'"ERROR"' in line and b"410" in line:
                raise ApiException(status=410)
    assert caught.value.status == 410
    assert faults.state()["counters"]["history_forgotten"] == 1


def _watch_until_closed(cluster: Cluster, namespace: str, ended: threading.Event) -> None:
    response = core(cluster).list_namespaced_config_map(
        namespace, watch=True, timeout_seconds=60, _preload_content=False, _request_timeout=70
    )
    for _ in response.stream():
        pass
    ended.set()


def test_cut_watches_ends_open_streams(cluster: Cluster, namespace: str, faults: Any) -> None:
    ended = threading.Event()
    watcher = threading.Thread(target=_watch_until_closed, args=(cluster, namespace, ended))
    watcher.start()
    deadline = time.monotonic() + 10
    closed = 0
    while closed == 0 and time.monotonic() < deadline:
        closed = faults.cut_watches()
        if closed == 0:
            time.sleep(0.05)
    assert closed >= 1
    assert ended.wait(10), "the watch stream stayed open"
    watcher.join(5)


def test_outage_then_recovery(cluster: Cluster, namespace: str, faults: Any) -> None:
    api = core(cluster)
    faults.outage(seconds=None)
    try:
        with pytest.raises(Exception):  # noqa: B017 - a timeout, whatever the client calls it
            api.list_namespaced_config_map(namespace, _request_timeout=0.5)
        assert faults.state()["settings"]["outage"] is True
    finally:
        faults.end_outage()
    served = api.list_namespaced_config_map(namespace, _request_timeout=10).items
    assert {c.metadata.name for c in served} <= {"kube-root-ca.crt"}
    assert faults.state()["counters"]["outages"] == 1


def test_outage_ends_by_itself(cluster: Cluster, namespace: str, faults: Any) -> None:
    faults.outage(seconds=0.5)
    started = time.monotonic()
    # Held during the outage, then served: the request outlives it.
    core(cluster).list_namespaced_config_map(namespace, _request_timeout=30)
    assert time.monotonic() - started >= 0.4
    assert faults.state()["settings"]["outage"] is False


def test_control_endpoint_refuses_non_admins(cluster: Cluster, faults: Any) -> None:
    result = cluster.kubectl("get", "--raw", "/_faults", as_user="alice", check=False)
    assert result.returncode != 0


def _list_once(cluster: Cluster, path: str) -> tuple[int, str, dict[str, Any]]:
    """One GET, never retried (the Python client retries a 429 with Retry-After by itself):
    status, Retry-After, body."""
    request = urllib.request.Request(cluster.server + path)
    as_admin(cluster, request)
    try:
        with urllib.request.urlopen(request, context=admin_tls(cluster), timeout=10) as answer:
            return answer.status, "", json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, refused.headers.get("Retry-After", ""), json.loads(refused.read())


def test_a_restart_answers_lists_and_watches_429_while_storage_initializes(
    cluster: Cluster, namespace: str, faults: Any
) -> None:
    """What kube-apiserver v1.36 answered Lapse's operator right after a restart, mirrored:
    lists and watches 429 "storage is (re)initializing" with Retry-After 1, for a few seconds;
    a read by name is served."""
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    faults.restart(2.0)
    status, retry_after, body = _list_once(cluster, path)
    assert (status, retry_after) == (429, "1"), body
    assert body["reason"] == "TooManyRequests"
    assert body["message"] == "storage is (re)initializing"
    core(cluster).read_namespace(namespace)
    deadline = time.monotonic() + 10
    while (status := _list_once(cluster, path)[0]) == 429 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 200
    # A client that honours Retry-After (kubectl, the Python client) just waits it out.
    faults.restart(2.0)
    core(cluster).list_namespaced_config_map(namespace)
    counters = faults.state()["counters"]
    assert counters["restarts"] == 2 and counters["initializing"] >= 2
