"""The local API as a subprocess: `python -m kubeapi` started on a free port, and stopped.

It lives here, beside the server it launches, because more than the test suite starts one: the
load test (`python -m kubeapi.loadtest`), the demo (`python -m demo`) and the end-to-end
fixtures all need the same start-up handshake, and nothing outside `tests/` may import from
`tests`. `server_of` reads the API's URL back out of a kubeconfig, for a cluster started
elsewhere.
"""

from __future__ import annotations

import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
READY_PREFIX = "kubeapi listening on "


def server_of(kubeconfig: Path) -> str:
    """The server URL of the kubeconfig's current context (else its first context)."""
    config = yaml.safe_load(kubeconfig.read_text())
    current = config.get("current-context")
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or ()}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or ()}
    context = contexts.get(current) or next(iter(contexts.values()))
    return str(clusters[context["cluster"]]["server"])


class LocalServer:
    """`python -m kubeapi` as a subprocess, ready once it prints its listening line."""

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
                "kubeapi",
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
