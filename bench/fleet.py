"""`make bench-fleet` (`python -m bench.fleet`): `kubectl lapse list` across a fleet of clusters.

Two real control planes without a node (`$REALK8S/up.sh --fresh --no-node`, state dirs under
`LAPSE_FLEET_STATE`, default /tmp/lapse-fleet, ports 26xxx and 27xxx; demo/fleet.py, which
the fleet tests use too), a Lapse operator process on each as its own ServiceAccount, an Auto
policy, and BENCH_FLEET_N AccessRequests per cluster (default 1,000), created as impersonated
requesters and granted by each cluster's own operator. Once all are Active, the real command
`kubectl-lapse list --kubeconfig <merged> --all-contexts -A` (this tree's CLI, run as users
run it: a new process each time) is timed BENCH_FLEET_RUNS times (default 10) as a table and
as `-o json`; then one member's kube-apiserver is stopped and the same command timed until it
has printed the other cluster's rows and named the stopped one unreachable (exit 5).

Results go to BENCH_OUTPUT_DIR/fleet.json (default bench/) and a table on stdout.
`BENCH_FLEET_BACKEND=local` runs the same on two local API servers, for trying it out.

Exit status: 0 when every check passed, 1 when one failed, 2 on a setup failure.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo.fleet import Fleet, Member, start_fleet
from demo.harness import ROOT, VENV_BIN, requesters_binding

HERE = Path(__file__).resolve().parent
NAMESPACE = "fleet-bench"
GROUP = "fleet-bench-devs"
USERS = 10
CHUNK = 100
ROLE = "view"
DURATION = "4h"
DOWN = "west"
Log = Callable[[str], None]


class CheckFailed(Exception):
    """The command did not do what the fleet promises (rows, exit code, warning)."""


@dataclass(frozen=True)
class Settings:
    backend: str
    kit: Path | None
    n: int
    runs: int
    down_runs: int
    out: Path
    state_root: Path
    timeout: float

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        kit = env.get("REALK8S")
        return cls(
            backend=env.get("BENCH_FLEET_BACKEND", "realk8s"),
            kit=Path(kit) if kit else None,
            n=int(env.get("BENCH_FLEET_N", "1000")),
            runs=int(env.get("BENCH_FLEET_RUNS", "10")),
            down_runs=int(env.get("BENCH_FLEET_DOWN_RUNS", "3")),
            out=Path(env.get("BENCH_OUTPUT_DIR", str(HERE))),
            state_root=Path(env.get("LAPSE_FLEET_STATE", "/tmp/lapse-fleet")),
            timeout=float(env.get("BENCH_FLEET_GRANT_TIMEOUT", "900")),
        )


# ---------------------------------------------------------------- the team and its requests


def prepare(member: Member) -> None:
    """The benchmark's namespace, its requester group bound to `lapse-requester`, and an Auto
    policy for it."""
    cluster = member.cluster
    cluster.kubectl("create", "namespace", NAMESPACE)
    objects = [
        requesters_binding(NAMESPACE, GROUP),
        {
            "apiVersion": "lapse.dev/v1alpha1",
            "kind": "AccessPolicy",
            "metadata": {"name": NAMESPACE},
            "spec": {
                "requesters": {"groups": [GROUP]},
                "roles": [{"kind": "ClusterRole", "name": ROLE}],
                "namespaces": [NAMESPACE],
                "defaultDuration": "1h",
                "maxDuration": "8h",
                "approval": {"mode": "Auto"},
            },
        },
    ]
    listing = {"apiVersion": "v1", "kind": "List", "items": objects}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(listing))


def request_chunk(start: int, count: int) -> dict[str, Any]:
    items = [
        {
            "apiVersion": "lapse.dev/v1alpha1",
            "kind": "AccessRequest",
            "metadata": {"name": f"bench-{index:05d}", "namespace": NAMESPACE},
            "spec": {
                "role": {"kind": "ClusterRole", "name": ROLE},
                "duration": DURATION,
                "reason": "Benchmark of Lapse: kubectl lapse list across clusters.",
            },
        }
        for index in range(start, start + count)
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def create_requests(fleet: Fleet, n: int) -> float:
    """N requests on every member at once, `kubectl create` of Lists of CHUNK, each chunk as
    one impersonated requester of the group; seconds until the last was admitted."""
    jobs = [
        (member, start, min(CHUNK, n - start)) for start in range(0, n, CHUNK) for member in fleet
    ]

    def create(job: tuple[Member, int, int]) -> None:
        member, start, count = job
        member.cluster.kubectl(
            "create",
            "-f",
            "-",
            "-o",
            "name",
            as_user=f"bench-dev-{(start // CHUNK) % USERS}",
            groups=(GROUP,),
            input=json.dumps(request_chunk(start, count)),
            timeout=600,
        )

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=4 * len(fleet.members)) as pool:
        for future in [pool.submit(create, job) for job in jobs]:
            future.result()
    return time.monotonic() - began


def phases(member: Member) -> list[str]:
    result = member.cluster.kubectl(
        "get",
        "accessrequests",
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.items[*].status.phase}",
        timeout=120,
    )
    return result.stdout.split()


def wait_all_active(fleet: Fleet, n: int, timeout: float, log: Log) -> float:
    """Seconds until every member shows N Active requests; fails on any other end."""
    began = time.monotonic()
    last_report = 0.0
    while True:
        counts = {}
        for member in fleet:
            seen = phases(member)
            ended = [p for p in seen if p in ("Denied", "Invalid", "Expired", "Revoked")]
            if ended:
                raise CheckFailed(f"{member.name}: {len(ended)} requests ended ({ended[0]})")
            counts[member.name] = seen.count("Active")
        if all(count >= n for count in counts.values()):
            return time.monotonic() - began
        elapsed = time.monotonic() - began
        if elapsed > timeout:
            raise CheckFailed(f"not all Active after {timeout:g}s: {counts}")
        if elapsed - last_report >= 15:
            log(f"  active so far: {counts} ({elapsed:.0f}s)")
            last_report = elapsed
        time.sleep(2)


# ---------------------------------------------------------------- the command, timed


def lapse_command() -> list[str]:
    script = VENV_BIN / "kubectl-lapse"
    return [str(script)] if script.exists() else [sys.executable, "-m", "lapse.cli"]


def command_env() -> dict[str, str]:
    """This tree's CLI even when .venv's editable install points at another checkout."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "operator"), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass(frozen=True)
class Run:
    seconds: float
    code: int
    stdout: str
    stderr: str


def run_list(fleet: Fleet, *extra: str, scope: Sequence[str] = ("--all-contexts",)) -> Run:
    command = [
        *lapse_command(),
        *("list", "--kubeconfig", str(fleet.kubeconfig), *scope, "-A", *extra),
    ]
    began = time.monotonic()
    result = subprocess.run(
        command, capture_output=True, text=True, env=command_env(), timeout=300, check=False
    )
    return Run(time.monotonic() - began, result.returncode, result.stdout, result.stderr)


def table_rows(run: Run) -> dict[str, int]:
    """Rows per CLUSTER (the first column) of the table, the header checked."""
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    if not lines or not lines[0].split()[0] == "CLUSTER":
        raise CheckFailed(f"no CLUSTER column first: {run.stdout[:300]!r}")
    rows: dict[str, int] = {}
    for line in lines[1:]:
        cluster = line.split()[0]
        rows[cluster] = rows.get(cluster, 0) + 1
    return rows


def json_rows(run: Run) -> dict[str, int]:
    """Objects per cluster in `-o json`: `{"clusters": [{"context", "result", ...}]}`, each
    result what `list -o json` prints for one cluster (a List, or a list)."""
    body = json.loads(run.stdout)
    rows: dict[str, int] = {}
    for entry in body.get("clusters") or ():
        result = entry.get("result")
        items = result.get("items") if isinstance(result, dict) else result
        rows[str(entry.get("context"))] = len(items) if isinstance(items, list) else 0
    return rows


def expect_rows(rows: dict[str, int], wanted: dict[str, int], what: str) -> None:
    """At least `wanted[cluster]` rows per cluster (break-glasses and others may add some)."""
    short = {c: rows.get(c, 0) for c, n in wanted.items() if rows.get(c, 0) < n}
    extra = sorted(set(rows) - set(wanted))
    if short or extra:
        raise CheckFailed(f"{what}: rows per cluster {rows}, wanted {wanted}")


def stats(samples: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(samples)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {
        "runs": len(ordered),
        "p50_s": round(rank(0.5), 3),
        "p90_s": round(rank(0.9), 3),
        "max_s": round(ordered[-1], 3),
        "samples_s": [round(s, 3) for s in samples],
    }


def time_list(
    fleet: Fleet,
    runs: int,
    extra: Sequence[str],
    check: Callable[[Run], None],
    scope: Sequence[str] = ("--all-contexts",),
) -> dict[str, Any]:
    samples = []
    for _ in range(runs):
        run = run_list(fleet, *extra, scope=scope)
        check(run)
        samples.append(run.seconds)
    return stats(samples)


# ---------------------------------------------------------------- the benchmark


def bench(fleet: Fleet, settings: Settings, log: Log) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for member in fleet:
        prepare(member)
    log(f"creating {settings.n} requests on each of {', '.join(fleet.names)}")
    results["create_s"] = round(create_requests(fleet, settings.n), 1)
    log(f"  created in {results['create_s']}s; waiting until all are Active")
    results["all_active_after_create_s"] = round(
        wait_all_active(fleet, settings.n, settings.timeout, log), 1
    )
    log(f"  all Active {results['all_active_after_create_s']}s after the last create")

    everyone = {name: settings.n for name in fleet.names}

    def table_ok(run: Run) -> None:
        if run.code != 0:
            raise CheckFailed(f"list exited {run.code}: {run.stderr[-500:]}")
        expect_rows(table_rows(run), everyone, "table")

    def json_ok(run: Run) -> None:
        if run.code != 0:
            raise CheckFailed(f"list -o json exited {run.code}: {run.stderr[-500:]}")
        expect_rows(json_rows(run), everyone, "-o json")

    first = fleet.names[0]

    def one_ok(run: Run) -> None:
        if run.code != 0:
            raise CheckFailed(f"list --context {first} exited {run.code}: {run.stderr[-500:]}")
        lines = [line for line in run.stdout.splitlines() if line.strip()]
        if len(lines) < settings.n + 1:
            raise CheckFailed(f"list --context {first}: {len(lines) - 1} rows")

    log(f"timing `kubectl lapse list --context {first} -A` (one cluster), {settings.runs} runs")
    results["list_one_cluster"] = time_list(
        fleet, settings.runs, (), one_ok, scope=("--context", first)
    )
    log(f"  {summary(results['list_one_cluster'])}")
    log(f"timing `kubectl lapse list --all-contexts -A`, {settings.runs} runs")
    results["list_table"] = time_list(fleet, settings.runs, (), table_ok)
    log(f"  {summary(results['list_table'])}")
    results["list_json"] = time_list(fleet, settings.runs, ("-o", "json"), json_ok)
    log(f"  -o json: {summary(results['list_json'])}")

    others = {name: settings.n for name in fleet.names if name != DOWN}

    def down_ok(run: Run) -> None:
        if run.code != 5:
            raise CheckFailed(f"with {DOWN} down, list exited {run.code} (wanted 5)")
        if f"warning: context {DOWN}: unreachable" not in run.stderr:
            raise CheckFailed(f"with {DOWN} down, stderr did not name it: {run.stderr[-500:]}")
        expect_rows(table_rows(run), others, f"{DOWN} down")

    log(f"stopping {DOWN}'s API server")
    began = time.monotonic()
    fleet.stop(DOWN)
    results["stop_s"] = round(time.monotonic() - began, 2)
    results["one_down"] = time_list(fleet, settings.down_runs, (), down_ok)
    results["one_down"]["stderr"] = run_list(fleet).stderr.strip().splitlines()[-3:]
    log(f"  {DOWN} down: {summary(results['one_down'])}")
    began = time.monotonic()
    fleet.start(DOWN)
    results["restart_s"] = round(time.monotonic() - began, 2)
    table_ok(run_list(fleet))
    log(f"  {DOWN} back in {results['restart_s']}s; list answers from both again")
    return results


def summary(result: dict[str, Any]) -> str:
    return f"p50 {result['p50_s']}s, p90 {result['p90_s']}s, max {result['max_s']}s"


def print_table(report: dict[str, Any]) -> None:
    n = report["requests_per_cluster"]
    print(f"\nkubectl lapse list --all-contexts -A, {n:,} Active requests per cluster, 2 clusters")
    print(f"{'command':<40} {'runs':>4} {'p50':>8} {'p90':>8} {'max':>8}")
    for key, label in (
        ("list_one_cluster", "list --context east -A (one cluster)"),
        ("list_table", "list --all-contexts -A"),
        ("list_json", "list --all-contexts -A -o json"),
        ("one_down", f"list --all-contexts -A ({DOWN} down)"),
    ):
        row = report[key]
        print(
            f"{label:<40} {row['runs']:>4} {row['p50_s']:>7}s {row['p90_s']:>7}s {row['max_s']:>7}s"
        )


def main() -> int:
    settings = Settings.from_env()

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    if settings.backend == "realk8s" and (settings.kit is None or not settings.kit.exists()):
        log("REALK8S must name the realk8s kit (make bench-fleet REALK8S=...)")
        return 2
    with tempfile.TemporaryDirectory(prefix="lapse-bench-fleet-") as tmp:
        log(f"starting the fleet ({settings.backend})")
        began = time.monotonic()
        try:
            fleet = start_fleet(
                Path(tmp),
                settings.backend,
                kit=settings.kit,
                state_root=settings.state_root,
            )
        except Exception as error:
            log(f"the fleet did not start: {error}")
            return 2
        started = round(time.monotonic() - began, 1)
        log(f"  up in {started}s: {', '.join(fleet.names)}, an operator on each")
        try:
            results = bench(fleet, settings, log)
        except CheckFailed as failure:
            log(f"FAILED: {failure}")
            return 1
        finally:
            fleet.shutdown()
    report = {
        "backend": settings.backend,
        "clusters": 2,
        "requests_per_cluster": settings.n,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "fleet_start_s": started,
        **results,
    }
    settings.out.mkdir(parents=True, exist_ok=True)
    path = settings.out / "fleet.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    log(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
