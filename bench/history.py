"""`make bench-history` (`python -m bench.history`): history that lasts, etcd that does not fill.

Retention deletes ended requests so that etcd does not fill, and it must never delete one whose
trail a sink has not received: the cluster's copy is then the only one. This benchmark checks
both promises against a real cluster, a real rsyslog and the operator as a process, and
measures what history costs:

1. **retention** — N self-service requests at a steady rate, short grants, retention of a
   minute, and the syslog server stopped for minutes partway through. Then: every record
   arrived (`kubectl lapse audit verify`: N complete streams, none broken), no request began
   to leave the cluster before its last record arrived, `audit report --from` the file lists
   all N grants, etcd's in-use size at the end against the start, and the bytes an ended grant
   costs in etcd and in the SIEM (`bench.retention`).
2. **startup** — `BENCH_ENDED` ended requests written straight into the cluster (in the shape
   of one captured in part 1), then the operator's start-up time and RSS with retention off,
   how fast retention deletes them all, and start-up with nothing left (`bench.ended`).

Settings come from BENCH_* variables (README.md, "History"); results go to
BENCH_OUTPUT_DIR/history.json and a table. It needs a cluster (`BENCH_KUBECONFIG`): etcd's size
is the point, and the local API has no etcd.

Exit status: 0 when every check passed, 1 when one failed, 2 on a setup failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import backend, cluster, report
from bench.backend import ClusterBackend
from bench.cluster import Credentials
from bench.install import PART_OF
from bench.kube import ApiError, Kube

HERE = Path(__file__).resolve().parent
# Where the benchmark's operator keeps its Lease and signing key; deleted with the namespaces.
OPERATOR_NAMESPACE = "lapse-bench-history"
# The operator's webhook configurations: a name of the benchmark's own, so that another Lapse
# on a shared cluster (its `lapse.dev`) is neither re-pointed nor emptied by this run.
WEBHOOK_CONFIGURATION = "lapse-bench-history.lapse.dev"
NAMESPACES = [f"bench-{i}" for i in range(10)]
TEMPLATE = "history-ended-request.json"
PARTS = ("retention", "startup")

Log = Callable[[str], None]


def _float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value.replace("_", "").replace(",", "")) if value else default


@dataclass(frozen=True)
class Config:
    parts: tuple[str, ...]
    # Part 1.
    n: int
    rate: float
    duration: str
    sink_down: float
    sink_down_at: float
    retention: str
    retention_interval: str
    retry_max: str
    within: float
    # Part 2.
    ended: int
    fill_within: float
    fill_concurrency: int
    startup_within: float

    @classmethod
    def from_env(cls) -> Config:
        parts = tuple(
            p.strip() for p in os.environ.get("BENCH_HISTORY_PARTS", ",".join(PARTS)).split(",")
        )
        unknown = [p for p in parts if p not in PARTS]
        if unknown or not parts:
            raise ValueError(f"BENCH_HISTORY_PARTS: {unknown} unknown; use {', '.join(PARTS)}")
        n, rate = _int("BENCH_N", 1000), _float("BENCH_RATE", 20.0)
        sink_down = _float("BENCH_SINK_DOWN", 300.0)
        return cls(
            parts=parts,
            n=n,
            rate=rate,
            duration=os.environ.get("BENCH_DURATION", "20s"),
            sink_down=sink_down,
            # Partway through: after 40 % of the creates, while grants are being made and
            # the first ones are ending.
            sink_down_at=_float("BENCH_SINK_DOWN_AT", 0.4 * n / rate),
            retention=os.environ.get("BENCH_RETENTION", "60s"),
            retention_interval=os.environ.get("BENCH_RETENTION_INTERVAL", "5s"),
            retry_max=os.environ.get("BENCH_TRAIL_RETRY_MAX", "5s"),
            within=_float("BENCH_HISTORY_WITHIN", sink_down + n / rate + 1200),
            ended=_int("BENCH_ENDED", 100_000),
            fill_within=_float("BENCH_FILL_WITHIN", 900.0),
            fill_concurrency=_int("BENCH_FILL_CONCURRENCY", 64),
            startup_within=_float("BENCH_STARTUP_WITHIN", 1800.0),
        )


@dataclass
class Context:
    """What both parts share: the cluster, its credentials and a client, the run's files."""

    config: Config
    kubeconfig: Path
    credentials: Credentials
    kube: Kube
    workdir: Path
    out: Path
    etcd_url: str | None
    log: Log

    def template_path(self) -> Path:
        return self.out / TEMPLATE


async def ensure_namespace(kube: Kube, name: str) -> None:
    await kube.create(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": PART_OF}},
        exist_ok=True,
    )


async def delete_webhook_configurations(kube: Kube, names: list[str]) -> list[str]:
    """Delete Lapse's webhook configurations of these names; which ones there were."""
    found = []
    for name in names:
        for kind in ("mutating", "validating"):
            path = f"/apis/admissionregistration.k8s.io/v1/{kind}webhookconfigurations/{name}"
            if await kube.delete(path):
                found.append(f"{kind}webhookconfiguration/{name}")
    return found


async def list_requests(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params = {"limit": "500"}
    collection = f"/apis/lapse.dev/v1alpha1/namespaces/{namespace}/accessrequests"
    while True:
        page = await kube.call("GET", collection, params=params)
        items.extend(page.get("items", []))
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items
        params = {"limit": "500", "continue": token}


async def count_requests(kube: Kube, namespaces: list[str]) -> int:
    """How many AccessRequests the namespaces hold (one small list call each)."""
    total = 0
    for namespace in namespaces:
        page = await kube.call(
            "GET",
            f"/apis/lapse.dev/v1alpha1/namespaces/{namespace}/accessrequests",
            params={"limit": "1"},
        )
        items = len(page.get("items", []))
        total += items + int((page.get("metadata") or {}).get("remainingItemCount") or 0)
    return total


def signing_key_file(kubeconfig: Path, namespace: str, target: Path) -> Path:
    """The operator's signing key (Secret lapse-signing-key), base64, in a file for --key-file."""
    kubectl = shutil.which("kubectl", path=str(HERE.parent / ".venv" / "bin")) or "kubectl"
    out = subprocess.run(
        [
            kubectl,
            "get",
            "secret",
            "lapse-signing-key",
            "-n",
            namespace,
            "-o",
            "jsonpath={.data.key}",
        ],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    target.write_text(out)
    target.chmod(0o600)
    return target


def lapse_cli(*args: str) -> tuple[int, str, str]:
    """`kubectl lapse …` as the plugin binary the virtualenv installs."""
    binary = shutil.which("kubectl-lapse", path=str(Path(sys.executable).parent))
    if binary is None:
        binary = shutil.which("kubectl-lapse") or "kubectl-lapse"
    done = subprocess.run([binary, *args], capture_output=True, text=True)
    return done.returncode, done.stdout, done.stderr


def mb(value: float) -> str:
    return f"{value / 2**20:.2f} MB"


def table(results: Mapping[str, Any]) -> str:
    """The printed summary: one line a figure."""
    rows: list[tuple[str, str]] = []
    for part in ("retention", "startup"):
        figures = results.get(part)
        if not isinstance(figures, Mapping):
            continue
        rows.append((f"— {part} —", ""))
        for name, value in figures.get("table", []):
            rows.append((str(name), str(value)))
    width = max((len(r[0]) for r in rows), default=10)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


async def main_async(
    config: Config, choice: backend.Choice, out: Path, workroot: Path, commit: str
) -> int:
    host = report.machine()

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    log(
        f"machine: {host['cpu']}, {host['cores']} cores, {host['memory_gib']} GiB; "
        f"commit {commit}; parts {', '.join(config.parts)}"
    )
    assert choice.kubeconfig is not None
    target = ClusterBackend(workroot, choice.kubeconfig)
    credentials = target.start()
    kube = Kube(credentials, connections=max(64, config.fill_concurrency * 2))
    context = Context(
        config, choice.kubeconfig, credentials, kube, workroot, out, etcd_url_env(), log
    )
    # A run replaces the parts it ran and keeps the others' last figures.
    previous = out / "history.json"
    results: dict[str, Any] = json.loads(previous.read_text()) if previous.is_file() else {}
    results |= {
        "machine": host,
        "commit": commit,
        "cluster": target.label,
    }
    status = 0
    try:
        for part in config.parts:
            log(f"part {part}: installing on {target.label}")
            await target.install(kube, NAMESPACES, log)
            await ensure_namespace(kube, OPERATOR_NAMESPACE)
            # Each part is its own module, imported here: both import this one.
            if part == "retention":
                from bench import retention

                figures = await retention.run(context)
            else:
                from bench import ended

                figures = await ended.run(context)
            # Each part says where and how it ran: a later run may replace the other.
            results[part] = {
                "commit": commit,
                "cluster": target.label,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "settings": dataclasses.asdict(config),
                **figures,
            }
            if not figures.get("passed", True):
                status = 1
            (out / "history.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
            await target.clean(kube, log)
    finally:
        try:
            await target.clean(kube, log)
        finally:
            await kube.close()
            target.stop()
    print("\n" + table(results) + "\n", flush=True)
    print(f"wrote {out / 'history.json'}", flush=True)
    return status


def etcd_url_env() -> str | None:
    from bench.etcd import url_from_env

    return url_from_env()


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The operator inherits it, and the backend's clean-up deletes configurations of this name.
    os.environ.setdefault("LAPSE_WEBHOOK_CONFIGURATION", WEBHOOK_CONFIGURATION)
    try:
        config = Config.from_env()
        choice = backend.choose(os.environ)
    except (ValueError, backend.ChoiceError) as error:
        print(f"bench.history: {error}", file=sys.stderr)
        return 2
    if choice.kubeconfig is None:
        print(
            "bench.history: needs a cluster with etcd (BENCH_KUBECONFIG=path/to/admin.kubeconfig)",
            file=sys.stderr,
        )
        return 2
    out = Path(os.environ.get("BENCH_OUTPUT_DIR") or HERE)
    out.mkdir(parents=True, exist_ok=True)
    workroot = Path(tempfile.mkdtemp(prefix="lapse-bench-history-"))
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    signal.signal(signal.SIGINT, _terminate_as_interrupt)
    status = 2
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
        ).stdout.strip()
        status = asyncio.run(main_async(config, choice, out, workroot, commit))
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        status = 130
    except (ApiError, RuntimeError, OSError) as error:
        print(f"bench.history: {error}", file=sys.stderr)
        status = 2
    finally:
        cluster.stop_all()
        from bench.retention import stop_servers

        stop_servers()
        if status == 0 and not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(workroot, ignore_errors=True)
        else:
            print(f"logs kept in {workroot}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
