"""Session-wide test fixtures: the cluster under test and a fresh namespace per test.

The backend is chosen with `--cluster=local|kind|kubeconfig` or `LAPSE_TEST_CLUSTER`
(default `local`, the project's own API server). Tests marked `faults` or `localonly` need the
local API and are skipped on the others.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from tests.cluster import Cluster, LocalServer, faults_client, server_of

BACKENDS = ("local", "kind", "kubeconfig")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster",
        choices=BACKENDS,
        default=None,
        help="where end-to-end tests run: the local API (default), kind, or $KUBECONFIG",
    )


def backend_of(config: pytest.Config) -> str:
    chosen = config.getoption("--cluster") or os.environ.get("LAPSE_TEST_CLUSTER") or "local"
    if chosen not in BACKENDS:
        raise pytest.UsageError(f"unknown cluster backend {chosen!r}; one of {BACKENDS}")
    return str(chosen)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    backend = backend_of(config)
    if backend == "local":
        return
    skip = pytest.mark.skip(reason=f"needs the local Kubernetes API (backend is {backend})")
    for item in items:
        if item.get_closest_marker("faults") or item.get_closest_marker("localonly"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    backend = backend_of(request.config)
    cache = tmp_path_factory.mktemp("kubectl-cache")
    if backend == "local":
        server = LocalServer(tmp_path_factory.mktemp("kubeapi"))
        url = server.start()
        try:
            yield Cluster(
                "local", server.kubeconfig, url, cache, faults=faults_client(url, server.kubeconfig)
            )
        finally:
            server.stop()
    elif backend == "kind":
        kind_cluster = request.getfixturevalue("kind_cluster")
        kubeconfig = Path(kind_cluster.kubeconfig_path)
        yield Cluster("kind", kubeconfig, server_of(kubeconfig), cache)
    else:
        kubeconfig = Path(os.environ.get("KUBECONFIG", "~/.kube/config")).expanduser()
        yield Cluster("kubeconfig", kubeconfig, server_of(kubeconfig), cache)


def _namespace_name(node_name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", node_name.lower()).strip("-")[:40].strip("-")
    return f"t-{stem}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = _namespace_name(request.node.name)
    core = kubernetes.client.CoreV1Api(cluster.api())
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
