"""Finalizers, deletionTimestamp, owner-reference garbage collection, namespace deletion."""

from __future__ import annotations

import uuid
from typing import Any

import kubernetes.client
from kubernetes.client.rest import ApiException

from tests.cluster import Cluster
from tests.conformance.conftest import GROUP, VERSION, raw, wait_for

# How long a real garbage collector may take with an owner of a kind created moments ago: a
# discovery resync (30 s), then the retry its backoff had grown to by then.
NEW_KIND_COLLECTION = 120


def core(cluster: Cluster) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(cluster.api())


def custom(cluster: Cluster) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(cluster.api())


def owner_ref(obj: dict[str, Any], block: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "blockOwnerDeletion": block,
    }


def absent(read: Any) -> bool:
    try:
        read()
    except ApiException as exc:
        return exc.status == 404
    return False


def test_finalizer_holds_deletion_until_removed(cluster: Cluster, namespace: str) -> None:
    api = core(cluster)
    api.create_namespaced_config_map(
        namespace, {"metadata": {"name": "held", "finalizers": ["lapse.dev/test"]}}
    )
    api.delete_namespaced_config_map("held", namespace)
    marked = api.read_namespaced_config_map("held", namespace)
    assert marked.metadata.deletion_timestamp is not None
    path = f"/api/v1/namespaces/{namespace}/configmaps/held"
    code, body = raw(
        cluster,
        "PATCH",
        path,
        {"metadata": {"finalizers": ["lapse.dev/test", "lapse.dev/new"]}},
        "application/merge-patch+json",
    )
    assert code == 422 and "no new finalizers" in body["message"]
    code, _ = raw(
        cluster, "PATCH", path, {"metadata": {"finalizers": None}}, "application/merge-patch+json"
    )
    assert code == 200
    assert absent(lambda: api.read_namespaced_config_map("held", namespace))


def test_background_gc_with_cluster_scoped_owner(
    cluster: Cluster, namespace: str, widgets: str
) -> None:
    gadget = custom(cluster).create_cluster_custom_object(
        GROUP,
        VERSION,
        "gadgets",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Gadget",
            "metadata": {"name": f"owner-{namespace}"},
        },
    )
    api = core(cluster)
    api.create_namespaced_config_map(
        namespace, {"metadata": {"name": "dep", "ownerReferences": [owner_ref(gadget)]}}
    )
    custom(cluster).delete_cluster_custom_object(
        GROUP, VERSION, "gadgets", gadget["metadata"]["name"]
    )
    # Kubernetes promises collection, not a moment: kube-controller-manager's collector learns
    # a new CRD's kind at its next discovery resync (every 30 s) and retries the dependent
    # with a growing backoff meanwhile, so on a fresh cluster this took over 30 s.
    wait_for(
        lambda: absent(lambda: api.read_namespaced_config_map("dep", namespace)),
        timeout=NEW_KIND_COLLECTION,
    )


def test_dependent_with_a_live_owner_keeps_living(cluster: Cluster, namespace: str) -> None:
    api = core(cluster)
    one = api.create_namespaced_config_map(namespace, {"metadata": {"name": "o1"}})
    two = api.create_namespaced_config_map(namespace, {"metadata": {"name": "o2"}})
    refs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": o.metadata.name, "uid": o.metadata.uid}
        for o in (one, two)
    ]
    api.create_namespaced_config_map(
        namespace, {"metadata": {"name": "shared", "ownerReferences": refs}}
    )
    api.delete_namespaced_config_map("o1", namespace)
    wait_for(
        lambda: (
            [
                r.name
                for r in api.read_namespaced_config_map(
                    "shared", namespace
                ).metadata.owner_references
            ]
            == ["o2"]
        )
    )


def test_foreground_deletion_waits_for_blocking_dependents(
    cluster: Cluster, namespace: str
) -> None:
    api = core(cluster)
    owner = api.create_namespaced_config_map(namespace, {"metadata": {"name": "fg"}})
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "fg",
        "uid": owner.metadata.uid,
        "blockOwnerDeletion": True,
    }
    api.create_namespaced_config_map(
        namespace,
        {
            "metadata": {
                "name": "fg-dep",
                "ownerReferences": [ref],
                "finalizers": ["lapse.dev/hold"],
            }
        },
    )
    api.delete_namespaced_config_map("fg", namespace, propagation_policy="Foreground")
    marked = wait_for(
        lambda: api.read_namespaced_config_map("fg-dep", namespace).metadata.deletion_timestamp
    )
    assert marked
    still = api.read_namespaced_config_map("fg", namespace)
    assert "foregroundDeletion" in still.metadata.finalizers
    api.patch_namespaced_config_map(
        "fg-dep", namespace, [{"op": "remove", "path": "/metadata/finalizers"}]
    )
    wait_for(lambda: absent(lambda: api.read_namespaced_config_map("fg", namespace)))


def test_orphan_deletion_keeps_dependents(cluster: Cluster, namespace: str) -> None:
    api = core(cluster)
    owner = api.create_namespaced_config_map(namespace, {"metadata": {"name": "orph"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "orph", "uid": owner.metadata.uid}
    api.create_namespaced_config_map(
        namespace, {"metadata": {"name": "orph-dep", "ownerReferences": [ref]}}
    )
    api.delete_namespaced_config_map("orph", namespace, propagation_policy="Orphan")
    wait_for(lambda: absent(lambda: api.read_namespaced_config_map("orph", namespace)))
    dep = api.read_namespaced_config_map("orph-dep", namespace)
    assert not dep.metadata.owner_references


def test_namespace_deletion_removes_its_content(cluster: Cluster) -> None:
    api = core(cluster)
    # Its own name each run: a real namespace controller takes seconds to finish a deletion.
    name = f"t-ns-deletion-{uuid.uuid4().hex[:6]}"
    api.create_namespace({"metadata": {"name": name}})
    api.create_namespaced_config_map(
        name, {"metadata": {"name": "a", "finalizers": ["lapse.dev/hold"]}}
    )
    api.create_namespaced_secret(name, {"metadata": {"name": "b"}})
    api.delete_namespace(name)
    ns = api.read_namespace(name)
    assert ns.status.phase == "Terminating"
    wait_for(lambda: absent(lambda: api.read_namespaced_secret("b", name)))
    try:
        api.create_namespaced_config_map(name, {"metadata": {"name": "late"}})
        raise AssertionError("created content in a terminating namespace")
    except ApiException as exc:
        assert exc.status == 403
    raw(
        cluster,
        "PATCH",
        f"/api/v1/namespaces/{name}/configmaps/a",
        {"metadata": {"finalizers": None}},
        "application/merge-patch+json",
    )
    wait_for(lambda: absent(lambda: api.read_namespace(name)), timeout=60)


def test_a_name_still_being_deleted_cannot_be_created_again(
    cluster: Cluster, namespace: str
) -> None:
    """Found on kube-apiserver v1.36: an object held by a finalizer keeps its name, and a
    create of that name is a 409 AlreadyExists that says why."""
    api = core(cluster)
    api.create_namespaced_config_map(
        namespace, {"metadata": {"name": "going", "finalizers": ["lapse.dev/hold"]}}
    )
    api.delete_namespaced_config_map("going", namespace)
    path = f"/api/v1/namespaces/{namespace}/configmaps/going"
    try:
        code, body = raw(
            cluster, "POST", f"/api/v1/namespaces/{namespace}/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "going"}},
        )  # fmt: skip
        assert code == 409
        assert body["reason"] == "AlreadyExists"
        assert body["message"] == 'object is being deleted: configmaps "going" already exists'
        assert body["details"] == {"name": "going", "kind": "configmaps"}
    finally:
        raw(
            cluster,
            "PATCH",
            path,
            {"metadata": {"finalizers": None}},
            "application/merge-patch+json",
        )
    assert absent(lambda: api.read_namespaced_config_map("going", namespace))
    api.create_namespaced_config_map(namespace, {"metadata": {"name": "going"}})


def test_deleting_a_crd_deletes_its_objects_and_stops_serving(
    cluster: Cluster, namespace: str
) -> None:
    from tests.conformance.conftest import wait_established, widget_crd

    ext = kubernetes.client.ApiextensionsV1Api(cluster.api())
    # Names of its own each run: a CRD whose deletion an earlier, failed run left held by its
    # object's finalizer would refuse this one's creation (and claim its kind).
    suffix = uuid.uuid4().hex[:6]
    plural, kind = f"sprockets{suffix}", f"Sprocket{suffix}"
    crd = widget_crd(plural, kind, "Namespaced")
    name = crd["metadata"]["name"]
    ext.create_custom_resource_definition(crd)
    wait_established(ext, name)
    api = custom(cluster)
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/s1"
    api.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        plural,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": "s1", "finalizers": ["lapse.dev/hold"]},
        },
    )
    try:
        ext.delete_custom_resource_definition(name)
        wait_for(
            lambda: api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, "s1")[
                "metadata"
            ].get("deletionTimestamp")
        )
        assert ext.read_custom_resource_definition(name).metadata.deletion_timestamp
    finally:
        # Whatever happened above, nothing of this test may stay held.
        code, _ = raw(
            cluster,
            "PATCH",
            path,
            {"metadata": {"finalizers": None}},
            "application/merge-patch+json",
        )
    assert code == 200
    wait_for(lambda: absent(lambda: ext.read_custom_resource_definition(name)))
    code, _ = raw(cluster, "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}")
    assert code == 404


def test_initial_namespaces_may_not_be_deleted(cluster: Cluster) -> None:
    try:
        core(cluster).delete_namespace("kube-system")
        raise AssertionError("kube-system was deleted")
    except ApiException as exc:
        assert exc.status == 403


def test_cluster_scoped_dependent_of_a_namespaced_owner_is_never_collected(
    cluster: Cluster, namespace: str
) -> None:
    api = core(cluster)
    owner = api.create_namespaced_config_map(namespace, {"metadata": {"name": "ns-owner"}})
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.api())
    name = f"unresolvable-{namespace}"
    rbac.create_cluster_role(
        {
            "metadata": {
                "name": name,
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "ns-owner",
                        "uid": owner.metadata.uid,
                    }
                ],
            },
            "rules": [],
        }
    )
    api.delete_namespaced_config_map("ns-owner", namespace)
    # Another dependent, collected normally, shows the collector has run past this point.
    marker = api.create_namespaced_config_map(namespace, {"metadata": {"name": "marker"}})
    api.create_namespaced_config_map(
        namespace,
        {
            "metadata": {
                "name": "marker-dep",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "marker",
                        "uid": marker.metadata.uid,
                    }
                ],
            }
        },
    )
    api.delete_namespaced_config_map("marker", namespace)
    wait_for(lambda: absent(lambda: api.read_namespaced_config_map("marker-dep", namespace)))
    assert rbac.read_cluster_role(name).metadata.owner_references[0].name == "ns-owner"
    rbac.delete_cluster_role(name)


def test_every_namespace_gets_a_default_service_account(cluster: Cluster, namespace: str) -> None:
    api = core(cluster)
    account = wait_for(lambda: api.list_namespaced_service_account(namespace).items)
    assert [a.metadata.name for a in account] == ["default"]
