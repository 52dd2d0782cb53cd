"""Which cluster the benchmark runs against, and what it reads from that cluster's kubeconfig.

Pure: no cluster is started or called. Running against a real one is checked by hand (see
bench/README.md), never in `make test`.
"""

from __future__ import annotations

import base64
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.backend import Choice, ChoiceError, choose
from bench.cluster import Credentials, KubeconfigError


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "admin.kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\n")
    return path


def test_the_local_api_unless_a_cluster_is_named(kubeconfig: Path) -> None:
    assert choose({}) == Choice(None)
    assert choose({"BENCH_CLUSTER": "local"}) == Choice(None)
    # A KUBECONFIG in the shell alone is not an invitation to fill that cluster.
    assert choose({"KUBECONFIG": str(kubeconfig)}) == Choice(None)


def test_bench_kubeconfig_names_the_cluster(kubeconfig: Path) -> None:
    chosen = choose({"BENCH_KUBECONFIG": str(kubeconfig), "KUBECONFIG": "/elsewhere"})
    assert chosen == Choice(kubeconfig, "BENCH_KUBECONFIG")
    both = {"BENCH_CLUSTER": "kubeconfig", "BENCH_KUBECONFIG": str(kubeconfig)}
    assert choose(both) == Choice(kubeconfig, "BENCH_KUBECONFIG")


def test_bench_cluster_kubeconfig_takes_kubeconfig(kubeconfig: Path) -> None:
    env = {"BENCH_CLUSTER": "kubeconfig", "KUBECONFIG": str(kubeconfig)}
    assert choose(env) == Choice(kubeconfig, "KUBECONFIG")


@pytest.mark.parametrize(
    "env",
    [
        {"BENCH_CLUSTER": "kind"},
        {"BENCH_CLUSTER": "local", "BENCH_KUBECONFIG": "KUBECONFIG_FILE"},
        {"BENCH_KUBECONFIG": "/no/such/kubeconfig"},
        {"BENCH_CLUSTER": "kubeconfig", "KUBECONFIG": "KUBECONFIG_FILE:KUBECONFIG_FILE"},
    ],
)
def test_an_unusable_choice_says_why(env: dict[str, str], kubeconfig: Path) -> None:
    env = {k: v.replace("KUBECONFIG_FILE", str(kubeconfig)) for k, v in env.items()}
    with pytest.raises(ChoiceError):
        choose(env)


def _write(path: Path, user: dict[str, Any], *, extra_context: bool = False) -> Path:
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nca\n").decode()
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "real",
                "cluster": {"server": "https://127.0.0.1:6443/", "certificate-authority-data": ca},
            },
        ],
        "users": [{"name": "admin", "user": user}],
        "contexts": [{"name": "admin@real", "context": {"cluster": "real", "user": "admin"}}],
        "current-context": "admin@real",
    }
    if extra_context:
        config["clusters"].insert(0, {"name": "other", "cluster": {"server": "https://other"}})
        config["users"].insert(0, {"name": "nobody", "user": {"token": "wrong"}})
        config["contexts"].insert(
            0, {"name": "other", "context": {"cluster": "other", "user": "nobody"}}
        )
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_token_kubeconfig(tmp_path: Path) -> None:
    path = _write(tmp_path / "kubeconfig", {"token": "s3cret"}, extra_context=True)
    credentials = Credentials.from_kubeconfig(path, scratch=tmp_path)
    assert credentials.server == "https://127.0.0.1:6443"
    assert credentials.headers() == {"Authorization": "Bearer s3cret"}
    assert credentials.cert_file is None
    assert credentials.ca_file == tmp_path / "bench-ca.crt"


def test_a_client_certificate_kubeconfig_is_written_to_the_scratch_directory(
    tmp_path: Path,
) -> None:
    user = {
        "client-certificate-data": base64.b64encode(b"CERT").decode(),
        "client-key-data": base64.b64encode(b"KEY").decode(),
    }
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    path = _write(tmp_path / "kubeconfig", user)
    credentials = Credentials.from_kubeconfig(path, scratch=scratch)
    assert credentials.headers() == {}
    assert credentials.cert_file is not None and credentials.key_file is not None
    assert credentials.cert_file.read_bytes() == b"CERT"
    assert credentials.key_file.read_bytes() == b"KEY"
    assert credentials.key_file.parent == scratch
    assert stat.S_IMODE(credentials.key_file.stat().st_mode) == 0o600


def test_certificate_files_are_found_beside_the_kubeconfig(tmp_path: Path) -> None:
    path = _write(tmp_path / "kubeconfig", {"client-certificate": "a.crt", "client-key": "a.key"})
    credentials = Credentials.from_kubeconfig(path, scratch=tmp_path)
    assert credentials.cert_file == tmp_path / "a.crt"
    assert credentials.key_file == tmp_path / "a.key"


def test_an_exec_plugin_is_refused_with_a_reason(tmp_path: Path) -> None:
    path = _write(tmp_path / "kubeconfig", {"exec": {"command": "aws"}})
    with pytest.raises(KubeconfigError, match="neither a token nor a client certificate"):
        Credentials.from_kubeconfig(path, scratch=tmp_path)
