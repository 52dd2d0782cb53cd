"""Two reference figures to put beside Lapse's revocation figures, on the same cluster.

A revocation lag or rate means little alone. Two references, measured from the outside as
Lapse's are (a watch on RoleBindings on its own thread, events stamped on arrival), give it a
scale: **the physical limit**, how fast a plain client deletes N RoleBindings here with the
request Lapse sends (Lapse cannot revoke faster; `ratio` says how much of it Lapse reaches,
goal ≥ 0.8), and **kube-janitor**, the common answer to "delete this at that time": its lag
behind `janitor/expires` at its default interval.

kube-janitor is not on PyPI (its releases are container images): it is installed from a source
checkout (`SIDEBYSIDE_JANITOR_SRC`, default `build/kube-janitor`) into its own virtualenv
(`build/janitor-venv`) as its image is built: the dependencies its `poetry.lock` pins, then its
package copied in. Its name is never installed from an index: a package called that there would
be nobody's we know, run with an admin kubeconfig.

`python -m bench.sidebyside` measures the cluster `BENCH_KUBECONFIG` names (required: the one a
shell points at is never measured by accident), prints a few table lines and writes
`build/sidebyside.json`; `sidebyside()` does the same for a caller with its own client.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench.backend import Log
from bench.cluster import ROOT, Credentials, _spawn, _terminate, stop_all
from bench.kube import ApiError, Kube
from bench.measure import wait_until
from bench.report import EARLY_TOLERANCE_S, Stats, _fmt, machine, source_version, stats
from bench.watch import Binding, BindingWatch, Key

logger = logging.getLogger(__name__)

PART_OF = {"app.kubernetes.io/part-of": "lapse-bench-sidebyside"}
SELECTOR = ",".join(f"{k}={v}" for k, v in PART_OF.items())
NAMESPACES = tuple(f"lapse-sbs-{i}" for i in range(4))
RBAC = "/apis/rbac.authorization.k8s.io/v1"
EXPIRES = "janitor/expires"
RATIO_GOAL = 0.8
GONE_WITHIN = 900.0  # seconds the namespaces may take to go, bindings and events with them
JANITOR_VENV = ROOT / "build" / "janitor-venv"
JANITOR_SOURCE = ROOT / "build" / "kube-janitor"
OUTPUT = ROOT / "build" / "sidebyside.json"
# pykube reads a pod's service account before any kubeconfig: with one present, kube-janitor
# would clean the cluster this machine runs in, not the one named.
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
# What would change kube-janitor's defaults, its cluster or its packages if inherited.
JANITOR_ENV_DROPPED = ("EXCLUDE_RESOURCES", "EXCLUDE_NAMESPACES", "RULES_FILE", "PYTHONPATH")
# Expiries are fixed in the creates: planned as if those ran this slowly, then some seconds on.
PLANNED_CREATES_PER_S = 100.0
START_AFTER = 10.0
# A binding kube-janitor has not deleted this many intervals after the last expiry never was.
TIMEOUT_INTERVALS = 4


def _json(value: Any) -> Any:
    """A figure as JSON has it: no NaN or infinity (null: not measured), rounded."""
    if isinstance(value, Stats):
        return {k: _json(getattr(value, k)) for k in ("count", "p50", "p95", "p99", "max")}
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


def middle_rate(arrivals: list[float]) -> float:
    """Events per second over the middle 80 % of them, away from the ramp-up and the tail."""
    ordered = sorted(arrivals)
    lo, hi = int(0.1 * len(ordered)), max(int(0.9 * len(ordered)) - 1, 0)
    if hi > lo and ordered[hi] > ordered[lo]:
        return (hi - lo) / (ordered[hi] - ordered[lo])
    return float("nan")


def ratio(lapse_per_s: float, plain_per_s: float) -> float:
    """Lapse's revocations per second over a plain client's deletes per second (goal ≥ 0.8)."""
    if not (math.isfinite(lapse_per_s) and math.isfinite(plain_per_s)) or plain_per_s <= 0:
        return float("nan")
    return lapse_per_s / plain_per_s


class DeleteWatch(BindingWatch):
    """bench.watch's watch, on the side-by-side bindings of one phase (names starting with
    `prefix`), keyed by (namespace, name)."""

    def __init__(self, credentials: Credentials, prefix: str) -> None:
        super().__init__(credentials, NAMESPACES)
        self._prefix = prefix

    async def _run(self) -> None:
        kube, path = Kube(self._credentials, connections=4), f"{RBAC}/rolebindings"
        try:
            listing = await kube.call("GET", path, params={"labelSelector": SELECTOR})
            for item in listing.get("items", []):
                self._record("ADDED", item, None)
            version = str(listing["metadata"]["resourceVersion"])
            self._ready.set()
            while True:
                params = {"labelSelector": SELECTOR, "resourceVersion": version}
                params.update(allowWatchBookmarks="true", timeoutSeconds="3600")
                try:
                    async for arrived, event in kube.stream(path, params):
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            raise ApiError(int(obj.get("code", 500)), str(obj.get("message")))
                        version = str((obj.get("metadata") or {}).get("resourceVersion", version))
                        if kind in ("ADDED", "MODIFIED", "DELETED"):
                            self._record(str(kind), obj, arrived)
                except (OSError, TimeoutError, ApiError) as error:
                    # A 410 would lose events and so measurements: fail loudly instead.
                    if isinstance(error, ApiError) and error.status == 410:
                        raise
                    logger.warning("Side-by-side watch dropped (%s); resuming.", error)
                self.reconnects += 1
        finally:
            await kube.close()

    def _record(self, kind: str, obj: dict[str, Any], arrived: float | None) -> None:
        metadata = obj.get("metadata") or {}
        key = (str(metadata.get("namespace", "")), str(metadata.get("name", "")))
        if key[0] not in self._namespaces or not key[1].startswith(self._prefix):
            return
        with self._lock:
            self.events += 1
            binding = self._bindings.setdefault(key, Binding(key[1], None))
            if binding.added is None:
                # Bindings that already existed when the watch started have no arrival time.
                binding.added = arrived if arrived is not None else float("nan")
                self._added += 1
            if kind == "DELETED" and binding.deleted is None:
                binding.deleted = arrived
                self._deleted += 1

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the side-by-side watch failed: {self.error}")


async def _each(concurrency: int, items: list[Any], act: Callable[[Any], Awaitable[None]]) -> None:
    """`act` on every item in order, `concurrency` at a time."""
    pending: Iterator[Any] = iter(items)

    async def worker() -> None:
        for item in pending:
            await act(item)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))


async def _create_bindings(
    kube: Kube, watch: DeleteWatch, keys: list[Key], expiries: list[float], concurrency: int
) -> dict[Key, str]:
    """Create the bindings (annotated with their expiry, if any) and wait until the watch saw
    every one; their uids."""
    for name in NAMESPACES:
        metadata = {"name": name, "labels": PART_OF}
        await kube.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}, exist_ok=True
        )
    uids: dict[Key, str] = {}
    rbac = "rbac.authorization.k8s.io"

    async def create(index: int) -> None:
        (namespace, name), when = keys[index], expiries[index] if expiries else None
        stamp = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else ""
        metadata = {"name": name, "namespace": namespace, "labels": PART_OF}
        created = await kube.create(
            {
                "apiVersion": f"{rbac}/v1",
                "kind": "RoleBinding",
                "metadata": {**metadata, "annotations": {EXPIRES: stamp} if stamp else {}},
                # A bootstrap role of every kube-apiserver; an admin binds it without holding it.
                "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "view"},
                "subjects": [{"apiGroup": rbac, "kind": "User", "name": f"sbs-user-{index % 50}"}],
            }
        )
        uids[keys[index]] = str(created["metadata"]["uid"])

    await _each(concurrency, list(range(len(keys))), create)
    if not await wait_until("the bindings' ADDED", lambda: watch.counts()[0] >= len(keys), 120):
        watch.check()
        raise RuntimeError(f"the watch saw {watch.counts()[0]} of {len(keys)} bindings created")
    return uids


@dataclass(frozen=True)
class PlainDeletes:
    """A plain client deleting N bindings, `concurrency` at a time, as fast as the API admits."""

    n: int
    concurrency: int
    deleted: int  # DELETED events seen
    refused: int  # deletes the API refused (a 404 is not one)
    seconds: float  # first delete sent → last DELETED seen
    deletes_per_s: float
    deletes_per_s_middle: float  # over the middle 80 % of the DELETED arrivals
    round_trip_s: Stats  # one DELETE, sent → answered (s)
    create_seconds: float  # creating the N bindings, for scale

    def to_json(self) -> dict[str, Any]:
        return {k: _json(v) for k, v in vars(self).items()} | {"missing": self.n - self.deleted}


async def plain_delete_rate(kube: Kube, n: int, *, concurrency: int = 32, log: Log) -> PlainDeletes:
    """Create N RoleBindings, then delete them all, timed from the first delete sent to the
    last DELETED event seen."""
    keys = [(NAMESPACES[i % len(NAMESPACES)], f"sbs-plain-{i:05d}") for i in range(n)]
    watch = DeleteWatch(kube.credentials, "sbs-plain-")
    watch.start()
    sent: list[float] = []
    round_trips: list[float] = []
    refused = 0
    try:
        creating = time.monotonic()
        uids = await _create_bindings(kube, watch, keys, [], concurrency)
        create_seconds = time.monotonic() - creating
        log(f"  plain: {n:,} bindings made in {create_seconds:.1f} s; deleting them all")

        async def delete(key: Key) -> None:
            nonlocal refused
            path = f"{RBAC}/namespaces/{key[0]}/rolebindings/{key[1]}"
            body = {
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "preconditions": {"uid": uids[key]},
            }
            for _ in range(10):
                began = time.time()
                sent.append(began)
                try:
                    await kube.call(
                        "DELETE", path, body, params={"propagationPolicy": "Background"}
                    )
                except ApiError as error:
                    if error.status == 429:  # not admitted yet: retried, as client-go does
                        await asyncio.sleep(0.1)
                        continue
                    if error.status != 404:
                        refused += 1
                        logger.warning("Delete of %s/%s refused: %s", *key, error)
                    return
                round_trips.append(time.time() - began)
                return

        await _each(concurrency, keys, delete)
        await wait_until("the bindings' DELETED", lambda: watch.counts()[1] >= n, 60 + n / 10)
        watch.check()
        deleted = [b.deleted for b in watch.snapshot().values() if b.deleted is not None]
    finally:
        watch.stop()
    span = max(deleted) - min(sent) if deleted and sent else float("nan")
    result = PlainDeletes(
        n=n,
        concurrency=concurrency,
        deleted=len(deleted),
        refused=refused,
        seconds=span,
        deletes_per_s=len(deleted) / span if span > 0 else float("nan"),
        deletes_per_s_middle=middle_rate(deleted),
        round_trip_s=stats(round_trips),
        create_seconds=create_seconds,
    )
    log(f"  plain: {result.deleted:,} deleted in {span:.2f} s, {result.deletes_per_s:.0f}/s")
    return result


@dataclass(frozen=True)
class JanitorInstall:
    python: Path
    version: str
    interval: float  # its default


class JanitorMissing(RuntimeError):
    """No kube-janitor to run; the message says where its source should be."""


# Which kube-janitor is installed, and its default interval as its own parser has it.
PROBE = "import kube_janitor as k, kube_janitor.cmd as c; print(k.__version__, c.get_parser()"
PROBE += ".get_default('interval'))"


def ensure_janitor(
    venv: Path = JANITOR_VENV, source: Path = JANITOR_SOURCE, log: Log = print
) -> JanitorInstall:
    """kube-janitor in its own virtualenv (its dependencies must not mix with the project's),
    installed from `source` when missing."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", PROBE]
    found = subprocess.run(probe, capture_output=True, text=True) if python.exists() else None
    if found is None or found.returncode != 0:
        if not (source / "kube_janitor" / "__main__.py").is_file():
            raise JanitorMissing(
                f"no kube-janitor source in {source} (it is not on PyPI): clone "
                "https://codeberg.org/hjacobs/kube-janitor there (or its GitHub mirror "
                "hjacobs/kube-janitor, tag 20.10.0), or name a checkout in SIDEBYSIDE_JANITOR_SRC"
            )
        describe = ["git", "-C", str(source), "describe", "--tags", "--always"]
        version = subprocess.run(describe, capture_output=True, text=True).stdout.strip()
        log(f"  installing kube-janitor {version or '(no git tag)'} from {source} into {venv}")
        if not python.exists():
            base = shutil.which("python3") or sys.executable
            subprocess.run([base, "-m", "venv", str(venv)], check=True)
        # Its runtime dependencies, at the versions its own lock file pins where it has one.
        wanted = tomllib.loads((source / "pyproject.toml").read_text())["tool"]["poetry"]
        lock_file = source / "poetry.lock"
        lock = tomllib.loads(lock_file.read_text()) if lock_file.is_file() else {}
        pins = {p["name"].lower(): p["version"] for p in lock.get("package", [])}
        requirements = [
            f"{name}=={pins[name.lower()]}" if name.lower() in pins else name
            for name in wanted["dependencies"]
            if name.lower() != "python"
        ]
        subprocess.run([python, "-m", "pip", "install", "--quiet", *requirements], check=True)
        where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        site = subprocess.run([python, "-c", where], capture_output=True, text=True, check=True)
        target = Path(site.stdout.strip()) / "kube_janitor"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source / "kube_janitor", target)
        if version:  # stamped as its image's build does; the source says "2019.2.1dev0"
            init = target / "__init__.py"
            init.write_text(
                re.sub(r"__version__ = .*", f'__version__ = "{version}"', init.read_text())
            )
        found = subprocess.run(probe, capture_output=True, text=True, check=True)
    version, interval = found.stdout.split()[:2]
    return JanitorInstall(python, version, float(interval))


class Janitor:
    """kube-janitor as a process, on the side-by-side namespaces and on RoleBindings only."""

    def __init__(self, install: JanitorInstall, kubeconfig: Path, log_path: Path) -> None:
        self.log_path = log_path
        self.command = [str(install.python), "-m", "kube_janitor"]
        self.command += ["--include-resources=rolebindings"]
        self.command += [f"--include-namespaces={','.join(NAMESPACES)}"]
        self.env = {k: v for k, v in os.environ.items() if k not in JANITOR_ENV_DROPPED}
        self.env["KUBECONFIG"] = str(kubeconfig)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        if SERVICE_ACCOUNT_TOKEN.exists():
            raise RuntimeError(f"{SERVICE_ACCOUNT_TOKEN} exists: kube-janitor would use it")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as out:
            # Registered with bench.cluster, whose stop_all ends it on any way out of a run.
            self.process = _spawn(self.command, env=self.env, stdout=out, stderr=out)
        return time.time()

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"kube-janitor exited ({self.process.returncode}):\n{tail}")

    def stop(self) -> None:
        if self.process is not None:
            _terminate(self.process)
            self.process = None

    def pass_ends(self) -> list[float]:
        """When its clean-up passes ended, from its log (asctime: local time, as read here)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [
            datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            for line in text.splitlines()
            if "Clean up run completed" in line
        ]


@dataclass(frozen=True)
class JanitorLag:
    """kube-janitor's lag behind `janitor/expires`: DELETED arrival minus the expiry."""

    n: int
    version: str
    interval_s: float
    command: list[str]
    spread_s: float
    timeout_s: float  # still there this long after the last expiry: never deleted
    deleted: int
    never: int
    early: int  # deleted before its expiry (beyond the stamps' tolerance)
    lag_s: Stats
    first_expiry_after_all_existed_s: float
    seconds: float  # kube-janitor's start → the last DELETED seen
    pass_ends: list[float] = field(default_factory=list)
    lag_samples_s: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        # The time between two passes beyond the interval: how long the later pass took.
        took = [b - a - self.interval_s for a, b in itertools.pairwise(self.pass_ends)]
        fields = {k: _json(v) for k, v in vars(self).items() if k != "pass_ends"}
        return fields | {"passes": len(self.pass_ends), "pass_seconds": _json(took)}


async def janitor_lag(
    kube: Kube,
    kubeconfig: Path,
    n: int,
    *,
    spread: float = 30.0,
    concurrency: int = 32,
    source: Path = JANITOR_SOURCE,
    log_path: Path = ROOT / "build" / "sidebyside-janitor.log",
    log: Log,
) -> JanitorLag:
    """N bindings expiring over `spread` seconds (whole seconds: kube-janitor reads no more),
    some seconds after all exist; kube-janitor, started then at its default interval, deletes
    them."""
    install = await asyncio.to_thread(ensure_janitor, JANITOR_VENV, source, log)
    keys = [(NAMESPACES[i % len(NAMESPACES)], f"sbs-janitor-{i:05d}") for i in range(n)]
    first = math.ceil(time.time() + START_AFTER + n / PLANNED_CREATES_PER_S)
    expiries = [float(first + math.floor(i * spread / max(1, n))) for i in range(n)]
    timeout = TIMEOUT_INTERVALS * install.interval
    janitor = Janitor(install, kubeconfig, log_path)
    watch = DeleteWatch(kube.credentials, "sbs-janitor-")
    watch.start()
    try:
        await _create_bindings(kube, watch, keys, expiries, concurrency)
        all_existed = started = janitor.start()
        log(
            f"  kube-janitor {install.version} started, interval {install.interval:g} s; "
            f"expiries {first - started:.1f} to {expiries[-1] - started:.1f} s from now"
        )

        def done() -> bool:
            janitor.check_alive()
            watch.check()
            return watch.counts()[1] >= n or time.time() > expiries[-1] + timeout

        def progress() -> str:
            return f"{watch.counts()[1]:,} of {n:,} deleted"

        within = expiries[-1] + timeout - time.time() + 60
        await wait_until("kube-janitor's deletes", done, within, progress=progress)
        seen = watch.snapshot()
    finally:
        janitor.stop()
        watch.stop()
    lags, early = [], 0
    for key, expiry in zip(keys, expiries, strict=True):
        deleted = seen[key].deleted if key in seen else None
        if deleted is not None:
            early += deleted < expiry - EARLY_TOLERANCE_S
            lags.append(deleted - expiry)
    last = max((b.deleted for b in seen.values() if b.deleted is not None), default=math.nan)
    result = JanitorLag(
        n=n,
        version=install.version,
        interval_s=install.interval,
        command=[Path(janitor.command[0]).name, *janitor.command[1:]],
        spread_s=spread,
        timeout_s=timeout,
        deleted=len(lags),
        never=n - len(lags),
        early=early,
        lag_s=stats(lags),
        first_expiry_after_all_existed_s=first - all_existed,
        seconds=last - started,
        pass_ends=janitor.pass_ends(),
        lag_samples_s=lags,
    )
    log(f"  kube-janitor: {result.deleted:,} deleted, {result.never:,} never")
    return result


def lines(
    plain: PlainDeletes,
    janitor: JanitorLag | None,
    backend: str = "",
    lapse_per_s: float | None = None,
) -> list[str]:
    """The figures as rows in the style of bench.report's table."""
    out = [
        f"Side by side, N = {plain.n:,}" + (f", {backend}" if backend else ""),
        f"{'figure':<38}{'n':>7}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}",
    ]

    def row(label: str, s: Stats, note: str) -> None:
        cells = "".join(f"{_fmt(v):>9}" for v in (s.p50, s.p95, s.p99, s.max))
        out.append(f"{label:<38}{s.count:>7}{cells}  {note}")

    row("plain client: delete round trip (s)", plain.round_trip_s, f"{plain.concurrency} in flight")
    if janitor is not None:
        note = f"kube-janitor {janitor.version}, interval {janitor.interval_s:g} s"
        row("kube-janitor: lag behind expiry (s)", janitor.lag_s, note)
    out.append(
        f"{'plain client deletes/s':<38}{_fmt(plain.deletes_per_s):>9} overall, "
        f"{_fmt(plain.deletes_per_s_middle)} middle 80%  ({plain.deleted:,} of {plain.n:,} in "
        f"{_fmt(plain.seconds)} s, {plain.refused} refused)"
    )
    if janitor is not None:
        out.append(
            f"{'kube-janitor: deleted / never':<38}{janitor.deleted:>9,} / {janitor.never:,}  "
            f"(never: still there {janitor.timeout_s:g} s after the last expiry; "
            f"{janitor.early} deleted before their expiry)"
        )
    if lapse_per_s is not None:
        share = ratio(lapse_per_s, plain.deletes_per_s)
        verdict = "n/a" if math.isnan(share) else ("met" if share >= RATIO_GOAL else "MISSED")
        out.append(
            f"{'Lapse revocations/s ÷ plain deletes/s':<38}{_fmt(share):>9}  "
            f"({_fmt(lapse_per_s)}/s)  goal ≥ {RATIO_GOAL:g}: {verdict}"
        )
    return out


async def clean(kube: Kube, log: Log) -> None:
    """Delete every namespace labelled as the side by side's and wait until they are gone;
    refuse first if a namespace of its names exists without that label."""
    for name in NAMESPACES:
        try:
            found = await kube.call("GET", f"/api/v1/namespaces/{name}")
        except ApiError as error:
            if error.status == 404:
                continue
            raise
        if any((found["metadata"].get("labels") or {}).get(k) != v for k, v in PART_OF.items()):
            raise RuntimeError(f"namespace {name} exists without the label {SELECTOR}: not ours")
    params = {"labelSelector": SELECTOR}
    ours = [
        i["metadata"]["name"]
        for i in (await kube.call("GET", "/api/v1/namespaces", params=params))["items"]
    ]
    if not ours:
        return
    log(f"  removing namespaces {', '.join(sorted(ours))}")
    for name in ours:
        await kube.delete(f"/api/v1/namespaces/{name}")
    started = time.monotonic()
    while (await kube.call("GET", "/api/v1/namespaces", params=params))["items"]:
        if time.monotonic() - started > GONE_WITHIN:
            raise RuntimeError(f"namespaces {', '.join(ours)} not gone in {GONE_WITHIN:.0f} s")
        await asyncio.sleep(1.0)
    log(f"  namespaces gone after {time.monotonic() - started:.0f} s")


@dataclass(frozen=True)
class SideBySide:
    backend: str
    plain: PlainDeletes
    janitor: JanitorLag
    seconds: dict[str, float]  # how long each part took

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.plain.n,
            "backend": self.backend,
            "plain_client": self.plain.to_json(),
            "kube_janitor": self.janitor.to_json(),
            "seconds": {k: round(v, 1) for k, v in self.seconds.items()},
        }


async def sidebyside(
    kube: Kube,
    kubeconfig: Path,
    n: int,
    *,
    concurrency: int = 32,
    spread: float = 30.0,
    source: Path = JANITOR_SOURCE,
    log: Log,
) -> SideBySide:
    """Both references, on namespaces cleaned before (a killed run's) and after."""
    version = await kube.call("GET", "/version")
    seconds: dict[str, float] = {}
    mark = time.monotonic()

    def took(part: str) -> None:
        nonlocal mark
        seconds[part], mark = time.monotonic() - mark, time.monotonic()

    # Before anything is made: a missing kube-janitor must not cost a plain phase first.
    await asyncio.to_thread(ensure_janitor, JANITOR_VENV, source, log)
    await clean(kube, log)
    took("install_and_clean_before")
    try:
        plain = await plain_delete_rate(kube, n, concurrency=concurrency, log=log)
        took("plain_client")
        janitor = await janitor_lag(
            kube, kubeconfig, n, spread=spread, concurrency=concurrency, source=source, log=log
        )
        took("kube_janitor")
    finally:
        await clean(kube, log)
        took("clean_after")
    return SideBySide(f"kube-apiserver {version.get('gitVersion')}", plain, janitor, seconds)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes Ctrl-C's path; a second signal must not cut the clean-up short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


async def main_async(kubeconfig: Path, scratch: Path) -> int:
    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    n = int(os.environ.get("SIDEBYSIDE_N", "1000"))
    concurrency = int(os.environ.get("SIDEBYSIDE_CONCURRENCY", "32"))
    spread = float(os.environ.get("SIDEBYSIDE_SPREAD", "30"))
    source = Path(os.environ.get("SIDEBYSIDE_JANITOR_SRC", "") or JANITOR_SOURCE)
    kube = Kube(Credentials.from_kubeconfig(kubeconfig, scratch=scratch), max(64, concurrency))
    try:
        log(f"side by side, N = {n:,}, on {kubeconfig}")
        result = await sidebyside(
            kube, kubeconfig, n, concurrency=concurrency, spread=spread, source=source, log=log
        )
    finally:
        await kube.close()
    print("\n" + "\n".join(lines(result.plain, result.janitor, result.backend)) + "\n")
    document = result.to_json() | {"machine": machine(), "source": source_version()}
    document["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(_json(document), indent=2, allow_nan=False) + "\n")
    print(f"wrote {OUTPUT}", flush=True)
    return 0 if result.plain.deleted == n and not result.plain.refused else 1


def main() -> int:
    """0: both measured; 1: the plain client's deletes were not all seen; 2: could not run;
    130: interrupted (kube-janitor stopped either way)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    named = os.environ.get("BENCH_KUBECONFIG", "").strip()
    if not named or not Path(named).expanduser().is_file():
        print(
            "sidebyside: BENCH_KUBECONFIG must name the kubeconfig of the cluster to measure "
            f"({'not a file: ' + named if named else 'unset'}); KUBECONFIG is never used",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    status = 2
    # Embedded certificates go to a scratch directory of the run's, not beside the kubeconfig.
    with tempfile.TemporaryDirectory(prefix="lapse-sbs-") as scratch:
        try:
            status = asyncio.run(main_async(Path(named).expanduser().resolve(), Path(scratch)))
        except KeyboardInterrupt:
            print("interrupted; kube-janitor was stopped", file=sys.stderr)
            status = 130
        except JanitorMissing as error:
            print(f"sidebyside: {error}", file=sys.stderr)
        finally:
            stop_all()
    return status


if __name__ == "__main__":
    sys.exit(main())
