"""The watch history is bounded: `--history N` keeps the last N events, older ones are 410."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client
import kubernetes.config
import pytest

from tests.cluster import LocalServer

pytestmark = pytest.mark.localonly


@pytest.fixture(scope="module")
def small_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A server of its own: the shared one keeps far more history than a test can exhaust."""
    server = LocalServer(tmp_path_factory.mktemp("small-history"), ["--history", "10"])
    server.start()
    try:
        yield server.kubeconfig
    finally:
        server.stop()


def test_resuming_beyond_the_kept_history_is_gone(small_history: Path) -> None:
    client = kubernetes.config.new_client_from_config(config_file=str(small_history))
    core = kubernetes.client.CoreV1Api(client)
    first = core.create_namespaced_config_map("default", {"metadata": {"name": "h0"}})
    start = first.metadata.resource_version
    for i in range(1, 40):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"h{i}"}})
    recent = core.read_namespaced_config_map("h35", "default").metadata.resource_version

    def watch(rv: str) -> list[dict[str, object]]:
        response = core.list_namespaced_config_map(
            "default", watch=True, resource_version=rv, timeout_seconds=1, _preload_content=False
        )
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]

    assert [e["type"] for e in watch(recent)] == ["ADDED"] * 4
    gone = watch(start)
    assert [e["type"] for e in gone] == ["ERROR"]
    assert gone[0]["object"]["code"] == 410  # type: ignore[index]
