"""A real HTTPS collector for the HTTPS sink's tests: `hec_server.py` in its own process.

The certificates are made here with `cryptography`: the authority and the serving certificate
for 127.0.0.1 and localhost the sink trusts, a second authority it does not, and a client
certificate for mutual TLS. One collector serves a whole module (each test starts from empty
files and no queued answers); tests that stop a collector or need it to ask for a client
certificate start their own with `start_hec`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.sinks.https.collector import HecServer, Pki, build_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def module_hec(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HecServer]:
    server = HecServer(pki=pki, state=tmp_path_factory.mktemp("hec"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def hec(module_hec: HecServer) -> HecServer:
    """The module's collector, emptied of what earlier tests sent or queued."""
    module_hec.reset()
    return module_hec


@pytest.fixture
def start_hec(
    pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., HecServer]]:
    """Start a collector of the test's own (stopped at the end), e.g. one asking for a client
    certificate signed by `client_ca`."""
    started: list[HecServer] = []

    def start(*, client_ca: Path | None = None) -> HecServer:
        server = HecServer(pki=pki, state=tmp_path_factory.mktemp("hec"), client_ca=client_ca)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()
