"""The operator image does its job as the Deployment runs it: granted, lapsed, healthy, non-root.

The image's own entrypoint runs under `buildah run` (chroot isolation, the host's network)
with what the kubelet would give the pod of `deploy/`: the Deployment's environment, its
downward-API values resolved, the ServiceAccount's token, CA and namespace mounted where the
`kubernetes` client looks for them in a pod, the API server named by KUBERNETES_SERVICE_HOST
and _PORT, and the Deployment's emptyDir volumes. Its identity holds exactly the RBAC of
`deploy/base/rbac.yaml`.

Two things differ, because there is no pod network here: the webhook host is 127.0.0.1 rather
than the `lapse-webhook` Service's name, and the ports are free ones rather than 9443, 9090 and
8080, which the host's network would share with everything else on the machine.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import subprocess
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from demo.harness import (
    IDENTITY_KINDS,
    OPERATOR_ACCOUNT,
    OPERATOR_NAMESPACE,
    free_port,
    requesters_binding,
    wait_for,
)
from lapse.core.bindings import MANAGED_SELECTOR
from tests.cluster import ROOT, Cluster
from tests.image.conftest import FIGURES, IMAGE_VARIABLE

UID = 65532
# Where the kubelet mounts a pod's ServiceAccount token (/var/run/secrets/...): /var/run is a
# symlink to /run in the image, which runc follows for a mount target and buildah does not.
SERVICE_ACCOUNT_DIR = "/run/secrets/kubernetes.io/serviceaccount"


@dataclass
class Container:
    """One run of the image: its buildah working container and the `buildah run` process."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    health_url: str
    metrics_url: str
    volumes: dict[str, Path]

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"the image's process exited:\n{self.log.read_text()[-4000:]}")

    def operator_pids(self) -> list[int]:
        """The processes inside the container: those carrying this run's POD_NAME."""
        marker = f"POD_NAME={self.name}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in environ and b"lapse-operator" in command:
                found.append(int(entry.name))
        return found


def deployment_container(cluster: Cluster) -> dict[str, Any]:
    """The operator container of the Deployment that `kubectl apply -k deploy/` installs."""
    rendered = cluster.kubectl("kustomize", str(ROOT / "deploy")).stdout
    deployment = next(
        doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "Deployment"
    )
    spec = deployment["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsUser"] == UID
    return dict(next(c for c in spec["containers"] if c["name"] == "operator"))


def pod_environment(container: dict[str, Any], *, namespace: str, pod: str) -> dict[str, str]:
    """The container's env as the kubelet resolves it (downward API fields)."""
    fields = {"metadata.namespace": namespace, "metadata.name": pod}
    env: dict[str, str] = {}
    for item in container.get("env") or ():
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def certificate_authority(kubeconfig: Path) -> bytes:
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    if "certificate-authority-data" in cluster:
        return base64.b64decode(cluster["certificate-authority-data"])
    path = Path(cluster["certificate-authority"])
    return (path if path.is_absolute() else kubeconfig.parent / path).read_bytes()


def install_identity(cluster: Cluster) -> str:
    """The operator's namespace, ServiceAccount and RBAC as shipped; a token for it."""
    rendered = cluster.kubectl("kustomize", str(ROOT / "deploy")).stdout
    objects = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in IDENTITY_KINDS]
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    )
    cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s", "-f", str(ROOT / "crds")
    )
    cluster.kubectl("apply", "-f", str(ROOT / "deploy" / "samples" / "requester-clusterrole.yaml"))
    token = cluster.kubectl(
        "create", "token", OPERATOR_ACCOUNT, "-n", OPERATOR_NAMESPACE, "--duration", "1h"
    ).stdout.strip()
    assert token
    return token


def image_config(image: str) -> dict[str, Any]:
    """The image's configuration as a runtime reads it (Docker format: with the health check)."""
    inspected = json.loads(
        subprocess.run(
            ["buildah", "inspect", "--type", "image", image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return dict(inspected["Docker"]["config"])


def image_command(image: str) -> list[str]:
    """What the image runs when started: its entrypoint and command, as a runtime would."""
    config = image_config(image)
    return [*(config.get("Entrypoint") or ()), *(config.get("Cmd") or ())]


def volume(path: Path, mode: int) -> Path:
    """A directory as the kubelet makes an emptyDir under fsGroup: the pod's group owns it."""
    path.mkdir(parents=True)
    os.chown(path, 0, UID)
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def image() -> str:
    name = os.environ[IMAGE_VARIABLE]
    found = subprocess.run(["buildah", "inspect", "--type", "image", name], capture_output=True)
    if found.returncode != 0:
        pytest.fail(f"there is no image {name}: build it with `make image`", pytrace=False)
    return name


@pytest.fixture(scope="module")
def container(
    cluster: Cluster,
    leftovers_removed: None,
    image: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Container]:
    workdir = tmp_path_factory.mktemp("image")
    workdir.chmod(0o755)
    token = install_identity(cluster)
    pod = f"lapse-operator-image-test-{secrets.token_hex(3)}"

    account = workdir / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(token)
    (account / "ca.crt").write_bytes(certificate_authority(cluster.kubeconfig))
    (account / "namespace").write_text(OPERATOR_NAMESPACE)
    for item in account.iterdir():
        item.chmod(0o644)
    account.chmod(0o755)

    spec = deployment_container(cluster)
    env = pod_environment(spec, namespace=OPERATOR_NAMESPACE, pod=pod)
    ports = {"webhook": free_port(), "metrics": free_port(), "health": free_port()}
    # Beside the local API rather than behind a Service: the API server dials the process by
    # URL (tests/install runs the image in pods behind the Service on a real node).
    env.update(
        LAPSE_WEBHOOK_MODE="url",
        LAPSE_WEBHOOK_HOST="127.0.0.1",
        LAPSE_WEBHOOK_PORT=str(ports["webhook"]),
        LAPSE_METRICS_PORT=str(ports["metrics"]),
        LAPSE_LIVENESS_ENDPOINT=f"http://0.0.0.0:{ports['health']}/healthz",
    )
    server = urlsplit(cluster.server)
    env.update(
        KUBERNETES_SERVICE_HOST=server.hostname or "127.0.0.1",
        KUBERNETES_SERVICE_PORT=str(server.port or 443),
    )
    mounts = {m["name"]: m["mountPath"] for m in spec["volumeMounts"]}
    volumes = {path: volume(workdir / name, 0o2770) for name, path in mounts.items()}

    name = pod
    subprocess.run(
        ["buildah", "from", "--pull-never", "--quiet", "--name", name, image],
        check=True,
        capture_output=True,
    )
    command = [
        "buildah", "run", "--isolation=chroot",
        *(f"--env={key}={value}" for key, value in sorted(env.items())),
        f"--volume={account}:{SERVICE_ACCOUNT_DIR}:ro",
        *(f"--volume={host}:{path}" for path, host in volumes.items()),
        name, "--", *image_command(image),
    ]  # fmt: skip
    log = workdir / "operator.log"
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = Container(
        name=name,
        process=process,
        log=log,
        health_url=f"http://127.0.0.1:{ports['health']}/healthz",
        metrics_url=f"http://127.0.0.1:{ports['metrics']}/metrics",
        volumes=volumes,
    )
    try:
        wait_for(lambda: healthy(running), 120, 0.1, "/healthz of the image")
        request.config.stash[FIGURES]["start-up to /healthz ok"] = time.monotonic() - started
        wait_for(lambda: webhooks_serve(cluster, running), 120, 0.3, "the image's webhooks")
        request.config.stash[FIGURES]["start-up to webhooks serving"] = time.monotonic() - started
        yield running
    finally:
        stop(process)
        print(f"\nimage log: {log}")
        subprocess.run(["buildah", "rm", name], capture_output=True, check=False)
        cluster.kubectl(
            "delete", "mutatingwebhookconfiguration,validatingwebhookconfiguration",
            env["LAPSE_WEBHOOK_CONFIGURATION"], "--ignore-not-found", check=False,
        )  # fmt: skip


def healthy(container: Container) -> bool:
    container.alive()
    try:
        with urllib.request.urlopen(container.health_url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def webhooks_serve(cluster: Cluster, container: Container) -> bool:
    """The API server calls the image's admission webhooks: a dry-run request gets its
    requester stamped."""
    container.alive()
    probe = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {"name": "readiness-probe", "namespace": "default"},
        "spec": {"role": {"kind": "ClusterRole", "name": "view"}, "reason": "probe"},
    }
    result = cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-",
        input=json.dumps(probe), check=False,
    )  # fmt: skip
    if result.returncode != 0:
        return False
    return bool(json.loads(result.stdout)["spec"].get("requester", {}).get("username"))


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as the kubelet stops a pod, then SIGKILL after its grace period."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def test_the_operator_runs_as_the_numeric_non_root_user(container: Container) -> None:
    pids = container.operator_pids()
    assert pids, "no lapse-operator process found for this container"
    for pid in pids:
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        assert status["Uid"].split() == [str(UID)] * 4
        assert status["Gid"].split() == [str(UID)] * 4


def test_healthz_and_metrics_answer(container: Container) -> None:
    assert healthy(container)
    with urllib.request.urlopen(container.metrics_url, timeout=5) as response:
        assert response.status == 200
        assert b"lapse_" in response.read()


def test_a_request_is_granted_then_lapses(
    cluster: Cluster, container: Container, namespace: str
) -> None:
    group = f"{namespace}-devs"
    requesters = requesters_binding(namespace, group)
    policy = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": namespace},
        "spec": {
            "requesters": {"groups": [group]},
            "roles": [{"kind": "ClusterRole", "name": "view"}],
            "namespaces": [namespace],
            "defaultDuration": "10s",
            "maxDuration": "1h",
            "approval": {"mode": "Auto"},
        },
    }
    ask = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {"name": "read-the-logs", "namespace": namespace},
        "spec": {"role": {"kind": "ClusterRole", "name": "view"}, "reason": "image test"},
    }
    alice = {"as_user": "alice", "groups": (group,)}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(requesters))
    cluster.kubectl("apply", "-f", "-", input=json.dumps(policy))
    try:
        assert not can_list_pods(cluster, namespace, alice)
        cluster.kubectl("create", "-f", "-", input=json.dumps(ask), **alice)

        active = wait_for(lambda: phase(cluster, namespace, "Active"), 30, 0.2, "Active")
        assert active["status"]["bindings"]
        assert can_list_pods(cluster, namespace, alice)

        container.alive()
        wait_for(lambda: phase(cluster, namespace, "Expired"), 30, 0.2, "Expired")
        assert not can_list_pods(cluster, namespace, alice)
        left = cluster.kubectl(
            "get", "rolebindings", "-n", namespace, "-l", MANAGED_SELECTOR, "-o", "name",
        ).stdout  # fmt: skip
        assert left.strip() == ""
    finally:
        cluster.kubectl("delete", "accesspolicy", namespace, "--ignore-not-found", check=False)


def phase(cluster: Cluster, namespace: str, wanted: str) -> dict[str, Any] | None:
    body = json.loads(
        cluster.kubectl(
            "get", "accessrequest", "read-the-logs", "-n", namespace, "-o", "json"
        ).stdout
    )
    return body if (body.get("status") or {}).get("phase") == wanted else None


def can_list_pods(cluster: Cluster, namespace: str, who: dict[str, Any]) -> bool:
    answer = cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace, check=False, **who)
    return answer.stdout.strip() == "yes"


def test_nothing_is_written_outside_the_volumes(container: Container) -> None:
    """The Deployment's root filesystem is read-only: the operator may write only into its
    emptyDirs. Whatever it wrote elsewhere would be in the working container's own layer."""
    container.alive()
    mounted = subprocess.run(
        ["buildah", "mount", container.name], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        layer = Path(mounted).parent / "diff"
        assert layer.is_dir(), f"not an overlay layer: {layer}"
        # The volumes, and the file in which buildah tells a process it runs in a container.
        allowed = {SERVICE_ACCOUNT_DIR, *container.volumes, "/run/.containerenv"}
        paths = ["/" + str(path.relative_to(layer)) for path in layer.rglob("*")]
        # Mount points (and the directories above them) are the runtime's, not the operator's.
        written = [
            path
            for path in paths
            if not any(
                path == a or path.startswith(a + "/") or a.startswith(path + "/") for a in allowed
            )
        ]
        assert written == []
    finally:
        subprocess.run(["buildah", "umount", container.name], capture_output=True, check=False)


def test_the_image_holds_no_installer_and_no_compiler(image: str) -> None:
    """What it runs with is what was tested: nothing in it can install or build more."""
    name = f"lapse-image-tools-{secrets.token_hex(3)}"
    subprocess.run(
        ["buildah", "from", "--pull-never", "--quiet", "--name", name, image], check=True
    )
    try:
        look = (
            "import importlib.util, shutil; "
            "print([m for m in ('pip', 'ensurepip', 'setuptools', 'wheel') "
            "if importlib.util.find_spec(m)]); "
            "print([t for t in ('pip', 'pip3', 'gcc', 'cc', 'c++', 'make', 'ld') "
            "if shutil.which(t)])"
        )
        found = subprocess.run(
            ["buildah", "run", "--isolation=chroot", name, "--", "python3", "-c", look],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
        assert found[:2] == ["[]", "[]"]
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True, check=False)


def test_the_image_is_labelled_and_checks_health_as_the_deployment_probes(
    cluster: Cluster, image: str
) -> None:
    config = image_config(image)
    labels = config["Labels"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert labels["org.opencontainers.image.version"] == project["version"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert re.fullmatch(r"[0-9a-f]{40}", labels["org.opencontainers.image.revision"])
    assert config["User"] == f"{UID}:{UID}"

    spec = deployment_container(cluster)
    probe = spec["livenessProbe"]["httpGet"]
    port = next(p["containerPort"] for p in spec["ports"] if p["name"] == probe["port"])
    # Readiness is the webhook port serving its certificate (HTTPS /readyz), which no image
    # health check can see from inside; the image's check is the liveness probe's.
    assert spec["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "webhook",
        "scheme": "HTTPS",
    }
    check = " ".join(config["Healthcheck"]["Test"])
    assert f"http://127.0.0.1:{port}{probe['path']}" in check
    env = dict(item.split("=", 1) for item in config["Env"])
    deployed = pod_environment(spec, namespace=OPERATOR_NAMESPACE, pod="p")
    assert env["LAPSE_LIVENESS_ENDPOINT"] == deployed["LAPSE_LIVENESS_ENDPOINT"]
    assert urlsplit(env["LAPSE_LIVENESS_ENDPOINT"]).port == port
