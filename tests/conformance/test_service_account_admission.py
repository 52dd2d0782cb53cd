"""The ServiceAccount admission plugin on pods being created, on the local API and on a real
cluster alike: the account a pod runs as, the projected token volume and its mounts exactly as
kube-apiserver v1.36 writes them, the account's image pull secrets, and the refusal of a pod
whose account does not exist. Pods are created with `dryRun=All`: admission runs all the same,
and nothing is scheduled."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.cluster import Cluster
from tests.conformance.conftest import raw
from tests.conformance.identities import PAUSE, SA_MOUNT, service_account

VOLUME_NAME = re.compile(r"kube-api-access-[bcdfghjklmnpqrstvwxz2456789]{5}")
TOKEN_VOLUME_SOURCE = {
    "projected": {
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {
                "configMap": {
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    "name": "kube-root-ca.crt",
                }
            },
            {
                "downwardAPI": {
                    "items": [
                        {
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            "path": "namespace",
                        }
                    ]
                }
            },
        ],
    }
}


def container(name: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "image": PAUSE, "imagePullPolicy": "Never", **more}


def admitted(cluster: Cluster, namespace: str, spec: dict[str, Any], name: str = "p") -> Any:
    """(status, the pod as admission left it or the error) for a dry-run create."""
    return raw(
        cluster,
        "POST",
        f"/api/v1/namespaces/{namespace}/pods?dryRun=All",
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec},
    )


def pod_spec(cluster: Cluster, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    status, body = admitted(cluster, namespace, spec)
    assert status == 201, body
    found: dict[str, Any] = body["spec"]
    return found


def token_volumes(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in spec.get("volumes") or () if v["name"].startswith("kube-api-access-")]


def test_pod_gets_default_account_and_token_volume(cluster: Cluster, cf_namespace: str) -> None:
    spec = pod_spec(
        cluster,
        cf_namespace,
        {
            "initContainers": [container("init")],
            "containers": [
                container("a"),
                container(
                    "b",
                    volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}],
                ),
                # A container that mounts something at the token's path keeps it.
                container("c", volumeMounts=[{"name": "scratch", "mountPath": SA_MOUNT}]),
            ],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        },
    )
    assert spec["serviceAccountName"] == "default"
    assert spec["serviceAccount"] == "default"
    [volume] = token_volumes(spec)
    assert VOLUME_NAME.fullmatch(volume["name"]), volume["name"]
    assert {k: v for k, v in volume.items() if k != "name"} == TOKEN_VOLUME_SOURCE
    # Added after the pod's own volumes.
    assert [v["name"] for v in spec["volumes"]] == ["scratch", volume["name"]]
    mount = {"mountPath": SA_MOUNT, "name": volume["name"], "readOnly": True}
    mounts = {c["name"]: c.get("volumeMounts") for c in spec["initContainers"] + spec["containers"]}
    assert mounts == {
        "init": [mount],
        "a": [mount],
        "b": [{"mountPath": "/scratch", "name": "scratch"}, mount],
        "c": [{"mountPath": SA_MOUNT, "name": "scratch"}],
    }


def test_named_account_and_its_pull_secrets(cluster: Cluster, cf_namespace: str) -> None:
    service_account(cluster, cf_namespace, "app", imagePullSecrets=[{"name": "registry"}])
    spec = pod_spec(
        cluster, cf_namespace, {"serviceAccountName": "app", "containers": [container("a")]}
    )
    assert (spec["serviceAccountName"], spec["serviceAccount"]) == ("app", "app")
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    assert len(token_volumes(spec)) == 1
    # A pod with pull secrets of its own keeps them; the deprecated field names the account.
    spec = pod_spec(
        cluster,
        cf_namespace,
        {
            "serviceAccount": "app",
            "imagePullSecrets": [{"name": "mine"}],
            "containers": [container("a")],
        },
    )
    assert (spec["serviceAccountName"], spec["serviceAccount"]) == ("app", "app")
    assert spec["imagePullSecrets"] == [{"name": "mine"}]


@pytest.mark.parametrize(
    ("on_pod", "on_account", "mounted"),
    [(False, None, False), (None, False, False), (True, False, True), (None, True, True)],
)
def test_automount_is_the_pods_word_then_the_accounts(
    cluster: Cluster,
    cf_namespace: str,
    on_pod: bool | None,
    on_account: bool | None,
    mounted: bool,
) -> None:
    fields = {} if on_account is None else {"automountServiceAccountToken": on_account}
    service_account(cluster, cf_namespace, "app", **fields)
    spec: dict[str, Any] = {"serviceAccountName": "app", "containers": [container("a")]}
    if on_pod is not None:
        spec["automountServiceAccountToken"] = on_pod
    admitted_spec = pod_spec(cluster, cf_namespace, spec)
    assert admitted_spec["serviceAccountName"] == "app"
    assert bool(token_volumes(admitted_spec)) is mounted
    assert bool(admitted_spec["containers"][0].get("volumeMounts")) is mounted


def test_a_token_volume_of_the_pod_is_reused(cluster: Cluster, cf_namespace: str) -> None:
    own = {"name": "kube-api-access-mine", "emptyDir": {}}
    spec = pod_spec(cluster, cf_namespace, {"containers": [container("a")], "volumes": [own]})
    assert spec["volumes"] == [own]
    assert spec["containers"][0]["volumeMounts"] == [
        {"mountPath": SA_MOUNT, "name": "kube-api-access-mine", "readOnly": True}
    ]


def test_missing_account_is_refused(cluster: Cluster, cf_namespace: str) -> None:
    for automount in (True, False):
        status, body = admitted(
            cluster,
            cf_namespace,
            {
                "serviceAccountName": "missing",
                "automountServiceAccountToken": automount,
                "containers": [container("a")],
            },
            name="q",
        )
        assert status == 403
        assert body["message"] == (
            f'pods "q" is forbidden: error looking up service account {cf_namespace}/missing: '
            'serviceaccount "missing" not found'
        )
        assert body["details"] == {"name": "q", "kind": "pods"}


def test_stored_pod_carries_what_admission_added(cluster: Cluster, cf_namespace: str) -> None:
    made = cluster.kubectl(
        "run", "stored", "-n", cf_namespace, f"--image={PAUSE}", "--image-pull-policy=Never",
        "--restart=Never", "-o", "name",
    )  # fmt: skip
    assert made.stdout.strip() == "pod/stored"
    status, pod = raw(cluster, "GET", f"/api/v1/namespaces/{cf_namespace}/pods/stored")
    assert status == 200
    [volume] = token_volumes(pod["spec"])
    assert pod["spec"]["containers"][0]["volumeMounts"] == [
        {"mountPath": SA_MOUNT, "name": volume["name"], "readOnly": True}
    ]
