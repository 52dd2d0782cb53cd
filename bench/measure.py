"""The benchmark's phases for one size N, against a fresh operator and a fresh local API (or a
cluster a kubeconfig names, cleaned before and after: see `bench.backend`).

1. Steady grants: N requests at a steady rate over several namespaces, with durations chosen so
   that all N are active at once after the last is granted (grant latency, idle RSS and CPU).
2. Expiry: the N grants lapse, staggered; the revocation lag of every one is measured.
3. Throughput: N more requests as fast as the API admits them (grants per second).
4. Restart: the operator is killed with those N grants active; a share of them expires while it
   is down; the time from its restart until every overdue binding is gone is measured.

All times are wall-clock seconds of this machine, which the operator and the API share.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import admission
from bench.backend import LOCAL, Backend, LocalBackend
from bench.cluster import CLOCK_TICKS, Operator, usage
from bench.install import GROUP, POLICY, ROLE
from bench.kube import ApiError, Kube
from bench.requests import RequestCount, count_repeated_deletes, count_requests
from bench.watch import Binding, BindingWatch, Key
from bench.wave import Wave, measure_wave
from bench.windows import measure_windows

logger = logging.getLogger(__name__)

USERS = 50
# How much weight (in seconds of observation) the expected rate has in the burst's estimate.
PRIOR_SECONDS = 2.0


@dataclass(frozen=True)
class Config:
    n: int
    rate: float = 50.0  # requests per second in the steady phase
    namespaces: int = 10
    hold: float = 30.0  # seconds all N grants stay active together after the last grant
    # The steady grants' expiries are planned as if creating them took `slack` times the
    # nominal window: durations cannot be extended later, and a machine that cannot keep up
    # with `rate` must still reach all N grants active at once.
    slack: float = 2.0
    spread: float | None = None  # seconds over which expiries are staggered (default W/2)
    concurrency: int = 32  # requests in flight in the throughput phase
    overdue_share: float = 0.5  # of the throughput grants, the share that lapses while down
    margin: float = 10.0  # seconds between the last throughput grant and the first overdue
    windows: int = 100  # scheduled starts and hand-overs measured (0: none)
    wave: bool = False  # N more grants expiring at one instant (bench.wave), before phase 1
    seed: int = 7

    @property
    def window(self) -> float:
        return self.n / self.rate

    @property
    def expiry_spread(self) -> float:
        return self.spread if self.spread is not None else max(10.0, self.window / 2)

    @property
    def after_restart_spread(self) -> float:
        """Seconds over which the burst grants still active after the restart lapse: as many
        a second as in phase 2's wave."""
        return self.expiry_spread * (1 - self.overdue_share)


@dataclass
class Sent:
    """One request as this side saw it: when its create was sent and answered."""

    key: Key
    sent: float = 0.0
    answered: float = 0.0
    error: str | None = None


@dataclass
class PhaseResult:
    sent: list[Sent] = field(default_factory=list)
    bindings: dict[Key, Binding] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used (all cores), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


class CpuMeter:
    """CPU used per phase by the operator, the local API and the benchmark itself: on a small
    machine they share the cores, and a figure is only as good as who was busy during it.

    A cluster's API server is no process of this run (`api_pid` gives None): its share is then
    not measured (NaN, never 0), and where it runs on this machine it is inside `others`."""

    def __init__(self, api_pid: Callable[[], int | None], operator: Operator) -> None:
        self._api_pid = api_pid
        self._operator = operator
        self._mark: tuple[float, dict[str, float]] | None = None
        self.phases: dict[str, dict[str, float]] = {}

    def _now(self) -> dict[str, float]:
        process = self._operator.process
        pids = {"operator": process.pid if process else None, "kubeapi": self._api_pid()}
        found = {name: usage(pid).cpu_seconds for name, pid in pids.items() if pid is not None}
        found["bench"] = usage(os.getpid()).cpu_seconds
        found["machine"] = machine_busy_seconds()
        return found

    def start(self) -> None:
        self._mark = (time.monotonic(), self._now())

    def stop(self, phase: str) -> None:
        if self._mark is None:
            return
        started, before = self._mark
        after, wall = self._now(), time.monotonic() - started
        self.phases[phase] = {
            f"{name}_percent": round(100 * (after[name] - before[name]) / wall, 1)
            for name in after
            if name in before and wall > 0
        }
        ours = sum(after[k] - before[k] for k in ("operator", "kubeapi", "bench") if k in before)
        # What the rest of the machine used meanwhile: other work competing for the cores.
        self.phases[phase]["others_percent"] = round(
            100 * (after["machine"] - before["machine"] - ours) / wall, 1
        )
        if "kubeapi" not in after:
            self.phases[phase]["kubeapi_percent"] = math.nan
        self.phases[phase]["wall_s"] = round(wall, 2)
        self._mark = None


@dataclass
class RunResult:
    config: Config
    steady: PhaseResult
    burst: PhaseResult
    idle: dict[str, float]
    peak_active: int
    kill_at: float
    restart_at: float
    ready_at: float
    overdue: list[Key]
    metrics_text: str
    watch_events: int
    watch_reconnects: int
    notes: list[str]
    cpu: dict[str, dict[str, float]]
    # Per kind (bench.admission.KINDS): p50/p99 without Lapse's webhooks, with, and added (ms).
    admission: dict[str, dict[str, float]]
    windows: dict[str, float] = field(default_factory=dict)
    wave: Wave | None = None
    # What the restart phase planned and had: without them its figure would measure nothing.
    planned_overdue: int = 0
    live_at_kill: int = 0
    # Which cluster ran it: "local API", or "kube-apiserver v1.36.2" from the server's /version.
    backend: str = LOCAL
    # The operator's requests over the steady grants' lives, from the audit log.
    requests: RequestCount | None = None
    # The operator's binding deletes over the whole run that found the binding gone already.
    repeated_deletes: int | None = None


def checks_waiting(operator: Operator) -> float:
    """Ended grants whose end is not yet written or whose check with the API server has not
    run yet (the operator's gauges)."""
    waiting = 0.0
    for line in operator.metrics_text().splitlines():
        if line.startswith(("lapse_revocation_checks_waiting ", "lapse_ends_recording ")):
            waiting += float(line.split()[1])
    return waiting


def duration_text(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


def request_manifest(key: Key, duration: str) -> dict[str, Any]:
    namespace, name = key
    return {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "role": {"kind": "ClusterRole", "name": ROLE},
            "duration": duration,
            "reason": "Benchmark of Lapse: grant latency and revocation lag.",
        },
    }


def user_of(index: int) -> str:
    return f"bench-dev-{index % USERS}"


async def wait_webhook(kube: Kube, operator: Operator, namespace: str, within: float) -> None:
    """Until the admission webhook stamps the requester: before that no request is admitted."""
    probe = request_manifest((namespace, "bench-readiness-probe"), "1m")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        operator.check_alive()
        try:
            created = await kube.call(
                "POST",
                f"/apis/lapse.dev/v1alpha1/namespaces/{namespace}/accessrequests",
                probe,
                params={"dryRun": "All"},
                as_user=user_of(0),
                as_groups=(GROUP,),
            )
            if ((created.get("spec") or {}).get("requester") or {}).get("username"):
                return
        except (ApiError, OSError):
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the operator's admission webhook did not answer within {within}s")


async def create_request(kube: Kube, sent: Sent, index: int, duration: str) -> None:
    """Create one request as its (impersonated) requester; retried on transient failures."""
    sent.sent = time.time()
    manifest = request_manifest(sent.key, duration)
    error: str | None = None
    for attempt in range(5):
        try:
            await kube.create(manifest, as_user=user_of(index), as_groups=(GROUP,))
            error = None
            break
        except ApiError as failure:
            if failure.status == 409 and attempt > 0:
                error = None  # an earlier attempt did get through
                break
            error = str(failure)
            if failure.status < 500 and failure.status != 429:
                break
        except (OSError, TimeoutError) as failure:
            error = repr(failure)
        await asyncio.sleep(0.2 * (attempt + 1))
    sent.error = error
    sent.answered = time.time()


async def wait_until(
    what: str,
    done: Callable[[], bool],
    within: float,
    operator: Operator | None = None,
    progress: Callable[[], str] | None = None,
) -> bool:
    deadline = time.monotonic() + within
    last_report = time.monotonic()
    while not done():
        if operator is not None:
            operator.check_alive()
        if time.monotonic() > deadline:
            logger.warning("Timed out after %.0fs waiting for %s.", within, what)
            return False
        if progress is not None and time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            logger.info("  … waiting for %s: %s", what, progress())
        await asyncio.sleep(0.1)
    return True


def count_done(
    watch: BindingWatch, base: tuple[int, int], n: int, index: int
) -> Callable[[], bool]:
    """Cheap progress test: `n` more bindings added (index 0) or deleted (index 1)."""
    return lambda: watch.counts()[index] - base[index] >= n


async def steady_phase(
    kube: Kube, watch: BindingWatch, config: Config, namespaces: list[str]
) -> tuple[PhaseResult, float]:
    """N requests at `rate`; returns the phase and the wall-clock time of the first expiry."""
    rng = random.Random(config.seed)
    result = PhaseResult()
    start = time.time() + 0.5
    first_expiry = start + config.slack * config.window + config.hold
    tasks: list[asyncio.Task[None]] = []
    result.started = start
    for i in range(config.n):
        key = (namespaces[i % len(namespaces)], f"steady-{i:05d}")
        sent = Sent(key)
        result.sent.append(sent)
        due = start + i / config.rate
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        # Durations are whole seconds and the grant starts when the operator acts, so each
        # expiry lands within a second after its target: staggered over the spread.
        target = first_expiry + rng.uniform(0, config.expiry_spread)
        duration = duration_text(target - time.time())
        tasks.append(asyncio.create_task(create_request(kube, sent, i, duration)))
    await asyncio.gather(*tasks)
    result.finished = time.time()
    return result, first_expiry


async def burst_phase(
    kube: Kube, watch: BindingWatch, config: Config, namespaces: list[str], downtime: float
) -> tuple[PhaseResult, list[Key]]:
    """N requests as fast as the API admits them, `concurrency` in flight.

    Every other request is short: it is meant to lapse while the operator is down. Its duration
    is chosen when it is sent, from the rate observed so far, so that all short ones lapse
    shortly after the last grant; the rest (sent first) lapse after the restart, staggered at
    the rate of phase 2's wave (`after_restart_spread`): what is measured is a restarted
    operator keeping the deadlines of an ordinary wave while it catches up, not a second,
    denser wave made by every long grant being planned to lapse at the same predicted moment.
    """
    result = PhaseResult()
    short: list[Key] = []
    rng = random.Random(config.seed + 1)
    queue: asyncio.Queue[int] = asyncio.Queue()
    share_every = max(1, round(1 / config.overdue_share)) if config.overdue_share > 0 else 0
    # The long ones first: a pessimistic early estimate only makes them last longer, and the
    # short ones, sent last, are planned from the rates of a burst well under way, so they
    # all lapse close together and the operator is down no longer than it must be.
    for i in sorted(range(config.n), key=lambda i: bool(share_every and i % share_every == 0)):
        queue.put_nowait(i)
    result.sent = [
        Sent((namespaces[i % len(namespaces)], f"burst-{i:05d}")) for i in range(config.n)
    ]
    result.started = time.time()
    base_added = watch.counts()[0]
    first_grant: float | None = None
    done = 0

    async def worker() -> None:
        nonlocal done, first_grant
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            # The rates so far, smoothed towards the steady phase's rate while few are done,
            # predict when the last grant will be made: the slower of creates and grants
            # (grants trail the creates when the operator is the bottleneck), so no short
            # grant lapses before the operator is killed.
            now = time.time()
            created = (done + PRIOR_SECONDS * config.rate) / (now - result.started + PRIOR_SECONDS)
            predicted_end = result.started + config.n / created
            granted = watch.counts()[0] - base_added
            if granted and first_grant is None:
                first_grant = now
            if first_grant is not None:
                rate = (granted + PRIOR_SECONDS * config.rate) / (now - first_grant + PRIOR_SECONDS)
                predicted_end = max(predicted_end, first_grant + config.n / rate)
            lapse_at = max(predicted_end, time.time()) + config.margin
            if share_every and i % share_every == 0:
                short.append(result.sent[i].key)
            else:
                lapse_at += downtime + config.hold + rng.uniform(0, config.after_restart_spread)
            await create_request(kube, result.sent[i], i, duration_text(lapse_at - time.time()))
            done += 1

    await asyncio.gather(*(worker() for _ in range(config.concurrency)))
    result.finished = time.time()
    return result, short


async def run(
    config: Config,
    workdir: Path,
    log: Callable[[str], None],
    *,
    backend: Backend | None = None,
) -> RunResult:
    """One complete benchmark for size N; every process it starts is stopped before it returns,
    and on a cluster everything it made is deleted again (see `bench.backend`)."""
    namespaces = [f"bench-{i}" for i in range(config.namespaces)]
    target = backend or LocalBackend(workdir)
    credentials = target.start()
    log(f"{target.label} at {credentials.server}")
    operator = Operator(workdir / "operator", target.kubeconfig)
    kube = Kube(credentials, connections=max(64, config.concurrency * 2))
    watch = BindingWatch(credentials, namespaces)
    notes: list[str] = []
    try:
        await target.install(kube, namespaces, log)
        watch.start()
        log(
            f"admission without Lapse: {admission.COUNT} creates of each of "
            f"{len(admission.KINDS)} kinds"
        )
        without = await admission.without_lapse(kube, namespaces[0])
        run_from = time.time()
        operator.start()
        operator.wait_metrics()
        await wait_webhook(kube, operator, namespaces[0], within=120)
        log(f"operator up (pid {operator.pid}); policy {POLICY} covers {len(namespaces)} ns")
        webhooks = await admission.with_lapse(kube, namespaces[0], without)
        log(
            "  Lapse's webhooks add (p50, ms): "
            + ", ".join(f"{k} {v['added_p50_ms']:.2f}" for k, v in webhooks.items())
        )
        windows: dict[str, float] = {}
        if config.windows:
            log(f"scheduled starts and hand-overs: {config.windows} of each")
            windows = await measure_windows(kube, watch, namespaces[-1], config.windows)
            log(
                f"  start lag p99 {windows['start_lag_p99_s']:.3f} s, hand-over lag p99 "
                f"{windows['handover_lag_p99_s']:.3f} s, gaps {windows['gaps']:.0f}"
            )
        wave = None
        if config.wave:
            log(f"revocation capacity: {config.n:,} grants expiring at one instant")
            wave = await measure_wave(kube, watch, namespaces, config.n, log)

        # 1. Steady grants, then all N active at once.
        log(f"phase 1: {config.n} requests at {config.rate:g}/s over {config.window:.0f}s")
        counted_from = time.time()
        base = watch.counts()
        cpu = CpuMeter(target.api_pid, operator)
        cpu.start()
        steady, first_expiry = await steady_phase(kube, watch, config, namespaces)
        failed = [s for s in steady.sent if s.error]
        if failed:
            notes.append(f"{len(failed)} steady creates failed, e.g. {failed[0].error}")
        granted_all = await wait_until(
            "every steady grant",
            count_done(watch, base, config.n - len(failed), 0),
            within=max(60.0, first_expiry - time.time() - 1),
            operator=operator,
            progress=lambda: f"{watch.counts()[0] - base[0]}/{config.n} granted",
        )
        if not granted_all:
            notes.append("not every steady request was granted before the first expiry")
        cpu.stop("steady grants")
        added, deleted = watch.counts()
        peak_active = added - deleted
        log(f"  {peak_active} grants active at once; idle for {first_expiry - time.time():.0f}s")

        # 5. Idle RSS and CPU with N active grants: the quiet time before the first expiry.
        idle_window = first_expiry - time.time() - 1.0
        idle: dict[str, float] = {}
        if idle_window > 2:
            await asyncio.sleep(min(2.0, idle_window / 4))
            before, t0 = usage(operator.pid), time.monotonic()
            await asyncio.sleep(max(1.0, first_expiry - time.time() - 1.0))
            after, t1 = usage(operator.pid), time.monotonic()
            idle = {
                "rss_mb": after.rss_bytes / 2**20,
                "cpu_percent": 100 * (after.cpu_seconds - before.cpu_seconds) / (t1 - t0),
                "cpu_window_s": t1 - t0,
            }
        else:
            notes.append("no idle window before the first expiry: RSS/CPU not sampled")
        log(
            f"  operator idle: RSS {idle.get('rss_mb', float('nan')):.0f} MB, "
            f"CPU {idle.get('cpu_percent', float('nan')):.1f}%"
        )

        # 2. Let them lapse.
        log(f"phase 2: {config.n} grants lapse over {config.expiry_spread:.0f}s")
        last_expiry = first_expiry + config.expiry_spread + 1
        cpu.start()
        await wait_until(
            "every steady grant to lapse",
            count_done(watch, base, config.n - len(failed), 1),
            within=max(60.0, last_expiry - time.time() + 120),
            operator=operator,
            progress=lambda: f"{watch.counts()[1] - base[1]}/{config.n} revoked",
        )
        cpu.stop("expiry")
        snapshot = watch.snapshot()
        steady.bindings = {s.key: b for s in steady.sent if (b := snapshot.get(s.key))}
        # Each grant's life ends when its end was written and checked with the API server:
        # the count of requests waits for the last record and the last check (deferred while
        # revocations ran, never dropped).
        checked = await wait_until(
            "every steady grant's end to be written and checked",
            lambda: checks_waiting(operator) == 0,
            within=300,
            operator=operator,
        )
        requests = None
        if target.audit_log is not None and target.audit_log.is_file():
            requests = count_requests(
                target.audit_log, counted_from, time.time(), len(steady.sent) - len(failed)
            )
            requests = dataclasses.replace(requests, complete=checked)
            log(
                f"  operator requests: {requests.total} for {requests.grants} grants, "
                f"{requests.per_grant:.2f} a grant"
            )
        else:
            notes.append("no audit log of the API server (BENCH_AUDIT_LOG): requests not counted")
        metrics_text = operator.metrics_text()

        # 3. Throughput, and 4. restart with a share overdue.
        downtime = config.margin
        log(f"phase 3: {config.n} requests, {config.concurrency} in flight")
        base = watch.counts()
        cpu.start()
        burst, short = await burst_phase(kube, watch, config, namespaces, downtime)
        failed = [s for s in burst.sent if s.error]
        if failed:
            notes.append(f"{len(failed)} burst creates failed, e.g. {failed[0].error}")
        await wait_until(
            "every burst grant",
            count_done(watch, base, config.n - len(failed), 0),
            within=300,
            operator=operator,
            progress=lambda: f"{watch.counts()[0] - base[0]}/{config.n} granted",
        )
        cpu.stop("burst grants")
        snapshot = watch.snapshot()
        live = [s.key for s in burst.sent if s.key in snapshot and snapshot[s.key].deleted is None]
        log(f"phase 4: SIGKILL the operator with {len(live)} grants active")
        operator.kill()
        kill_at = time.time()
        short_expiries = [
            b.expires_at for k in short if (b := snapshot.get(k)) and b.expires_at is not None
        ]
        restart_due = max([*short_expiries, kill_at]) + 1.0
        log(f"  down for {restart_due - kill_at:.0f}s while {len(short)} grants lapse")
        await asyncio.sleep(max(0.0, restart_due - time.time()))
        snapshot = watch.snapshot()
        restart_at = operator.start()
        cpu.start()
        overdue = [
            k
            for k, b in snapshot.items()
            if k[1].startswith("burst-")
            and b.deleted is None
            and b.expires_at is not None
            and b.expires_at <= restart_at
        ]
        log(f"  restarted with {len(overdue)} overdue bindings")
        operator.wait_metrics()
        ready_at = time.time()
        remaining = set(overdue)

        def overdue_gone() -> bool:
            seen = watch.snapshot()
            remaining.difference_update(
                [k for k in remaining if (b := seen.get(k)) is not None and b.deleted is not None]
            )
            return not remaining

        await wait_until(
            "every overdue binding to go",
            overdue_gone,
            within=300,
            operator=operator,
        )
        cpu.stop("restart recovery")
        log("  waiting for the remaining burst grants to lapse")
        await wait_until(
            "every burst grant to lapse",
            count_done(watch, base, config.n - len(failed), 1),
            within=downtime + config.hold + config.after_restart_spread + config.margin + 300,
            operator=operator,
            progress=lambda: f"{watch.counts()[1] - base[1]}/{config.n} revoked",
        )
        snapshot = watch.snapshot()
        burst.bindings = {s.key: b for s in burst.sent if (b := snapshot.get(s.key))}
        repeated_deletes = None
        if target.audit_log is not None:
            repeated_deletes = count_repeated_deletes(target.audit_log, run_from, time.time())
            log(f"  binding deletes that found the binding gone: {repeated_deletes}")
        return RunResult(
            config=config,
            steady=steady,
            burst=burst,
            idle=idle,
            peak_active=peak_active,
            kill_at=kill_at,
            restart_at=restart_at,
            ready_at=ready_at,
            overdue=overdue,
            metrics_text=metrics_text,
            watch_events=watch.events,
            watch_reconnects=watch.reconnects,
            notes=notes,
            cpu=cpu.phases,
            admission=webhooks,
            windows=windows,
            wave=wave,
            planned_overdue=len(short),
            live_at_kill=len(live),
            backend=target.label,
            requests=requests,
            repeated_deletes=repeated_deletes,
        )
    finally:
        watch.stop()
        operator.stop()
        try:
            await target.clean(kube, log)
        finally:
            await kube.close()
            target.stop()
