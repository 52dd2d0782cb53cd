"""Watches: replay from a resourceVersion, selectors, bookmarks, timeouts and 410 Gone."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import kubernetes.client
import kubernetes.watch
import pytest

from tests.cluster import Cluster
from tests.conformance.conftest import admin_tls, as_admin, raw


def core(cluster: Cluster) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(cluster.api())


def stream(cluster: Cluster, path: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Every event of a watch that ends by itself (timeoutSeconds in the path)."""
    request = urllib.request.Request(cluster.server + path)
    as_admin(cluster, request)
    with urllib.request.urlopen(request, context=admin_tls(cluster), timeout=timeout) as response:
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]


def ours(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of the test's own ConfigMaps: kube-controller-manager publishes
    kube-root-ca.crt into every new namespace, at a moment of its choosing."""
    return [e for e in events if e["object"]["metadata"]["name"] != "kube-root-ca.crt"]


def test_watch_replays_every_event_after_a_list(cluster: Cluster, namespace: str) -> None:
    api = core(cluster)
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "before"}})
    listed = api.list_namespaced_config_map(namespace)
    rv = listed.metadata.resource_version
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "after"}})
    api.patch_namespaced_config_map("after", namespace, {"data": {"a": "1"}})
    api.delete_namespaced_config_map("before", namespace)
    events = stream(
        cluster,
        f"/api/v1/namespaces/{namespace}/configmaps?watch=true"
        f"&resourceVersion={rv}&timeoutSeconds=1",
    )
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in ours(events)]
    assert seen == [("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "before")]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)


def test_watch_without_resource_version_starts_with_current_state(
    cluster: Cluster, namespace: str
) -> None:
    core(cluster).create_namespaced_config_map(namespace, {"metadata": {"name": "here"}})
    events = stream(cluster, f"/api/v1/namespaces/{namespace}/configmaps?watch=1&timeoutSeconds=1")
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in ours(events)]
    assert seen == [("ADDED", "here")]


def test_python_client_watch_sees_live_events(cluster: Cluster, namespace: str) -> None:
    api = core(cluster)
    rv = api.list_namespaced_config_map(namespace).metadata.resource_version
    api.create_namespaced_config_map(
        namespace, {"metadata": {"name": "live", "labels": {"w": "yes"}}}
    )
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "other"}})
    watch = kubernetes.watch.Watch()
    seen = []
    for event in watch.stream(
        api.list_namespaced_config_map,
        namespace,
        resource_version=rv,
        label_selector="w=yes",
        timeout_seconds=5,
    ):
        seen.append((event["type"], event["object"].metadata.name))
        if event["type"] == "ADDED":
            api.patch_namespaced_config_map(
                "live", namespace, {"metadata": {"labels": {"w": "no"}}}
            )
        if event["type"] == "DELETED":
            watch.stop()
    # Leaving the selector is seen as a deletion, as from a real server's watch cache.
    assert seen == [("ADDED", "live"), ("DELETED", "live")]


def test_cluster_wide_watch_and_field_selector(cluster: Cluster, namespace: str) -> None:
    api = core(cluster)
    rv = api.list_config_map_for_all_namespaces().metadata.resource_version
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "x1"}})
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "x2"}})
    events = stream(
        cluster,
        f"/api/v1/configmaps?watch=true&resourceVersion={rv}"
        f"&fieldSelector=metadata.name%3Dx2&timeoutSeconds=1",
    )
    assert [
        (e["object"]["metadata"]["namespace"], e["object"]["metadata"]["name"]) for e in events
    ] == [(namespace, "x2")]


def test_bookmarks_when_allowed(cluster: Cluster, namespace: str) -> None:
    rv = core(cluster).list_namespaced_config_map(namespace).metadata.resource_version
    events = stream(
        cluster,
        f"/api/v1/namespaces/{namespace}/configmaps?watch=true"
        f"&resourceVersion={rv}&allowWatchBookmarks=true"
        "&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
        "&timeoutSeconds=1",
    )
    # The bookmark ends the initial events; kube-root-ca.crt may be published after it.
    bookmark = next(e for e in events if e["type"] == "BOOKMARK")
    assert all(e["type"] == "ADDED" for e in events[: events.index(bookmark)])
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


@pytest.mark.faults
def test_too_old_resource_version_is_410_gone(cluster: Cluster, namespace: str) -> None:
    assert cluster.faults is not None
    api = core(cluster)
    for i in range(3):
        api.create_namespaced_config_map(namespace, {"metadata": {"name": f"old{i}"}})
    first = api.list_namespaced_config_map(namespace, limit=1)
    rv = first.metadata.resource_version
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "newer"}})
    cluster.faults.forget_history()
    events = stream(
        cluster,
        f"/api/v1/namespaces/{namespace}/configmaps?watch=true"
        f"&resourceVersion={rv}&timeoutSeconds=5",
    )
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
    code, body = raw(
        cluster,
        "GET",
        f"/api/v1/namespaces/{namespace}/configmaps?limit=1&continue={first.metadata._continue}",
    )
    assert code == 410 and body["reason"] == "Expired"
    # A fresh list and watch from its resourceVersion work again.
    fresh = api.list_namespaced_config_map(namespace).metadata.resource_version
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "newest"}})
    events = stream(
        cluster,
        f"/api/v1/namespaces/{namespace}/configmaps?watch=true"
        f"&resourceVersion={fresh}&timeoutSeconds=1",
    )
    assert [e["object"]["metadata"]["name"] for e in events] == ["newest"]
