"""The operator as users run it: its image in pods, installed by `kubectl apply -k deploy/`.

`Operator` (demo/harness.py) starts Lapse as a local process, which proves the operator's logic
on any API server but not the way it is shipped: the image, the Deployment's two replicas and
leader election, webhooks reached through the Service, the pod's own ServiceAccount token.
`InClusterOperator` drives that installation instead, behind the surface the end-to-end tests
already use, so the same tests judge both:

- install: a kustomize overlay of `deploy/` in a directory of its own, changing only what the
  process harness also sets for the tests (a short sweep, notifications to a receiver on the
  host, their timeouts);
- logs: `kubectl logs -f` of every operator pod, new ones picked up after a restart, split
  into the audit trail (the JSON lines the operator writes to stdout) and the log (the rest):
  in a pod both streams reach one log;
- metrics and health: the pods' own ports (pod IPs are reachable from the node's host); the
  leader's gauges, and counters summed over the replicas as a Prometheus query would;
- kill, stop, start: the Deployment scaled down (by force, or gracefully) and up again.

It needs a cluster with a node the host can reach pods on (`../shared/realk8s`), and the
image loaded there (`make image image-load`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import yaml

from demo.harness import (
    OPERATOR_ACCOUNT,
    OPERATOR_NAMESPACE,
    ROOT,
    SWEEP_INTERVAL,
    Cluster,
    Identity,
    free_port,
    kubectl_binary,
    wait_for,
    write_token_kubeconfig,
)

DEPLOYMENT = "lapse-operator"
CONTAINER = "operator"
SELECTOR = "app.kubernetes.io/name=lapse,app.kubernetes.io/component=operator"
REPLICAS = 2
LEASE = "lapse-leader"
METRICS_PORT = 9090
# The operator's webhook port in the pod (deploy/).
WEBHOOK_PORT = 9443
HEALTH_PORT = 8080
# What the process harness sets beyond the Deployment's own settings, for the tests' pace.
TEST_ENV = {
    "LAPSE_SWEEP_INTERVAL": str(SWEEP_INTERVAL),
    "LAPSE_NOTIFY_TIMEOUT": "1",
    "LAPSE_NOTIFY_RETRIES": "0",
    "LAPSE_NOTIFY_EXPIRY_WARNING": "8s",
}


def node_address(cluster: Cluster) -> str:
    """Where pods reach the host: the node's InternalIP (one node: the host itself)."""
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    for node in nodes:
        for address in node["status"].get("addresses") or ():
            if address["type"] == "InternalIP":
                return str(address["address"])
    raise AssertionError("no node with an InternalIP: pods could not reach the host")


def overlay(
    directory: Path,
    env: dict[str, str],
    image: str | None = None,
    secrets: Mapping[str, tuple[str, Mapping[str, Path]]] | None = None,
) -> Path:
    """A kustomize overlay of deploy/ that sets `env` on the operator container (and the image,
    if given): the way a user adjusts an installation, without touching deploy/."""
    directory.mkdir(parents=True, exist_ok=True)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "env": [{"name": k, "value": v} for k, v in env.items()],
    }
    pod: dict[str, Any] = {"containers": [container]}
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": OPERATOR_NAMESPACE},
        "spec": {"template": {"spec": pod}},
    }
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize loads bases by relative path only.
        "resources": [os.path.relpath(ROOT / "deploy", directory)],
        "patches": [{"target": {"kind": "Deployment", "name": DEPLOYMENT}, "path": "env.yaml"}],
    }
    # Files the operator reads (a sink's CA, its token): each a generated Secret, mounted
    # read-only where `env` says, as a user's overlay would.
    generated = []
    for volume, (mount, files) in (secrets or {}).items():
        # kustomize reads files only from within the overlay: each is copied in.
        sources = []
        for key, path in files.items():
            copy = directory / f"{volume}-{key}"
            copy.write_bytes(path.read_bytes())
            sources.append(f"{key}={copy.name}")
        generated.append({"name": volume, "namespace": OPERATOR_NAMESPACE, "files": sources})
        container.setdefault("volumeMounts", []).append(
            {"name": volume, "mountPath": mount, "readOnly": True}
        )
        pod.setdefault("volumes", []).append({"name": volume, "secret": {"secretName": volume}})
    if generated:
        kustomization["secretGenerator"] = generated
    if image:
        name, _, tag = image.rpartition(":")
        kustomization["images"] = [
            {"name": "ghcr.io/lapse-dev/lapse", "newName": name, "newTag": tag}
        ]
    (directory / "env.yaml").write_text(yaml.safe_dump(patch))
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return directory


class PodLogs:
    """Every operator pod's log, followed into two files as the process harness writes them:
    JSON audit records into `audit_path`, everything else into `log_path`.

    A thread lists the pods every half second and starts `kubectl logs -f` for each container
    it has not followed yet (a new pod, or a restarted container): the log is read from the
    container's start, so nothing written before it was noticed is lost.
    """

    def __init__(self, cluster: Cluster, audit_path: Path, log_path: Path) -> None:
        self.cluster = cluster
        self.audit_path = audit_path
        self.log_path = log_path
        self.pods_dir = log_path.parent / "pods"
        # container id -> (pod, its `kubectl logs -f`)
        self._followed: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
        self._detached: set[str] = set()
        self._attached: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._end(follower for _, follower in self._followed.values())

    def detach(self, pods: set[str]) -> None:
        """Stop reading these pods' logs: what they write from now on is not kept."""
        self._detached |= pods
        self._end(follower for pod, follower in self._followed.values() if pod in pods)

    @staticmethod
    def _end(followers: Iterable[subprocess.Popen[bytes]]) -> None:
        for follower in followers:
            if follower.poll() is None:
                follower.terminate()
                follower.wait(10)

    def attached(self, containers: set[str]) -> bool:
        """Whether each of these containers' log has been read from its start."""
        with self._lock:
            return containers <= self._attached

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                for pod, container in running_containers(self.cluster):
                    if container not in self._followed and pod not in self._detached:
                        self._follow(pod, container)
            except (AssertionError, subprocess.SubprocessError, json.JSONDecodeError):
                pass  # the API was busy or the pod went; the next round sees it again
            self._stop.wait(0.5)

    def _follow(self, pod: str, container: str) -> None:
        command = [kubectl_binary(), "logs", "-f", "-n", OPERATOR_NAMESPACE, pod, "-c", CONTAINER]
        follower = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.cluster.env()
        )
        self._followed[container] = (pod, follower)
        assert follower.stdout is not None
        threading.Thread(
            target=self._copy, args=(pod, container, follower.stdout), daemon=True
        ).start()

    def _copy(self, pod: str, container: str, stream: IO[bytes]) -> None:
        # Each pod's whole log is kept too: the merged files do not say which replica wrote a
        # line, and which one did is often the question.
        self.pods_dir.mkdir(exist_ok=True)
        with (
            self.audit_path.open("ab") as audit,
            self.log_path.open("ab") as log,
            (self.pods_dir / f"{pod}.log").open("ab") as own,
        ):
            log.write(f"==> pod {pod}, container {container[-12:]} <==\n".encode())
            log.flush()
            with self._lock:
                self._attached.add(container)
            for line in stream:
                whole = line if line.endswith(b"\n") else line + b"\n"
                target = audit if is_audit_record(line) else log
                target.write(whole)
                target.flush()
                own.write(whole)
                own.flush()


def is_audit_record(line: bytes) -> bool:
    """An audit line is one JSON object; the operator's log lines start with a timestamp."""
    if not line.startswith(b"{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def operator_pods(cluster: Cluster) -> list[dict[str, Any]]:
    listing = cluster.kubectl(
        "get", "pods", "-n", OPERATOR_NAMESPACE, "-l", SELECTOR, "-o", "json", timeout=20
    )
    return list(json.loads(listing.stdout)["items"])


def running_containers(cluster: Cluster) -> Iterator[tuple[str, str]]:
    """(pod, container id) of every operator container that has started."""
    for pod in operator_pods(cluster):
        for status in (pod.get("status") or {}).get("containerStatuses") or ():
            state = status.get("state") or {}
            if status.get("containerID") and ("running" in state or "terminated" in state):
                yield pod["metadata"]["name"], status["containerID"]


def _ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or ()
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


class InClusterOperator:
    """Lapse installed in `lapse-system` from an overlay of deploy/, with the surface of
    `Operator`: start, stop, kill, its audit trail, log and metrics."""

    def __init__(
        self,
        cluster: Cluster,
        workdir: Path,
        identity: Identity | None = None,
        image: str | None = None,
        extra_env: dict[str, str] | None = None,
        secrets: Mapping[str, tuple[str, Mapping[str, Path]]] | None = None,
    ) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.identity = identity
        self.namespace = OPERATOR_NAMESPACE
        self.audit_path = workdir / "audit.jsonl"
        self.log_path = workdir / "operator.log"
        workdir.mkdir(parents=True, exist_ok=True)
        self.audit_path.touch()
        self.log_path.touch()
        # Notifications come to the host, where the pods reach it: a receiver listens there.
        self.notify_host = node_address(cluster)
        self.notify_port = free_port()
        env = {
            **TEST_ENV,
            "LAPSE_NOTIFY_URL": f"http://{self.notify_host}:{self.notify_port}/hook",
            **(extra_env or {}),
        }
        self.overlay = overlay(workdir / "overlay", env, image, secrets)
        self.logs = PodLogs(cluster, self.audit_path, self.log_path)
        self.installed = False
        self.running = False
        # No local process: the pods are the operator (see `pods`).
        self.process: None = None

    # -- where it answers

    def pods(self) -> list[dict[str, Any]]:
        return operator_pods(self.cluster)

    def leader(self) -> dict[str, Any] | None:
        """The pod holding the leader Lease, if it is one of this Deployment's, ready."""
        found = self.cluster.kubectl(
            "get", "lease", LEASE, "-n", OPERATOR_NAMESPACE, "-o", "json", check=False
        )
        if found.returncode != 0:
            return None
        spec = json.loads(found.stdout).get("spec") or {}
        holder = spec.get("holderIdentity")
        return next((p for p in self.pods() if p["metadata"]["name"] == holder and _ready(p)), None)

    def _leader_ip(self) -> str:
        leader = wait_for(self.leader, 30, 0.5, "a ready pod holding the leader Lease")
        return str(leader["status"]["podIP"])

    @property
    def metrics_url(self) -> str:
        return f"http://{self._leader_ip()}:{METRICS_PORT}/metrics"

    @property
    def health_url(self) -> str:
        return f"http://{self._leader_ip()}:{HEALTH_PORT}/healthz"

    # -- lifecycle

    def start(self, wait: bool = True) -> None:
        """Installs the overlay the first time, then scales the Deployment back up."""
        if not self.installed:
            self.cluster.kubectl("apply", "-k", str(self.overlay), timeout=120)
            self.installed = True
        else:
            self._scale(REPLICAS)
        self.running = True
        self.logs.start()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 180) -> None:
        """Rolled out; the webhooks answer through the Service (a dry-run request gets its
        requester stamped); a ready pod leads; every pod's log is being followed."""
        self.cluster.kubectl(
            "-n", OPERATOR_NAMESPACE, "rollout", "status", f"deployment/{DEPLOYMENT}",
            f"--timeout={int(timeout)}s", timeout=timeout + 10,
        )  # fmt: skip
        wait_for(self._stamps_requests, timeout, 0.3, "the webhooks answering through the Service")
        wait_for(self.leader, timeout, 0.3, "a ready pod holding the leader Lease")
        containers = {c for _, c in running_containers(self.cluster)}
        wait_for(lambda: self.logs.attached(containers), 30, 0.1, "the pods' logs followed")
        wait_for(self._metrics_answer, 30, 0.3, "the leader's metrics")

    def _stamps_requests(self) -> bool:
        probe = {
            "apiVersion": "lapse.dev/v1alpha1",
            "kind": "AccessRequest",
            "metadata": {"name": "readiness-probe", "namespace": "default"},
            "spec": {"role": {"kind": "ClusterRole", "name": "view"}, "reason": "probe"},
        }
        result = self.cluster.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-",
            input=json.dumps(probe), check=False,
        )  # fmt: skip
        if result.returncode != 0:
            return False
        return bool(json.loads(result.stdout)["spec"].get("requester", {}).get("username"))

    def _metrics_answer(self) -> bool:
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _check_alive(self) -> None:
        """The operator has not crashed: no container restarted, none failing."""
        for pod in self.pods():
            for status in (pod.get("status") or {}).get("containerStatuses") or ():
                if status.get("restartCount"):
                    raise AssertionError(
                        f"{pod['metadata']['name']} restarted:\n{self.log_path.read_text()[-4000:]}"
                    )

    def kill(self) -> None:
        """Every replica gone at once, with no time to clean up, as kill -9 on a crashed node.

        The pods are deleted by force first: that revokes their ServiceAccount tokens at once,
        so in the second or two before the kubelet stops them they can no longer act (nor
        give up the Lease), and no preStop pause is run. Scaling to zero second, and deleting
        whatever the ReplicaSet made meanwhile, keeps anything from replacing them; scaling
        first would have the controller delete them gracefully, and a graceful deletion
        already under way runs its preStop pause to the end. Like a killed process, they
        write nothing more to the log. Returns once none of them answers."""
        pods = self.pods()
        self.logs.detach({p["metadata"]["name"] for p in pods})
        self._force_delete()
        self._scale(0)
        self._force_delete()
        for address in filter(None, ((p.get("status") or {}).get("podIP") for p in pods)):
            wait_for(lambda a=address: not _answers(a), 30, 0.2, f"the pod at {address} dead")
        self.running = False

    def stop(self) -> None:
        """Gracefully: scaled to zero, as `kubectl scale` would; returns once the pods have
        exited (their preStop pause, then SIGTERM)."""
        if not self.running:
            return
        self._scale(0)
        self.cluster.kubectl(
            "-n", OPERATOR_NAMESPACE, "wait", "--for=delete", "pod", "-l", SELECTOR,
            "--timeout=120s", check=False, timeout=130,
        )  # fmt: skip
        self.running = False

    def _force_delete(self) -> None:
        self.cluster.kubectl(
            "delete", "pod", "-n", OPERATOR_NAMESPACE, "-l", SELECTOR, "--grace-period=0",
            "--force", "--ignore-not-found", check=False,
        )  # fmt: skip

    def _scale(self, replicas: int) -> None:
        self.cluster.kubectl(
            "-n", OPERATOR_NAMESPACE, "scale", f"deployment/{DEPLOYMENT}", f"--replicas={replicas}"
        )

    def uninstall(self) -> None:
        """As deploy/README.md says: the Deployment first, so its replicas end every grant
        while they still hold their RBAC, then everything else."""
        if self.installed:
            if not self.running:
                self.start()
            self.cluster.kubectl(
                "-n", OPERATOR_NAMESPACE, "delete", "deployment", DEPLOYMENT,
                "--cascade=foreground", "--timeout=90s", "--ignore-not-found", timeout=100,
            )  # fmt: skip
            self.cluster.kubectl(
                "delete", "-k", str(self.overlay), "--ignore-not-found", "--timeout=120s",
                timeout=130,
            )  # fmt: skip
            self.installed = self.running = False
        self.logs.stop()

    # -- what it wrote

    def audit_lines(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for line in self.audit_path.read_text().splitlines()
            if line.startswith("{")
        ]

    def wait_for_audit(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((line for line in self.audit_lines() if predicate(line)), None)

        return wait_for(find, timeout, 0.1, "an audit line")

    def metrics(self) -> dict[str, float]:
        """`name{labels}` → value, as `Operator.metrics` gives them, for the whole operator:
        counters and histograms summed over the replicas (each counts what it served, the
        webhooks' share included), gauges as the leader reports them."""
        leader = self._leader_ip()
        values: dict[str, float] = {}
        for pod in self.pods():
            address = (pod.get("status") or {}).get("podIP")
            if not address or not _ready(pod):
                continue
            with urllib.request.urlopen(
                f"http://{address}:{METRICS_PORT}/metrics", timeout=5
            ) as response:
                text = response.read().decode()
            gauges = _gauges(text)
            for line in text.splitlines():
                if not line or line.startswith("#"):
                    continue
                name, _, value = line.rpartition(" ")
                if name.partition("{")[0] in gauges:
                    if address == leader:
                        values[name] = float(value)
                else:
                    values[name] = values.get(name, 0.0) + float(value)
        return values


def _gauges(exposition: str) -> set[str]:
    return {
        parts[2]
        for line in exposition.splitlines()
        if line.startswith("# TYPE ") and len(parts := line.split()) == 4 and parts[3] == "gauge"
    }


def _answers(address: str) -> bool:
    """Whether anything of the pod still answers: its health endpoint, or its webhook port,
    which a stopping replica keeps open a few seconds longer to drain the API server's
    connections."""
    try:
        with socket.create_connection((address, WEBHOOK_PORT), timeout=1):
            return True
    except OSError:
        pass
    try:
        with urllib.request.urlopen(f"http://{address}:{HEALTH_PORT}/healthz", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def pod_identity(cluster: Cluster, workdir: Path, duration: str = "2h") -> Identity:
    """The installed operator's identity: its ServiceAccount (made by the install, with the
    RBAC of deploy/), and a kubeconfig holding a token for it, to ask what it may do."""
    token = cluster.kubectl(
        "create", "token", OPERATOR_ACCOUNT, "-n", OPERATOR_NAMESPACE, "--duration", duration
    ).stdout.strip()
    assert token, "kubectl create token returned no token"
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "operator.kubeconfig"
    write_token_kubeconfig(path, cluster.kubeconfig, token, OPERATOR_ACCOUNT, OPERATOR_NAMESPACE)
    return Identity(path)
