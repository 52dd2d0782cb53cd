"""Deleting a request revokes at once, with its Event and audit line written first."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kubernetes

from tests.e2e.conftest import Operator, Team, binding_name, wait_for
from tests.e2e.test_scheduled import rfc3339, whole_seconds_from_now


def test_deleting_the_request_revokes(team: Team, operator: Operator) -> None:
    team.policy()
    team.ask("done-early", duration="1h")
    body = team.wait_phase("done-early", "Active")
    name = binding_name(body)
    assert team.can_i("create", "deployments")

    started = time.monotonic()
    team.kubectl("delete", "accessrequest", "done-early", "-n", team.namespace, "--wait=true")
    wait_for(lambda: team.binding(name) is None, timeout=5, interval=0.05, what="revocation")
    print(f"\nbinding gone {time.monotonic() - started:.3f}s after kubectl delete started")
    assert not team.can_i("create", "deployments")

    event = team.wait_event("done-early", "AccessRequestDeleted")
    assert "deleted" in event["message"]
    line = operator.wait_for_audit(
        lambda a: (
            a["action"] == "revoked"
            and a["name"] == "done-early"
            and a["namespace"] == team.namespace
        )
    )
    assert line["reason"] == "AccessRequestDeleted"
    gone = team.cluster.kubectl(
        "get", "accessrequest", "done-early", "-n", team.namespace, check=False
    )
    assert gone.returncode != 0


def test_ended_request_never_comes_back(team: Team, operator: Operator) -> None:
    team.policy()
    team.ask("once", duration="2s")
    body = team.wait_phase("once", "Active")
    name = binding_name(body)
    team.wait_phase("once", "Expired", timeout=10)
    # Someone re-creates the binding exactly as it was, ownerReference and all.
    assert team.binding(name) is None
    manifest = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": name,
            "namespace": team.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "lapse",
                "lapse.dev/request": "once",
                "lapse.dev/kind": "AccessRequest",
            },
            "annotations": {"lapse.dev/request-uid": body["metadata"]["uid"]},
            "ownerReferences": [
                {
                    "apiVersion": "lapse.dev/v1alpha1",
                    "kind": "AccessRequest",
                    "name": "once",
                    "uid": body["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    team.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    wait_for(lambda: team.binding(name) is None, timeout=10, interval=0.1, what="removal")
    assert team.request("once")["status"]["phase"] == "Expired"
    assert not team.can_i("create", "deployments")


# Enough grants ending at one instant to be more than the reaper's connections (64).
WAVE = 120
# The deletes the reaper may still have in flight when it has caught up (lapse.reaper,
# RELIEVED_AT of its 64 connections): the records may start beside those.
STILL_IN_FLIGHT = 8


@dataclass
class OrderedWrites:
    """The API server's order of two kinds of writes in one namespace, by resourceVersion:
    bindings deleted, and each request's status first saying Expired. (A resourceVersion is
    opaque to clients; here it is etcd's revision on kube-apiserver and the local API's
    counter, both one sequence for every write.)"""

    team: Team
    deleted: list[int] = field(default_factory=list)
    expired: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        api = self.team.cluster.api()
        rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        custom = kubernetes.client.CustomObjectsApi(api)
        namespace = self.team.namespace

        def bindings(**kwargs: Any) -> Any:
            return rbac.list_namespaced_role_binding(
                namespace, label_selector="app.kubernetes.io/managed-by=lapse", **kwargs
            )

        def requests(**kwargs: Any) -> Any:
            return custom.list_namespaced_custom_object(
                "lapse.dev", "v1alpha1", namespace, "accessrequests", **kwargs
            )

        self._threads = [
            threading.Thread(target=self._follow, args=(bindings, self._binding), daemon=True),
            threading.Thread(target=self._follow, args=(requests, self._request), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _follow(self, lister: Any, note: Any) -> None:
        api = self.team.cluster.api()

        def plain(value: Any) -> dict[str, Any]:
            return value if isinstance(value, dict) else dict(api.sanitize_for_serialization(value))

        version = plain(lister())["metadata"]["resourceVersion"]
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
            stream = watch.stream(lister, resource_version=version, timeout_seconds=2)  # type: ignore[no-untyped-call]
            for event in stream:
                body = plain(event["object"])
                if event["type"] == "ERROR":
                    raise AssertionError(f"the watch failed: {body}")
                version = body["metadata"]["resourceVersion"]
                note(event["type"], body)

    def _binding(self, type_: str, body: dict[str, Any]) -> None:
        if type_ == "DELETED":
            self.deleted.append(int(body["metadata"]["resourceVersion"]))

    def _request(self, type_: str, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        if (body.get("status") or {}).get("phase") == "Expired" and name not in self.expired:
            self.expired[name] = int(body["metadata"]["resourceVersion"])

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)


def deleted_after_the_first_record(team: Team, lead: int = 25) -> list[int]:
    """End WAVE grants at one instant (scheduled `lead` seconds ahead, for 5 s); the bindings
    the API server deleted after it had written the first of those ends, by resourceVersion."""
    team.policy(maximum="1h")
    start = whole_seconds_from_now(lead)
    names = [f"wave-{i:03d}" for i in range(WAVE)]
    items = [team.manifest(name, duration="5s", startAt=rfc3339(start)) for name in names]
    team.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )
    assert datetime.now(UTC) < start, "the requests were made after their start: raise the lead"
    writes = OrderedWrites(team)
    writes.start()
    try:
        wait_for(
            lambda: len(writes.expired) == WAVE,
            timeout=90,
            interval=0.5,
            what=f"all {WAVE} ends recorded",
        )
        wait_for(lambda: len(writes.deleted) == WAVE, timeout=10, interval=0.1, what="deletes")
    finally:
        writes.stop()
    first_record = min(writes.expired.values())
    return sorted(v for v in writes.deleted if v > first_record)


def test_a_wave_of_ends_deletes_every_binding_before_recording_any(
    team: Team, operator: Operator
) -> None:
    """More grants ending at one instant than the reaper has connections: the records of the
    ends (a status write, an Event each, and the events those cause) wait until the reaper has
    caught up, so every delete has the API server and the operator to itself — as the API
    server's own order of writes shows. (The reliability suite slows the deletes down, where
    records left free would come between them.)"""
    after = deleted_after_the_first_record(team)
    assert len(after) <= STILL_IN_FLIGHT, (
        f"{len(after)} of {WAVE} bindings were deleted after the first end was recorded"
    )
