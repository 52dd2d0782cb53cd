"""The Kubernetes cluster an end-to-end test runs against, whichever backend provides it.

`local` starts the project's own API server (`python -m tests.kubeapi`) as a subprocess, `kind`
takes pytest-kind's cluster where Docker exists, `kubeconfig` uses whatever `KUBECONFIG` names.
Tests see one `Cluster` with the same helpers in every case.
"""

from __future__ import annotations

import base64
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
READY_PREFIX = "kubeapi listening on "


def kubectl_binary() -> str:
    local = VENV_BIN / "kubectl"
    return str(local) if local.exists() else "kubectl"


@dataclass
class Cluster:
    backend: str  # "local" | "kind" | "kubeconfig"
    kubeconfig: Path  # an admin kubeconfig
    server: str  # base URL of the API
    cache_dir: Path  # kubectl's discovery cache, private to this run
    faults: Any | None = None  # a faults.FaultsClient on the local backend
    _api: kubernetes.client.ApiClient | None = field(default=None, repr=False)

    def env(self) -> dict[str, str]:
        """os.environ plus KUBECONFIG, a private kubectl cache and .venv/bin first on PATH."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["KUBECACHEDIR"] = str(self.cache_dir)
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(
        self,
        *args: str,
        as_user: str | None = None,
        groups: Sequence[str] = (),
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        command = [kubectl_binary(), *args]
        if as_user is not None:
            command.append(f"--as={as_user}")
        command.extend(f"--as-group={g}" for g in groups)
        result = subprocess.run(
            command,
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def api(self) -> kubernetes.client.ApiClient:
        """An admin client (shared; do not close it)."""
        if self._api is None:
            self._api = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(self.kubeconfig)
            )
        return self._api


def server_of(kubeconfig: Path) -> str:
    config = yaml.safe_load(kubeconfig.read_text())
    current = config.get("current-context")
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or ()}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or ()}
    context = contexts.get(current) or next(iter(contexts.values()))
    return str(clusters[context["cluster"]]["server"])


class LocalServer:
    """`python -m tests.kubeapi` as a subprocess, ready once it prints its listening line."""

    def __init__(self, workdir: Path, extra_args: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.kubeconfig = workdir / "kubeconfig"
        self.log_path = workdir / "kubeapi.log"
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, timeout: float = 30) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.kubeapi",
                "--port",
                "0",
                "--kubeconfig",
                str(self.kubeconfig),
                *self.extra_args,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            line = self.process.stdout.readline()
            if not line:
                break
            if line.startswith(READY_PREFIX):
                self.url = line[len(READY_PREFIX) :].strip()
                selector.close()
                return self.url
        selector.close()
        self.stop()
        raise RuntimeError(f"the local API did not start; log:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None


def faults_client(server: str, kubeconfig: Path) -> Any | None:
    """The fault controls of the local API (admin token and CA from the kubeconfig)."""
    try:
        from tests.kubeapi import faults
    except ImportError:
        return None
    client_type = getattr(faults, "FaultsClient", None)
    if client_type is None:
        return None
    config = yaml.safe_load(kubeconfig.read_text())
    token = config["users"][0]["user"]["token"]
    ca_data = config["clusters"][0]["cluster"].get("certificate-authority-data")
    cafile = None
    if ca_data:
        ca_path = kubeconfig.with_name("ca.crt")
        ca_path.write_bytes(base64.b64decode(ca_data))
        cafile = str(ca_path)
    return client_type(server, token, cafile)
