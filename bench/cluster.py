"""The processes a benchmark run needs: the local Kubernetes API and the Lapse operator.

Both run as separate processes, as in a real cluster, so the operator's RSS and CPU are its own
and a SIGKILL is a real crash. Every process started here is stopped again by its owner's
`stop()`, also on Ctrl-C and on failure.
"""

from __future__ import annotations

import base64
import os
import selectors
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
READY_PREFIX = "kubeapi listening on "
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class KubeconfigError(ValueError):
    """A kubeconfig the benchmark cannot use: it says why, in words a person can act on."""


@dataclass(frozen=True)
class Credentials:
    """What a client needs from an admin kubeconfig: where, who, and which CA to trust.

    Who is a bearer token or a client certificate and key: the local API hands out a token,
    a kube-apiserver's admin kubeconfig usually holds a certificate.
    """

    server: str
    token: str | None
    ca_file: Path | None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file or self.cert_file))
        return context

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @classmethod
    def from_kubeconfig(cls, path: Path, scratch: Path | None = None) -> Credentials:
        """The current context's cluster and user. Embedded CA, certificate and key data are
        written to `scratch` (default: beside the kubeconfig), since `ssl` reads only files;
        a kubeconfig that is not the benchmark's own gets a scratch directory of the run's."""
        config = yaml.safe_load(path.read_text()) or {}
        cluster, user = _current(config, path)
        scratch = scratch or path.parent

        def file_of(entry: dict[str, Any], key: str, name: str) -> Path | None:
            if entry.get(f"{key}-data"):
                target = scratch / name
                target.write_bytes(base64.b64decode(entry[f"{key}-data"]))
                target.chmod(0o600)
                return target
            return (path.parent / str(entry[key])).resolve() if entry.get(key) else None

        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = (path.parent / str(user["tokenFile"])).read_text().strip()
        cert_file = file_of(user, "client-certificate", "bench-client.crt")
        key_file = file_of(user, "client-key", "bench-client.key")
        if not token and cert_file is None:
            raise KubeconfigError(
                f"{path}: the current context's user has neither a token nor a client "
                "certificate (exec and auth-provider plugins are not supported)"
            )
        return cls(
            server=str(cluster["server"]).rstrip("/"),
            token=str(token) if token else None,
            ca_file=file_of(cluster, "certificate-authority", "bench-ca.crt"),
            cert_file=cert_file,
            key_file=key_file,
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
        )


def _current(config: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cluster and user entries of the kubeconfig's current context (or its only ones)."""
    clusters = {c["name"]: c.get("cluster") or {} for c in config.get("clusters") or []}
    users = {u["name"]: u.get("user") or {} for u in config.get("users") or []}
    contexts = {c["name"]: c.get("context") or {} for c in config.get("contexts") or []}
    context = contexts.get(str(config.get("current-context") or ""))
    if context is not None:
        cluster_name, user_name = context.get("cluster"), context.get("user")
    elif len(clusters) == 1 and len(users) == 1:
        cluster_name, user_name = next(iter(clusters)), next(iter(users))
    else:
        raise KubeconfigError(f"{path}: no current-context, and more than one cluster or user")
    if cluster_name not in clusters or user_name not in users:
        raise KubeconfigError(f"{path}: the current context names an unknown cluster or user")
    if not clusters[cluster_name].get("server"):
        raise KubeconfigError(f"{path}: the current context's cluster has no server")
    return clusters[cluster_name], users[user_name]


# Every process this module started and has not yet seen exit: the last line of defence, so
# that even a clean-up cut short leaves nothing running (see `stop_all`).
_STARTED: list[subprocess.Popen[bytes]] = []


def _spawn(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, **kwargs)
    _STARTED.append(process)
    return process


def _terminate(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        if process.poll() is None:
            process.kill()
        if process in _STARTED:
            _STARTED.remove(process)


def stop_all() -> None:
    """Kill whatever this module started and is still running."""
    for process in list(_STARTED):
        if process.poll() is None:
            process.kill()
            process.wait()
        _STARTED.remove(process)


POLICY = ROOT / "bench" / "audit-policy.yaml"


class LocalApi:
    """`python -m kubeapi` on a free port, ready once it prints its listening line."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.kubeconfig = workdir / "kubeconfig"
        self.log_path = workdir / "kubeapi.log"
        # Every request, a JSON line each, as kube-apiserver's audit log: the requests per
        # grant are counted from it (bench.requests).
        self.audit_log = workdir / "audit.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 60) -> Credentials:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = _spawn(
                [
                    sys.executable,
                    "-m",
                    "kubeapi",
                    "--port",
                    "0",
                    "--kubeconfig",
                    str(self.kubeconfig),
                    # Every request of a 10,000-grant run produces several watch events; keep
                    # enough history that a reconnecting watch never gets 410 Gone.
                    "--history",
                    "1000000",
                    "--audit-policy-file",
                    str(POLICY),
                    "--audit-log-path",
                    str(self.audit_log),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                line = self.process.stdout.readline().decode()
                if not line:
                    break
                if line.startswith(READY_PREFIX):
                    self.url = line[len(READY_PREFIX) :].strip()
                    return Credentials.from_kubeconfig(self.kubeconfig)
        finally:
            selector.close()
        self.stop()
        raise RuntimeError(f"the local API did not start; log:\n{self.log_path.read_text()}")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def stop(self) -> None:
        if self.process is None:
            return
        _terminate(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None


class Operator:
    """The Lapse operator (`python -m lapse.main`): start, SIGKILL, restart, observe."""

    def __init__(self, workdir: Path, kubeconfig: Path) -> None:
        self.workdir = workdir
        self.kubeconfig = kubeconfig
        self.log_path = workdir / "operator.log"
        self.audit_path = workdir / "audit.jsonl"
        self.metrics_port = free_port()
        # Fixed for the operator's life, restarts included: whatever sends to its webhook
        # server (the audit sink's benchmark) keeps finding it.
        self.webhook_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the operator is not running"
        return self.process.pid

    def start(self) -> float:
        """Spawn the operator; returns the wall-clock time of the spawn."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            PYTHONUNBUFFERED="1",
            LAPSE_WEBHOOK_ADDR="127.0.0.1",
            LAPSE_WEBHOOK_HOST="127.0.0.1",
            LAPSE_WEBHOOK_PORT=str(self.webhook_port),
            LAPSE_WEBHOOK_CERT_DIR=str(self.workdir / "certs"),
            LAPSE_METRICS_ADDR="127.0.0.1",
            LAPSE_METRICS_PORT=str(self.metrics_port),
            LAPSE_NAMESPACE="default",
        )
        # Other LAPSE_* settings (the sweep interval, say) pass through from the caller's
        # environment, so their effect can be measured; the defaults are what users run.
        # A different command (say, the operator under a memory tracer) can be swapped in; it
        # must stay one process, since RSS and CPU are read from the pid started here.
        override = os.environ.get("BENCH_OPERATOR_COMMAND", "").strip()
        command = shlex.split(override) if override else [sys.executable, "-m", "lapse.main"]
        self.started_at = time.time()
        with self.audit_path.open("ab") as out, self.log_path.open("ab") as err:
            self.process = _spawn(command, cwd=ROOT, env=env, stdout=out, stderr=err)
        return self.started_at

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"the operator exited ({self.process.returncode}):\n{tail}")

    def wait_metrics(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(self.metrics_url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the operator's metrics endpoint did not come up in {timeout}s")

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            return str(response.read().decode())

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as a crashed node would."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        if self.process in _STARTED:
            _STARTED.remove(self.process)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        _terminate(self.process)
        self.process = None


@dataclass(frozen=True)
class Usage:
    """A process's resident memory and accumulated CPU time, read from /proc."""

    rss_bytes: int
    cpu_seconds: float


def usage(pid: int) -> Usage:
    with open(f"/proc/{pid}/statm") as statm:
        rss_pages = int(statm.read().split()[1])
    with open(f"/proc/{pid}/stat") as stat:
        # The command name may contain spaces; the fields after its closing parenthesis do not.
        fields = stat.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return Usage(rss_pages * PAGE_SIZE, (utime + stime) / CLOCK_TICKS)
