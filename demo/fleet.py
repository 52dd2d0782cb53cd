"""A fleet of clusters on one machine: two (or more) API servers, Lapse's operator on each, and
one kubeconfig with a context per cluster, for `kubectl lapse ... --all-contexts`.

The fleet tests (`tests/fleet`) and the fleet benchmark (`bench/fleet.py`) share it; it lives
here because nothing outside `tests/` may import from `tests`.

Two backends:

- `local`: the project's own API server (`python -m kubeapi`) per member, behind a `Gate`: a
  TCP door every client goes through (kubectl, the CLI, the member's operator). The local API
  keeps its objects in memory only and has no state directory: a restarted one comes back
  empty, on a new port, with a new admin token and certificate authority. So `stop` closes the
  door (connections refused, open ones cut: to every client the API server is gone) and
  `start` opens it again on the same port, the server and its data untouched behind it.
- `realk8s`: a real control plane per member (`$REALK8S/up.sh --fresh --no-node`: etcd,
  kube-apiserver, controller manager, scheduler), each with its own state directory and ports.
  `stop` kills that member's kube-apiserver; `start` runs it again with the same command line,
  and it finds its data in etcd.

Safety on a machine where a realk8s cluster *with a node* may run (default state dir, default
ports): realk8s's `down.sh` removes the node's bridges and iptables chains, and kills every
process in the `realk8s` cgroups, whatever state dir it is given; `up.sh` calls it when the
state dir still holds pid files. So neither ever runs here on a plane that may have pid files:
a plane is stopped by killing the processes that name its own state dir, its pid files are
removed, and only then is `up.sh` run, which then has nothing to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from demo.harness import ROOT, Cluster, Operator, free_port, service_account_identity, wait_for
from kubeapi.faults import FaultsClient
from kubeapi.process import LocalServer, server_of

MEMBERS = ("east", "west")
# How long a local member, started again, answers lists and watches 429 as a restarted
# kube-apiserver does while its watch caches fill.
RESTART_INITIALIZING_SECONDS = 3.0
BACKENDS = ("local", "realk8s")
# A real member's ports: its base (26000 for the first, 27000 for the second, ...) plus realk8s's
# own default offsets (16443 -> 26443, ...), far from the defaults a cluster with a node uses.
FIRST_BASE_PORT = 26000
PORT_OFFSETS = {
    "API": 443,
    "ETCD": 379,
    "ETCD_PEER": 380,
    "KCM": 457,
    "SCHEDULER": 459,
    "KUBELET": 450,
    "KUBELET_HEALTHZ": 448,
    "PROXY_METRICS": 449,
    "PROXY_HEALTHZ": 456,
}
# What up.sh must not inherit from whoever runs us: CI's audit settings belong to its own
# cluster, a KUBECONFIG to someone else's.
NOT_INHERITED = (
    "KUBECONFIG",
    "AUDIT_LOG_PATH",
    "AUDIT_POLICY_FILE",
    "AUDIT_WEBHOOK_CONFIG",
    "EXTRA_APISERVER_ARGS",
    "EXTRA_KCM_ARGS",
)
COMPONENTS = ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")
# Seconds a stopped kube-apiserver is given to exit before SIGKILL: it closes its port within
# milliseconds of SIGTERM, then drains its open watches for 15 s and more.
LAUNCH_ATTEMPTS = 3
STOP_GRACE = 3.0


class Plane(Protocol):
    """One member's API server, however it runs."""

    kubeconfig: Path  # admin credentials, as every client of this member uses them

    @property
    def up(self) -> bool: ...  # reachable

    def launch(self) -> None: ...  # first start, empty

    def stop(self) -> None: ...  # unreachable from now on; the data is kept

    def start(self) -> None: ...  # reachable again, with its data

    def shutdown(self) -> None: ...  # gone for good


# ---------------------------------------------------------------- local backend


class Gate:
    """A TCP door in front of a server, run on its own thread. Open, it carries every byte both
    ways; closed, it refuses connections and has cut the ones it carried."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"gate-{self.port}", daemon=True
        )
        self._thread.start()
        self._server: asyncio.AbstractServer | None = None
        self._carried: set[asyncio.StreamWriter] = set()

    @property
    def is_open(self) -> bool:
        return self._server is not None

    def open(self) -> None:
        self._call(self._open())

    def close(self) -> None:
        self._call(self._close())

    def shutdown(self) -> None:
        self.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def _call(self, coroutine: Any) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    async def _open(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._carry, "127.0.0.1", self.port, reuse_address=True
            )

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._carried):
            writer.transport.abort()
        self._carried.clear()
        if server is not None:
            await server.wait_closed()

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer, upstream_writer}
        self._carried |= pair
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            self._carried -= pair


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        if not writer.transport.is_closing():
            writer.close()


class LocalPlane:
    """`python -m kubeapi` behind a `Gate`; the member's kubeconfig names the gate.

    Stopped, the gate is shut; started again, the local API behaves as a restarted
    kube-apiserver does for its first seconds (`Faults.restart`: lists and watches answered
    429 "storage is (re)initializing"), so that the local fleet meets what a real one does.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server = LocalServer(workdir / "kubeapi")
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.gate: Gate | None = None
        self._faults: FaultsClient | None = None

    @property
    def up(self) -> bool:
        return self.gate is not None and self.gate.is_open

    def launch(self) -> None:
        url = urllib.parse.urlsplit(self.server.start())
        assert url.hostname and url.port, f"the local API said it listens on {url.geturl()}"
        self.gate = Gate(url.hostname, url.port)
        self.gate.open()
        config = yaml.safe_load(self.server.kubeconfig.read_text())
        self._faults = FaultsClient(url.geturl(), config["users"][0]["user"]["token"])
        for entry in config["clusters"]:
            entry["cluster"]["server"] = f"{url.scheme}://127.0.0.1:{self.gate.port}"
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def stop(self) -> None:
        assert self.gate is not None
        self.gate.close()

    def start(self) -> None:
        assert self.gate is not None and self._faults is not None
        self._faults.restart(RESTART_INITIALIZING_SECONDS)
        self.gate.open()

    def shutdown(self) -> None:
        if self.gate is not None:
            self.gate.shutdown()
            self.gate = None
        self.server.stop()


# ---------------------------------------------------------------- realk8s backend


def realk8s_ports(index: int) -> dict[str, int]:
    """The ports of the fleet's `index`-th real member (0: 26xxx, 1: 27xxx, ...)."""
    base = FIRST_BASE_PORT + 1000 * index
    return {name: base + offset for name, offset in PORT_OFFSETS.items()}


class RealPlane:
    """A real control plane without a node, started by realk8s's up.sh in its own state dir."""

    def __init__(self, kit: Path, state: Path, ports: Mapping[str, int]) -> None:
        self.kit = kit
        self.state = state.resolve()
        self.ports = dict(ports)
        self.kubeconfig = self.state / "admin.kubeconfig"
        self.log_path = self.state.parent / "up.log"
        self.running = False
        self._apiserver_argv: list[str] = []
        self._apiserver: subprocess.Popen[bytes] | None = None

    @property
    def api_port(self) -> int:
        return self.ports["API"]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        env["REALK8S_STATE"] = str(self.state)
        # containerd's run dir is unused without a node; ours all the same, never the default.
        env["REALK8S_RUN_DIR"] = str(self.state / "rundir")
        env.update({f"REALK8S_{name}_PORT": str(port) for name, port in self.ports.items()})
        return env

    def launch(self) -> None:
        """`up.sh --fresh --no-node`, after whatever an earlier run left here was stopped.

        Tried up to LAUNCH_ATTEMPTS times: up.sh checks a component's pid right after forking
        it, and on a loaded machine the child may not have exec'd yet, so up.sh reports a live
        etcd as exited (seen in CI with two planes starting at once). What a failed try
        left running is stopped before the next."""
        self._refuse_a_node()
        self.state.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, LAUNCH_ATTEMPTS + 1):
            self.kill_all()
            with self.log_path.open("ab") as log:
                result = subprocess.run(
                    [str(self.kit / "up.sh"), "--fresh", "--no-node"],
                    env=self.env(),
                    stdout=subprocess.PIPE,
                    stderr=log,
                    timeout=900,
                    check=False,
                )
            if result.returncode == 0:
                self.running = True
                return
            with self.log_path.open("a") as log:
                log.write(f"[fleet] up.sh failed (try {attempt} of {LAUNCH_ATTEMPTS})\n")
        self.kill_all()
        tail = self.log_path.read_text()[-3000:]
        raise RuntimeError(f"realk8s up.sh failed {LAUNCH_ATTEMPTS} times in {self.state}:\n{tail}")

    def stop(self) -> None:
        """Kill this plane's kube-apiserver (and only it); etcd keeps the data."""
        pid = self._pid("kube-apiserver")
        assert pid is not None, f"no kube-apiserver of {self.state} runs"
        self._apiserver_argv = _cmdline(pid)
        # It stops listening at once on SIGTERM, then drains for a while: not waited for.
        _terminate([pid], self._ours, grace=STOP_GRACE)
        if self._apiserver is not None:
            self._apiserver.wait(timeout=5)
            self._apiserver = None
        self.running = False

    def start(self, timeout: float = 120) -> None:
        """Run the kube-apiserver again with the command line it had; wait until ready."""
        assert self._apiserver_argv, "start() needs an earlier stop()"
        log = (self.state / "logs" / "kube-apiserver.log").open("ab")
        self._apiserver = subprocess.Popen(
            self._apiserver_argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        (self.state / "run" / "kube-apiserver.pid").write_text(f"{self._apiserver.pid}\n")
        wait_for(self._ready, timeout, 0.3, f"kube-apiserver of {self.state} to be ready")
        self.running = True

    def shutdown(self) -> None:
        self.kill_all()
        if self._apiserver is not None:
            self._apiserver.wait(timeout=5)
            self._apiserver = None
        self.running = False

    @property
    def up(self) -> bool:
        return self.running

    def kill_all(self) -> None:
        """Every process naming this state dir (its pid files' and any other), then the pid
        files: what up.sh would otherwise hand to down.sh."""
        pids = {pid for c in COMPONENTS if (pid := self._pid(c)) is not None}
        pids |= {pid for pid in _all_pids() if self._ours(pid) and pid != os.getpid()}
        _terminate(sorted(pids), self._ours, grace=5)
        run = self.state / "run"
        for leftover in [*run.glob("*.pid"), run / "sig"]:
            leftover.unlink(missing_ok=True)

    def _refuse_a_node(self) -> None:
        if (self.state / "run" / "sysctl.orig").exists():
            raise RuntimeError(
                f"{self.state} once ran a node (run/sysctl.orig): not a fleet plane; use another"
            )

    def _ready(self) -> bool:
        result = subprocess.run(
            [
                *(str(self.state / "bin" / "kubectl"), "--kubeconfig", str(self.kubeconfig)),
                *("get", "--raw", "/readyz", "--request-timeout=2s"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if self._apiserver is not None and self._apiserver.poll() is not None:
            log = (self.state / "logs" / "kube-apiserver.log").read_text()[-3000:]
            raise RuntimeError(f"kube-apiserver of {self.state} exited:\n{log}")
        return result.stdout.strip() == "ok"

    def _pid(self, component: str) -> int | None:
        try:
            pid = int((self.state / "run" / f"{component}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._ours(pid) else None

    def _ours(self, pid: int) -> bool:
        return f"{self.state}/" in " ".join(_cmdline(pid))


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _all_pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def _terminate(pids: Sequence[int], still_ours: Callable[[int], bool], grace: float = 15) -> None:
    """SIGTERM, up to `grace` seconds, then SIGKILL: only while a pid is still the process we
    mean (its command line names our state dir), never a reused pid."""
    for pid in pids:
        _signal(pid, signal.SIGTERM, still_ours)
    deadline = time.monotonic() + grace
    while any(still_ours(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        _signal(pid, signal.SIGKILL, still_ours)
    while any(still_ours(p) and not _zombie(p) for p in pids):
        time.sleep(0.05)


def _signal(pid: int, number: int, still_ours: Callable[[int], bool]) -> None:
    if still_ours(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, number)


def _zombie(pid: int) -> bool:
    try:
        return " Z " in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    except OSError:
        return True


# ---------------------------------------------------------------- the fleet


@dataclass
class Member:
    """One cluster of the fleet: its API server, its `Cluster` helpers and its own operator."""

    name: str
    plane: Plane
    cluster: Cluster
    operator: Operator | None = None

    @property
    def up(self) -> bool:
        return self.plane.up


@dataclass
class Fleet:
    backend: str
    workdir: Path
    members: dict[str, Member] = field(default_factory=dict)
    kubeconfig: Path = Path()  # every member's admin context, named as the member
    lock: Any = None  # realk8s: the open lock file on the state root, held while the fleet runs

    def __getitem__(self, name: str) -> Member:
        return self.members[name]

    def __iter__(self) -> Iterator[Member]:
        return iter(self.members.values())

    @property
    def names(self) -> list[str]:
        return list(self.members)

    def stop(self, name: str) -> None:
        """Take the member's API server away (its operator keeps running and retrying)."""
        self.members[name].plane.stop()

    def start(self, name: str) -> None:
        """Bring it back, with its data; returns once it answers."""
        member = self.members[name]
        member.plane.start()
        wait_for(
            lambda: member.cluster.kubectl("get", "ns", "default", check=False).returncode == 0,
            60,
            0.3,
            f"{name} to answer again",
        )

    def all_up(self) -> None:
        """Start every member that a test left stopped."""
        for member in self:
            if not member.up:
                self.start(member.name)

    def shutdown(self) -> None:
        for member in self:
            if member.operator is not None:
                member.operator.stop()
        _each(self, lambda member: member.plane.shutdown())
        if self.lock is not None:
            self.lock.close()
            self.lock = None


def start_fleet(
    workdir: Path,
    backend: str = "local",
    names: Sequence[str] = MEMBERS,
    kit: Path | None = None,
    operator_env: Mapping[str, str] | None = None,
    state_root: Path | None = None,
) -> Fleet:
    """Start every member's API server, install Lapse's CRDs and the sample requester role on
    each, run an operator per member as its own ServiceAccount, and write the merged kubeconfig.
    On failure, what was started is stopped again.

    realk8s: `kit` is the realk8s directory; state dirs are `state_root/<name>` (default
    `workdir/<name>`), kept across runs so that the binaries are unpacked only once.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown fleet backend {backend!r}; one of {BACKENDS}")
    workdir.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(backend, workdir)
    if backend == "realk8s":
        fleet.lock = _lock(state_root or workdir)
    for index, name in enumerate(names):
        plane: Plane
        if backend == "realk8s":
            if kit is None or not (kit / "up.sh").exists():
                raise ValueError(f"the realk8s backend needs the kit (REALK8S); got {kit}")
            state = (state_root or workdir) / name / "state"
            plane = RealPlane(kit, state, realk8s_ports(index))
        else:
            plane = LocalPlane(workdir / name)
        cache = workdir / name / "kubectl-cache"
        cache.mkdir(parents=True, exist_ok=True)
        cluster = Cluster(
            "kubeconfig" if backend == "realk8s" else "local", plane.kubeconfig, "", cache
        )
        fleet.members[name] = Member(name, plane, cluster)
    try:
        _each(fleet, lambda member: _bring_up(member, workdir, operator_env or {}))
        fleet.kubeconfig = workdir / "fleet.kubeconfig"
        write_merged_kubeconfig(
            fleet.kubeconfig, {member.name: member.cluster.kubeconfig for member in fleet}
        )
    except BaseException:
        fleet.shutdown()
        raise
    return fleet


def _lock(root: Path) -> Any:
    """One fleet at a time on these state dirs and ports: the next one would stop this one's
    planes before starting its own."""
    root.mkdir(parents=True, exist_ok=True)
    handle = (root / "fleet.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise RuntimeError(f"another fleet runs on {root} (fleet.lock is held)") from None
    return handle


def _each(fleet: Fleet, work: Callable[[Member], None]) -> None:
    """`work` on every member at once (the planes start in parallel)."""
    with ThreadPoolExecutor(max_workers=len(fleet.members)) as pool:
        for future in [pool.submit(work, member) for member in fleet]:
            future.result()


def _bring_up(member: Member, workdir: Path, operator_env: Mapping[str, str]) -> None:
    member.plane.launch()
    member.cluster.server = server_of(member.cluster.kubeconfig)
    install_lapse_kinds(member.cluster)
    home = workdir / member.name
    identity = service_account_identity(member.cluster, home / "identity")
    member.operator = Operator(
        member.cluster, home / "operator", extra_env=dict(operator_env), identity=identity
    )
    member.operator.workdir.mkdir(parents=True, exist_ok=True)
    member.operator.start()


def install_lapse_kinds(cluster: Cluster) -> None:
    """Lapse's CRDs, waited for, and the sample `lapse-requester` ClusterRole."""
    cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/accessrequests.lapse.dev",
        "crd/accesspolicies.lapse.dev",
    )
    cluster.kubectl("apply", "-f", str(ROOT / "deploy" / "samples" / "requester-clusterrole.yaml"))


def write_merged_kubeconfig(path: Path, members: Mapping[str, Path]) -> None:
    """One kubeconfig with a context, a cluster and an admin user per member: the context and
    the cluster are named as the member, the user `<member>-admin`; file paths made absolute.
    The first member is the current context."""
    clusters, users, contexts = [], [], []
    for name, kubeconfig in members.items():
        config = yaml.safe_load(kubeconfig.read_text())
        by_name = {c["name"]: c["context"] for c in config.get("contexts") or ()}
        context = by_name.get(config.get("current-context")) or next(iter(by_name.values()))
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        clusters.append({"name": name, "cluster": _absolute(cluster, kubeconfig.parent)})
        users.append({"name": f"{name}-admin", "user": _absolute(user, kubeconfig.parent)})
        contexts.append({"name": name, "context": {"cluster": name, "user": f"{name}-admin"}})
    merged = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "users": users,
        "contexts": contexts,
        "current-context": next(iter(members)),
    }
    path.write_text(yaml.safe_dump(merged))
    path.chmod(0o600)


FILE_KEYS = ("certificate-authority", "client-certificate", "client-key", "tokenFile")


def _absolute(entry: Mapping[str, Any], base: Path) -> dict[str, Any]:
    plain = dict(entry)
    for key in FILE_KEYS:
        value = plain.get(key)
        if value and not Path(value).is_absolute():
            plain[key] = str((base / value).resolve())
    return plain


def apply_list(cluster: Cluster, items: Sequence[Mapping[str, Any]], **kwargs: Any) -> None:
    """`kubectl apply` of a v1 List of `items`."""
    listing = {"apiVersion": "v1", "kind": "List", "items": list(items)}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(listing), **kwargs)
