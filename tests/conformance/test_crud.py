"""Object semantics through the `kubernetes` client: metadata, concurrency, patches, errors."""

from __future__ import annotations

import json
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from tests.cluster import Cluster
from tests.conformance.conftest import GROUP, VERSION, raw, wait_for


def custom(cluster: Cluster) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(cluster.api())


def core(cluster: Cluster) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(cluster.api())


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": spec,
    }


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


def test_create_fills_in_metadata_and_get_returns_it(
    cluster: Cluster, namespace: str, widgets: str
) -> None:
    created = custom(cluster).create_namespaced_custom_object(
        GROUP, VERSION, namespace, widgets, widget("a", size=1)
    )
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0
    got = custom(cluster).get_namespaced_custom_object(GROUP, VERSION, namespace, widgets, "a")
    assert got == created


def test_resource_versions_grow_across_kinds(cluster: Cluster, namespace: str) -> None:
    first = core(cluster).create_namespaced_config_map(namespace, {"metadata": {"name": "one"}})
    second = core(cluster).create_namespaced_secret(namespace, {"metadata": {"name": "two"}})
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)


def test_generate_name_makes_a_unique_name(cluster: Cluster, namespace: str) -> None:
    names = {
        core(cluster)
        .create_namespaced_config_map(namespace, {"metadata": {"generateName": "gen-"}})
        .metadata.name
        for _ in range(3)
    }
    assert len(names) == 3 and all(n.startswith("gen-") and len(n) == 9 for n in names)


def test_errors_are_status_objects_with_real_reasons(cluster: Cluster, namespace: str) -> None:
    with pytest.raises(ApiException) as missing:
        core(cluster).read_namespaced_config_map("nope", namespace)
    assert missing.value.status == 404
    assert status_of(missing.value)["reason"] == "NotFound"
    assert status_of(missing.value)["message"] == 'configmaps "nope" not found'

    core(cluster).create_namespaced_config_map(namespace, {"metadata": {"name": "dup"}})
    with pytest.raises(ApiException) as dup:
        core(cluster).create_namespaced_config_map(namespace, {"metadata": {"name": "dup"}})
    assert dup.value.status == 409 and status_of(dup.value)["reason"] == "AlreadyExists"

    with pytest.raises(ApiException) as bad:
        core(cluster).create_namespaced_config_map(namespace, {"metadata": {"name": "Bad_Name"}})
    assert bad.value.status == 422 and status_of(bad.value)["reason"] == "Invalid"
    assert status_of(bad.value)["details"]["causes"][0]["field"] == "metadata.name"


def test_stale_resource_version_conflicts(cluster: Cluster, namespace: str) -> None:
    api = core(cluster)
    cm = api.create_namespaced_config_map(namespace, {"metadata": {"name": "occ"}})
    stale = cm.metadata.resource_version
    api.replace_namespaced_config_map(
        "occ",
        namespace,
        {"metadata": {"name": "occ", "resourceVersion": stale}, "data": {"a": "1"}},
    )
    with pytest.raises(ApiException) as conflict:
        api.replace_namespaced_config_map(
            "occ",
            namespace,
            {"metadata": {"name": "occ", "resourceVersion": stale}, "data": {"a": "2"}},
        )
    assert conflict.value.status == 409 and status_of(conflict.value)["reason"] == "Conflict"
    assert api.read_namespaced_config_map("occ", namespace).data == {"a": "1"}


def test_status_and_spec_writes_ignore_each_other_and_generation(
    cluster: Cluster, namespace: str, widgets: str
) -> None:
    api = custom(cluster)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, widgets, widget("g", size=1))
    after_status = api.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        widgets,
        "g",
        {"status": {"phase": "Ready"}, "spec": {"size": 99}},
    )
    assert after_status["status"] == {"phase": "Ready"}
    assert after_status["spec"] == {"size": 1}
    assert after_status["metadata"]["generation"] == 1
    after_spec = api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, widgets, "g", {"spec": {"size": 2}, "status": {"phase": "X"}}
    )
    assert after_spec["spec"] == {"size": 2}
    assert after_spec["status"] == {"phase": "Ready"}
    assert after_spec["metadata"]["generation"] == 2
    labelled = api.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, widgets, "g", {"metadata": {"labels": {"a": "b"}}}
    )
    assert labelled["metadata"]["generation"] == 2


def test_noop_write_keeps_the_resource_version(cluster: Cluster, namespace: str) -> None:
    api = core(cluster)
    cm = api.create_namespaced_config_map(
        namespace, {"metadata": {"name": "same"}, "data": {"a": "1"}}
    )
    again = api.patch_namespaced_config_map("same", namespace, {"data": {"a": "1"}})
    assert again.metadata.resource_version == cm.metadata.resource_version


def test_json_patch_with_failed_test_answers_422(
    cluster: Cluster, namespace: str, widgets: str
) -> None:
    api = custom(cluster)
    created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, widgets, widget("jp"))
    rv = created["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x.example/f"]},
    ]
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{widgets}/jp"
    code, patched = raw(cluster, "PATCH", path, ops, "application/json-patch+json")
    assert code == 200 and patched["metadata"]["finalizers"] == ["x.example/f"]
    code, failed = raw(cluster, "PATCH", path, ops, "application/json-patch+json")
    assert code == 422 and failed["kind"] == "Status" and failed["code"] == 422
    code, _ = raw(
        cluster, "PATCH", path, {"metadata": {"finalizers": None}}, "application/merge-patch+json"
    )
    assert code == 200


def test_json_patch_of_the_status_appends_removes_and_tests_as_the_trail_does(
    cluster: Cluster, namespace: str, widgets: str
) -> None:
    """The exporter's writes (lapse.exporter): an object added where none was, guarded by the
    resourceVersion; then appends at `-`, removals at index 0 (each shifting the rest), all
    guarded by a `test` of a status field; a failed test is a 422 and changes nothing; the
    spec is never touched through the status."""
    api = custom(cluster)
    created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, widgets, widget("tr"))
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{widgets}/tr/status"
    json_patch = "application/json-patch+json"
    rv = created["metadata"]["resourceVersion"]
    code, first = raw(
        cluster,
        "PATCH",
        path,
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/status", "value": {}},
            {"op": "add", "path": "/status/trail", "value": {"records": ["a", "b"], "seq": 2}},
            {"op": "add", "path": "/spec/size", "value": 99},
        ],
        json_patch,
    )
    assert code == 200, first
    assert first["status"]["trail"] == {"records": ["a", "b"], "seq": 2}
    assert "size" not in (first.get("spec") or {})
    append = [
        {"op": "test", "path": "/status/trail/seq", "value": 2},
        {"op": "remove", "path": "/status/trail/records/0"},
        {"op": "remove", "path": "/status/trail/records/0"},
        {"op": "add", "path": "/status/trail/records/-", "value": "c"},
        {"op": "replace", "path": "/status/trail/seq", "value": 3},
        {"op": "add", "path": "/status/trail/delivered", "value": {"https": 2}},
    ]
    code, second = raw(cluster, "PATCH", path, append, json_patch)
    assert code == 200, second
    assert second["status"]["trail"] == {"records": ["c"], "seq": 3, "delivered": {"https": 2}}
    code, refused = raw(cluster, "PATCH", path, append, json_patch)
    assert code == 422 and refused["kind"] == "Status", refused
    code, stale = raw(
        cluster,
        "PATCH",
        path,
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/status/trail", "value": {}},
        ],
        json_patch,
    )
    assert code == 422, stale
    now = api.get_namespaced_custom_object(GROUP, VERSION, namespace, widgets, "tr")
    assert now["status"]["trail"]["records"] == ["c"]


def test_strategic_merge_patch_merges_finalizers_and_deletes_keys(
    cluster: Cluster, namespace: str
) -> None:
    api = core(cluster)
    api.create_namespaced_config_map(
        namespace,
        {
            "metadata": {"name": "smp", "finalizers": ["a.example/x"], "labels": {"k": "v"}},
            "data": {"keep": "1", "drop": "2"},
        },
    )
    patched = api.patch_namespaced_config_map(
        "smp",
        namespace,
        {
            "metadata": {"finalizers": ["b.example/y"], "labels": {"k": None}},
            "data": {"drop": None},
        },
    )
    # kube-apiserver puts what the patch adds before what was stored (normalizeElementOrder).
    assert patched.metadata.finalizers == ["b.example/y", "a.example/x"]
    assert not patched.metadata.labels
    assert patched.data == {"keep": "1"}
    api.patch_namespaced_config_map(
        "smp",
        namespace,
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example/x", "b.example/y"]}},
    )


def test_dry_run_stores_nothing(cluster: Cluster, namespace: str) -> None:
    api = core(cluster)
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "dry"}}, dry_run="All")
    with pytest.raises(ApiException) as missing:
        api.read_namespaced_config_map("dry", namespace)
    assert missing.value.status == 404


def test_delete_preconditions_conflict(cluster: Cluster, namespace: str) -> None:
    api = core(cluster)
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "pre"}})
    with pytest.raises(ApiException) as wrong_uid:
        api.delete_namespaced_config_map(
            "pre",
            namespace,
            body={"preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}},
        )
    assert wrong_uid.value.status == 409
    with pytest.raises(ApiException) as wrong_rv:
        api.delete_namespaced_config_map(
            "pre", namespace, body={"preconditions": {"resourceVersion": "1"}}
        )
    assert wrong_rv.value.status == 409
    current = api.read_namespaced_config_map("pre", namespace)
    api.delete_namespaced_config_map(
        "pre",
        namespace,
        body={
            "preconditions": {
                "uid": current.metadata.uid,
                "resourceVersion": current.metadata.resource_version,
            }
        },
    )


def test_label_and_field_selectors_and_pagination(cluster: Cluster, namespace: str) -> None:
    api = core(cluster)
    for i in range(7):
        api.create_namespaced_config_map(
            namespace,
            {"metadata": {"name": f"p{i}", "labels": {"tier": "a" if i % 2 else "b", "n": str(i)}}},
        )
    assert [
        c.metadata.name
        for c in api.list_namespaced_config_map(namespace, label_selector="tier=a").items
    ] == ["p1", "p3", "p5"]
    assert (
        len(
            api.list_namespaced_config_map(
                namespace,
                label_selector="tier in (a,b),n!=0",
            ).items
        )
        == 6
    )
    # No namespace is empty: kube-controller-manager publishes the cluster's CA in each, at a
    # moment of its own (on a busy machine, seconds after the namespace was made).
    wait_for(
        lambda: (
            [
                c.metadata.name
                for c in api.list_namespaced_config_map(namespace, label_selector="!tier").items
            ]
            == ["kube-root-ca.crt"]
        )
    )
    assert [
        c.metadata.name
        for c in api.list_namespaced_config_map(namespace, field_selector="metadata.name=p4").items
    ] == ["p4"]
    seen: list[str] = []
    token = None
    while True:
        page = api.list_namespaced_config_map(namespace, limit=3, _continue=token)
        seen += [c.metadata.name for c in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert seen == ["kube-root-ca.crt", *(f"p{i}" for i in range(7))]


def test_pages_count_what_is_left_only_when_no_selector_filters(
    cluster: Cluster, namespace: str
) -> None:
    api = core(cluster)
    for i in range(5):
        api.create_namespaced_config_map(
            namespace, {"metadata": {"name": f"q{i}", "labels": {"tier": "a"}}}
        )
    # kube-root-ca.crt is published into every namespace a moment after it is made.
    wait_for(lambda: len(api.list_namespaced_config_map(namespace).items) == 6)
    first = api.list_namespaced_config_map(namespace, limit=2)
    assert [c.metadata.name for c in first.items] == ["kube-root-ca.crt", "q0"]
    assert first.metadata.remaining_item_count == 4
    selected = api.list_namespaced_config_map(namespace, limit=2, label_selector="tier=a")
    assert [c.metadata.name for c in selected.items] == ["q0", "q1"]
    assert selected.metadata._continue
    assert selected.metadata.remaining_item_count is None
    rest = api.list_namespaced_config_map(
        namespace, limit=2, label_selector="tier=a", _continue=selected.metadata._continue
    )
    assert [c.metadata.name for c in rest.items] == ["q2", "q3"]
    assert rest.metadata.remaining_item_count is None


def test_namespaced_create_needs_the_namespace(cluster: Cluster) -> None:
    with pytest.raises(ApiException) as missing:
        core(cluster).create_namespaced_config_map("no-such-ns", {"metadata": {"name": "x"}})
    assert missing.value.status == 404


def test_events_are_one_store_with_two_shapes(cluster: Cluster, namespace: str) -> None:
    # Not a whole second: the Python client re-writes eventTime with isoformat(), which drops
    # a zero fraction, and the API server takes a MicroTime only with six digits of it.
    api = core(cluster)
    api.create_namespaced_event(
        namespace,
        {
            "metadata": {"name": "ev1"},
            "reason": "Granted",
            "message": "edit for 1h",
            "eventTime": "2024-01-01T00:00:00.123456Z",
            "reportingComponent": "lapse.dev/operator",
            "reportingInstance": "lapse-0",
            "action": "Grant",
            "type": "Normal",
            "involvedObject": {"kind": "AccessRequest", "name": "r1", "namespace": namespace},
        },
    )
    events_v1 = kubernetes.client.EventsV1Api(cluster.api())
    seen = events_v1.read_namespaced_event("ev1", namespace)
    assert seen.note == "edit for 1h" and seen.regarding.name == "r1"
    events_v1.create_namespaced_event(
        namespace,
        {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "ev2"},
            "eventTime": "2024-01-01T00:00:00.123456Z",
            "reportingController": "lapse.dev/operator",
            "reportingInstance": "lapse-0",
            "action": "Revoke",
            "reason": "Expired",
            "note": "lapsed",
            "type": "Normal",
            "regarding": {"kind": "AccessRequest", "name": "r2", "namespace": namespace},
        },
    )
    assert api.read_namespaced_event("ev2", namespace).message == "lapsed"
    by_object = api.list_namespaced_event(namespace, field_selector="involvedObject.name=r2")
    assert [e.metadata.name for e in by_object.items] == ["ev2"]
    by_regarding = events_v1.list_namespaced_event(namespace, field_selector="regarding.name=r1")
    assert [e.metadata.name for e in by_regarding.items] == ["ev1"]


def test_invalid_labels_are_422(cluster: Cluster, namespace: str, widgets: str) -> None:
    code, body = raw(
        cluster,
        "POST",
        f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{widgets}",
        {**widget("lbl"), "metadata": {"name": "lbl", "labels": {"ok": "not ok!"}}},
    )
    assert code == 422 and body["details"]["causes"][0]["field"] == "metadata.labels"
    assert 'Invalid value: "not ok!"' in body["message"]


def test_secret_string_data_and_immutable_config_maps(cluster: Cluster, namespace: str) -> None:
    api = core(cluster)
    secret = api.create_namespaced_secret(
        namespace, {"metadata": {"name": "s"}, "stringData": {"token": "abc"}}
    )
    assert secret.data == {"token": "YWJj"} and secret.type == "Opaque"
    assert secret.string_data is None
    api.create_namespaced_config_map(
        namespace, {"metadata": {"name": "frozen"}, "data": {"a": "1"}, "immutable": True}
    )
    with pytest.raises(ApiException) as refused:
        api.patch_namespaced_config_map("frozen", namespace, {"data": {"a": "2"}})
    assert refused.value.status == 422
    api.patch_namespaced_config_map("frozen", namespace, {"metadata": {"labels": {"x": "y"}}})


def test_dry_run_delete_keeps_the_object(cluster: Cluster, namespace: str) -> None:
    api = core(cluster)
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "stays"}})
    api.delete_namespaced_config_map("stays", namespace, dry_run="All")
    assert api.read_namespaced_config_map("stays", namespace).metadata.name == "stays"


def test_field_selectors_are_limited_to_the_fields_a_kind_indexes(
    cluster: Cluster, namespace: str
) -> None:
    code, body = raw(
        cluster, "GET", f"/api/v1/namespaces/{namespace}/configmaps?fieldSelector=data.a%3D1"
    )
    assert code == 400 and body["reason"] == "BadRequest"
    assert '"data.a" is not a known field selector' in body["message"]
    code, body = raw(cluster, "GET", "/api/v1/namespaces?fieldSelector=status.phase%3DActive")
    assert code == 200 and namespace in [n["metadata"]["name"] for n in body["items"]]


def test_empty_metadata_list_has_null_items(cluster: Cluster, namespace: str) -> None:
    # kube-apiserver writes an empty PartialObjectMetadataList's items as null: a client that
    # reads `items` with a default of [] gets None (Lapse's start-up sweep once died on it).
    accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
    path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"
    status, body = raw(cluster, "GET", path, headers={"Accept": accept})
    assert status == 200
    assert body["kind"] == "PartialObjectMetadataList"
    assert body["items"] is None
    status, body = raw(cluster, "GET", path)
    assert status == 200
    assert body["items"] == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2024-01-01T00:00:00Z", 'cannot parse "Z" as ".000000"'),
        ("2024-01-01T00:00:00+00:00", 'cannot parse "+00:00" as ".000000"'),
        ("2024-01-01T00:00:00.123Z", 'cannot parse ".123Z" as ".000000"'),
    ],
)
def test_micro_time_needs_six_fractional_digits(
    cluster: Cluster, namespace: str, value: str, problem: str
) -> None:
    """Event.eventTime and Lease renewTime are MicroTimes: Go decodes them with one layout."""
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "micro"},
        "eventTime": value,
        "reportingComponent": "lapse.dev/operator",
        "reportingInstance": "lapse-0",
        "action": "Grant",
        "reason": "Granted",
        "type": "Normal",
        "involvedObject": {"kind": "AccessRequest", "name": "r1", "namespace": namespace},
    }
    status, body = raw(cluster, "POST", f"/api/v1/namespaces/{namespace}/events", event)
    assert status == 400, body
    assert body["message"] == (
        'Event in version "v1" cannot be handled as a Event: parsing time '
        f'"{value}" as "2006-01-02T15:04:05.000000Z07:00": {problem}'
    )
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "micro"},
        "spec": {"holderIdentity": "a", "renewTime": value},
    }
    path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    status, body = raw(cluster, "POST", path, lease)
    assert status == 400, body
    assert problem in body["message"]
