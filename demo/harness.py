"""What `make demo` and the test suites share: the cluster's helpers and the operator process.

The demo (`python -m demo`) and the end-to-end and reliability fixtures in `tests/` run the
operator exactly the same way: as its own service account, holding only the RBAC that
`deploy/` ships, so that a rule missing from it fails a test instead of a user's install. None
of this needs pytest, and nothing outside `tests/` may import from `tests`, so it lives here and
`tests/cluster.py` and `tests/e2e/harness.py` re-export it.

`Cluster` is one API server, whichever backend provides it (the local API, kind, or whatever
`KUBECONFIG` names), with kubectl and client helpers that work the same on all of them.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import kubernetes.client
import kubernetes.config
import yaml

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"


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


SWEEP_INTERVAL = 2
T = TypeVar("T")

OPERATOR_NAMESPACE = "lapse-system"
OPERATOR_ACCOUNT = "lapse-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
# What an installation gives the operator's identity. The CRDs are applied by the fixtures;
# the Deployment, Services and webhook objects would start a second operator or point the
# API server at a pod that does not exist here.
IDENTITY_KINDS = frozenset(
    {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
)


@dataclass(frozen=True)
class Identity:
    """Who the operator runs as: a kubeconfig holding its credentials, and its namespace."""

    kubeconfig: Path
    namespace: str = OPERATOR_NAMESPACE
    user: str = OPERATOR_USER


def service_account_identity(cluster: Cluster, workdir: Path, duration: str = "2h") -> Identity:
    """Install the operator's RBAC exactly as `kubectl apply -k deploy/` would, mint a token
    for its ServiceAccount and write a kubeconfig for it (the admin's server and CA).

    TokenRequest is plain Kubernetes, so this works on the local API, kind and any cluster.
    """
    rendered = cluster.kubectl("kustomize", str(ROOT / "deploy")).stdout
    objects = [
        doc for doc in yaml.safe_load_all(rendered) if doc and doc.get("kind") in IDENTITY_KINDS
    ]
    listing = {"apiVersion": "v1", "kind": "List", "items": objects}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(listing))
    token = cluster.kubectl(
        "create", "token", OPERATOR_ACCOUNT, "-n", OPERATOR_NAMESPACE, "--duration", duration
    ).stdout.strip()
    assert token, "kubectl create token returned no token"
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "operator.kubeconfig"
    write_token_kubeconfig(path, cluster.kubeconfig, token, OPERATOR_ACCOUNT, OPERATOR_NAMESPACE)
    return Identity(path)


def write_token_kubeconfig(
    path: Path, admin_kubeconfig: Path, token: str, user: str, namespace: str
) -> None:
    """A kubeconfig for the admin's server and CA that holds `token` and nothing else: beside
    the admin's client certificate a token would not count (a real API server takes the
    certificate's user first)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lapse", "cluster": _cluster_entry(admin_kubeconfig)}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": user,
                "context": {"cluster": "lapse", "user": user, "namespace": namespace},
            }
        ],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def _cluster_entry(kubeconfig: Path) -> dict[str, Any]:
    """The admin kubeconfig's current cluster (server, CA), with file paths made absolute so
    they still resolve from another directory."""
    config = yaml.safe_load(kubeconfig.read_text())
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or ()}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or ()}
    context = contexts.get(config.get("current-context")) or next(iter(contexts.values()))
    entry = dict(clusters[context["cluster"]])
    authority = entry.get("certificate-authority")
    if authority and not Path(authority).is_absolute():
        entry["certificate-authority"] = str((kubeconfig.parent / authority).resolve())
    return entry


@dataclass(frozen=True)
class AuditWebhook:
    """Where an API server sends its audit events to Lapse: the operator's webhook port (its
    `/audit` path), the serving certificate the API server trusts there, and the token it
    presents. A real API server's audit configuration is fixed when it starts, so the
    operator must listen where it was told; the local API is started pointing here."""

    port: int
    cert_dir: Path
    token_file: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/audit"

    def operator_env(self) -> dict[str, str]:
        return {
            "LAPSE_WEBHOOK_PORT": str(self.port),
            "LAPSE_WEBHOOK_CERT_DIR": str(self.cert_dir),
            "LAPSE_AUDIT_TOKEN_FILE": str(self.token_file),
            "LAPSE_AUDIT_FLUSH_INTERVAL": "0.5",
        }

    @classmethod
    def from_env(cls, env: dict[str, str]) -> AuditWebhook | None:
        """The one a real API server was configured with (`LAPSE_TEST_AUDIT_PORT`,
        `_CERT_DIR`, `_TOKEN_FILE`), if any."""
        port = env.get("LAPSE_TEST_AUDIT_PORT")
        cert_dir, token = (
            env.get("LAPSE_TEST_AUDIT_CERT_DIR"),
            env.get("LAPSE_TEST_AUDIT_TOKEN_FILE"),
        )
        if not (port and cert_dir and token):
            return None
        return cls(int(port), Path(cert_dir), Path(token))

    @classmethod
    def make(cls, workdir: Path) -> AuditWebhook:
        """A fresh one for the local API: a free port, a certificate and a token."""
        from lapse.webhooks import generate_certificates

        workdir.mkdir(parents=True, exist_ok=True)
        certs = workdir / "certs"
        generate_certificates(certs, ["127.0.0.1", "localhost"], datetime.now(UTC))
        token = workdir / "token"
        token.write_text(secrets.token_hex(24) + "\n")
        token.chmod(0o600)
        return cls(free_port(), certs, token)

    def kubeapi_args(self, workdir: Path, max_wait: str = "1s") -> list[str]:
        """`python -m kubeapi` flags that send its audit events here, with the recommended
        policy (deploy/audit/policy.yaml)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "lapse",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority": str(self.cert_dir / "ca.crt"),
                    },
                }
            ],
            "users": [
                {"name": "kube-apiserver", "user": {"token": self.token_file.read_text().strip()}}
            ],
            "contexts": [
                {"name": "lapse", "context": {"cluster": "lapse", "user": "kube-apiserver"}}
            ],
            "current-context": "lapse",
        }
        path = workdir / "audit-webhook.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return [
            "--audit-policy-file",
            str(ROOT / "deploy" / "audit" / "policy.yaml"),
            "--audit-webhook-config-file",
            str(path),
            "--audit-webhook-batch-max-wait",
            max_wait,
            # As the real API server the suites run against is configured (docs/activity.md):
            # a batch refused while the operator restarts is sent again a second later.
            "--audit-webhook-initial-backoff",
            "1s",
        ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    probe: Callable[[], T | None], timeout: float = 10, interval: float = 0.1, what: str = ""
) -> T:
    """Poll until `probe` returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}")
        time.sleep(interval)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


class Operator:
    """The Lapse operator as a subprocess: start, SIGKILL, restart, read its output."""

    def __init__(
        self,
        cluster: Cluster,
        workdir: Path,
        extra_env: dict[str, str] | None = None,
        identity: Identity | None = None,
    ) -> None:
        self.cluster = cluster
        self.workdir = workdir
        # Without an identity the operator runs on the cluster's admin kubeconfig, in `default`.
        self.identity = identity
        self.namespace = identity.namespace if identity else "default"
        # LAPSE_* settings beyond the defaults below (crash points, leader election, ...).
        self.extra_env = dict(extra_env or {})
        self.audit_path = workdir / "audit.jsonl"
        self.log_path = workdir / "operator.log"
        self.metrics_port = free_port()
        # Notifications go here; tests start a receiver on it when they want to listen.
        self.notify_host = "127.0.0.1"
        self.notify_port = free_port()
        self.health_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/healthz"

    def start(self, wait: bool = True) -> None:
        env = self.cluster.env()
        env.update(
            PYTHONUNBUFFERED="1",
            LAPSE_WEBHOOK_ADDR="127.0.0.1",
            LAPSE_WEBHOOK_HOST="127.0.0.1",
            LAPSE_WEBHOOK_PORT=str(free_port()),
            LAPSE_WEBHOOK_CERT_DIR=str(self.workdir / "certs"),
            LAPSE_METRICS_ADDR="127.0.0.1",
            LAPSE_METRICS_PORT=str(self.metrics_port),
            LAPSE_LIVENESS_ENDPOINT=self.health_url,
            LAPSE_SWEEP_INTERVAL=str(SWEEP_INTERVAL),
            LAPSE_NAMESPACE=self.namespace,
            LAPSE_NOTIFY_URL=f"http://{self.notify_host}:{self.notify_port}/hook",
            LAPSE_NOTIFY_TIMEOUT="1",
            LAPSE_NOTIFY_RETRIES="0",
            LAPSE_NOTIFY_EXPIRY_WARNING="8s",
        )
        if self.identity is not None:
            env["KUBECONFIG"] = str(self.identity.kubeconfig)
        env.update(self.extra_env)
        with self.audit_path.open("ab") as out, self.log_path.open("ab") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lapse.main"], cwd=ROOT, env=env, stdout=out, stderr=err
            )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        def metrics_up() -> bool:
            self._check_alive()
            try:
                with urllib.request.urlopen(self.metrics_url, timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(metrics_up, timeout, 0.2, "the operator's metrics endpoint")

        def webhook_answers() -> bool:
            self._check_alive()
            probe = {
                "apiVersion": "lapse.dev/v1alpha1",
                "kind": "AccessRequest",
                "metadata": {"name": "readiness-probe", "namespace": "default"},
                "spec": {"role": {"kind": "ClusterRole", "name": "view"}, "reason": "probe"},
            }
            result = self.cluster.kubectl(
                "create",
                "--dry-run=server",
                "-o",
                "json",
                "-f",
                "-",
                input=json.dumps(probe),
                check=False,
            )
            if result.returncode != 0:
                return False
            stamped = json.loads(result.stdout)["spec"].get("requester", {})
            return bool(stamped.get("username"))

        wait_for(webhook_answers, timeout, 0.3, "the operator's admission webhooks")

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the operator exited:\n{self.log_path.read_text()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye — as a crashed node would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def audit_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.audit_path.read_text().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def wait_for_audit(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((line for line in self.audit_lines() if predicate(line)), None)

        return wait_for(find, timeout, 0.1, "an audit line")

    def metrics(self) -> dict[str, float]:
        """The metrics as `name{labels}` → value (labels exactly as exposed)."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values


def requesters_binding(namespace: str, group: str) -> dict[str, Any]:
    """`group` bound to the sample `lapse-requester` ClusterRole in `namespace`."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "lapse-requesters", "namespace": namespace},
        "subjects": [{"kind": "Group", "name": group, "apiGroup": "rbac.authorization.k8s.io"}],
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "lapse-requester",
        },
    }
