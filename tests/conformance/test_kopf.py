"""kopf, unmodified, runs an operator against the cluster: watch, finalizer, child, status."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from tests.cluster import Cluster
from tests.conformance.conftest import GROUP, VERSION, wait_for

OPERATOR = Path(__file__).with_name("kopf_operator.py")


@pytest.fixture
def operator(cluster: Cluster, widgets: str, namespace: str, tmp_path: Path) -> Iterator[None]:
    log = (tmp_path / "kopf.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--standalone",
            "--namespace",
            namespace,
            "--verbose",
            str(OPERATOR),
        ],
        env=cluster.env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        if process.returncode not in (0, -15):
            print((tmp_path / "kopf.log").read_text())


def test_kopf_creates_child_patches_status_and_finalizes(
    cluster: Cluster, namespace: str, operator: None
) -> None:
    custom = kubernetes.client.CustomObjectsApi(cluster.api())
    core = kubernetes.client.CoreV1Api(cluster.api())
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "widgets",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        },
    )

    def status() -> dict[str, object]:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", "w1")
        return dict((obj.get("status") or {}).get("create_fn") or {})

    assert wait_for(status) == {"child": "w1-child"}
    child = core.read_namespaced_config_map("w1-child", namespace)
    assert child.data == {"size": "3"}
    assert child.metadata.owner_references[0].name == "w1"
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", "w1")
    assert obj["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]

    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "widgets", "w1", {"spec": {"size": 5}}
    )
    wait_for(lambda: core.read_namespaced_config_map("w1-child", namespace).data == {"size": "5"})

    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", "w1")

    def gone() -> bool:
        try:
            custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "widgets", "w1")
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone)
    assert core.read_namespaced_config_map("w1-deleted", namespace).data == {"by": "kopf"}

    def child_collected() -> bool:
        try:
            core.read_namespaced_config_map("w1-child", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(child_collected)
