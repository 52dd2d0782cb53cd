"""Turning a run's raw timings into the figures Lapse promises: table, results.json and a plot.

Targets are reported next to each figure, never asserted: a slow shared machine should produce
an honest red line, not a failed build.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.admission import COUNT, KINDS
from bench.backend import LOCAL
from bench.measure import RunResult
from bench.requests import RequestCount

# A binding deleted more than this before its expires-at was revoked early, not late (the
# annotation and the watch stamps are both wall clock; this absorbs rounding, nothing more).
EARLY_TOLERANCE_S = 1.0

# (figure, unit, target, how the target compares): the issue's goals for Lapse.
TARGETS: dict[str, tuple[float, str]] = {
    "revocation_lag_s": (0.5, "p99 ≤"),
    "revocation_lag_max_s": (1.0, "max ≤"),
    "grant_latency_s": (0.3, "p99 ≤"),
    "grants_per_s": (100.0, "≥"),
    "rss_mb": (300.0, "≤"),
    "restart_recovery_s": (5.0, "≤"),
    "revocation_lag_after_restart_s": (1.0, "p99 ≤"),
    "requests_per_grant": (10.0, "≤"),
}


def source_version() -> dict[str, Any]:
    """Which Lapse was measured: the commit, and how many files differed from it."""
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "operator", "kubeapi", "crds")
    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "uncommitted_files": len(changed.splitlines()) if changed else 0,
    }


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = float("nan")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = int(line.split()[1]) / 2**20
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    return {
        "cpu": model,
        "cores": cores,
        "memory_gib": round(memory_gib, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


@dataclass(frozen=True)
class Stats:
    count: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    def to_json(self) -> dict[str, float]:
        return {
            "count": self.count,
            "p50": round(self.p50, 4),
            "p95": round(self.p95, 4),
            "p99": round(self.p99, 4),
            "max": round(self.max, 4),
            "mean": round(self.mean, 4),
        }


def quantile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank quantile: a value that was actually observed, never an interpolation."""
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def stats(values: Sequence[float]) -> Stats:
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        nan = float("nan")
        return Stats(0, nan, nan, nan, nan, nan)
    return Stats(
        count=len(ordered),
        p50=quantile(ordered, 0.50),
        p95=quantile(ordered, 0.95),
        p99=quantile(ordered, 0.99),
        max=ordered[-1],
        mean=sum(ordered) / len(ordered),
    )


def histogram_quantile(text: str, name: str, q: float) -> float | None:
    """The upper bound of the bucket holding quantile `q` of a Prometheus histogram."""
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{") and 'kind="AccessRequest"' in line:
            labels, _, value = line.rpartition(" ")
            bound = labels.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(value)))
    if not buckets or buckets[-1][1] == 0:
        return None
    buckets.sort()
    total = buckets[-1][1]
    return next(bound for bound, count in buckets if count >= q * total)


@dataclass
class Figures:
    """Everything one run measured, as plain numbers."""

    n: int
    grant_latency: Stats
    create_rtt: Stats
    revocation_lag: Stats
    burst_grant_latency: Stats
    lag_after_restart: Stats
    restart_per_binding: Stats
    grants_per_s: float
    grants_per_s_middle: float
    steady_create_rate: float
    restart_recovery_s: float
    restart_recovery_from_ready_s: float
    overdue: int
    missing_grants: int
    missing_revocations: int
    revoked_early: int
    lag_samples: list[float]
    lag_expiry_offsets: list[float]
    latency_samples: list[float]
    latency_send_offsets: list[float]
    unmeasured: list[str] = field(default_factory=list)
    # Each grant due after the restart: its lag, and when it fell due after the spawn.
    restart_lag_samples: list[float] = field(default_factory=list)
    restart_due_offsets: list[float] = field(default_factory=list)
    backend: str = LOCAL
    # Steady grants revoked / (last deletion - first expiry): with a short BENCH_SPREAD, how
    # fast Lapse revokes when everything falls due at once (bench.sidebyside compares it).
    wave_revocations_per_s: float = float("nan")


def compute(result: RunResult) -> Figures:
    steady, burst = result.steady, result.burst
    latency, rtt, lag, offsets, sent_offsets = [], [], [], [], []
    missing_grants = missing_revocations = early = 0
    first_expiry = min(
        (b.expires_at for b in steady.bindings.values() if b.expires_at is not None),
        default=0.0,
    )
    for sent in steady.sent:
        rtt.append(sent.answered - sent.sent)
        binding = steady.bindings.get(sent.key)
        if binding is None or binding.added is None:
            missing_grants += 1
            continue
        latency.append(binding.added - sent.sent)
        sent_offsets.append(sent.sent - steady.started)
        if binding.deleted is None or binding.expires_at is None:
            missing_revocations += 1
            continue
        if binding.deleted < binding.expires_at - EARLY_TOLERANCE_S:
            # Access that ended before its time is a different failure from lateness: counted
            # apart, so it neither hides nor flatters the lag.
            early += 1
            continue
        lag.append(binding.deleted - binding.expires_at)
        offsets.append(binding.expires_at - first_expiry)

    deletions = [b.deleted for b in steady.bindings.values() if b.deleted is not None]
    wave_span = max(deletions, default=0.0) - first_expiry
    wave_rate = len(deletions) / wave_span if deletions and wave_span > 0 else float("nan")

    answered = [s.answered for s in steady.sent if s.answered]
    first_sent = min((s.sent for s in steady.sent), default=0.0)
    span = max(answered, default=0.0) - first_sent
    steady_rate = len(answered) / span if answered and span > 0 else float("nan")

    overdue = set(result.overdue)
    burst_latency, added, after_restart, per_binding, due_after = [], [], [], [], []
    for sent in burst.sent:
        binding = burst.bindings.get(sent.key)
        if binding is None or binding.added is None:
            missing_grants += 1
            continue
        burst_latency.append(binding.added - sent.sent)
        added.append(binding.added)
        if binding.deleted is None or binding.expires_at is None:
            missing_revocations += 1
            continue
        if sent.key in overdue:
            per_binding.append(binding.deleted - result.restart_at)
        elif binding.expires_at > result.restart_at:
            after_restart.append(binding.deleted - binding.expires_at)
            due_after.append(binding.expires_at - result.restart_at)

    grants_per_s = middle = float("nan")
    if added:
        added.sort()
        span = added[-1] - min(s.sent for s in burst.sent)
        grants_per_s = len(added) / span if span > 0 else float("nan")
        # The middle 80% of grants, away from the ramp-up and the tail: the sustained rate.
        lo, hi = int(0.1 * len(added)), max(int(0.9 * len(added)) - 1, 0)
        if hi > lo and added[hi] > added[lo]:
            middle = (hi - lo) / (added[hi] - added[lo])
    recovery = max(per_binding) if per_binding else 0.0
    from_ready = recovery - (result.ready_at - result.restart_at) if per_binding else 0.0
    if len(per_binding) < len(overdue):
        recovery = from_ready = float("inf")
    return Figures(
        n=result.config.n,
        grant_latency=stats(latency),
        create_rtt=stats(rtt),
        revocation_lag=stats(lag),
        burst_grant_latency=stats(burst_latency),
        lag_after_restart=stats(after_restart),
        restart_per_binding=stats(per_binding),
        grants_per_s=grants_per_s,
        grants_per_s_middle=middle,
        steady_create_rate=steady_rate,
        restart_recovery_s=recovery,
        restart_recovery_from_ready_s=from_ready,
        overdue=len(overdue),
        missing_grants=missing_grants,
        missing_revocations=missing_revocations,
        revoked_early=early,
        wave_revocations_per_s=wave_rate,
        unmeasured=unmeasured(result, len(overdue)),
        lag_samples=lag,
        lag_expiry_offsets=offsets,
        latency_samples=latency,
        latency_send_offsets=sent_offsets,
        restart_lag_samples=after_restart,
        restart_due_offsets=due_after,
        backend=result.backend,
    )


def unmeasured(result: RunResult, overdue: int) -> list[str]:
    """What a phase claims but could not measure: a figure without its subject is no figure."""
    found: list[str] = []
    config = result.config
    if result.live_at_kill < 0.9 * config.n:
        found.append(
            f"restart: only {result.live_at_kill:,} of {config.n:,} burst grants were active at "
            "the SIGKILL (the burst ran past their durations)"
        )
    if overdue == 0 or overdue < 0.9 * result.planned_overdue:
        found.append(
            f"restart: {overdue:,} overdue bindings at the restart, {result.planned_overdue:,} "
            "planned"
        )
    return found


def verdict(figure: str, value: float) -> str:
    target, how = TARGETS[figure]
    if math.isnan(value):
        return "n/a"
    ok = value >= target if how == "≥" else value <= target
    return "met" if ok else "MISSED"


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "never"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"


def requests_lines(requests: RequestCount | None) -> list[str]:
    """The operator's API requests per grant, from the audit log, and what they were."""
    if requests is None:
        return [f"{'API requests per grant (audit log)':<38}{'-':>9}  NOT MEASURED (no audit log)"]
    complete = "" if requests.complete else " (some checks had not run: a lower bound)"
    calls = ", ".join(
        f"{name} {count / requests.grants:.2f}"
        for name, count in sorted(requests.by_call.items(), key=lambda kv: -kv[1])[:10]
    )
    return [
        f"{'API requests per grant (audit log)':<38}{_fmt(requests.per_grant):>9}  target ≤ 10: "
        f"{verdict('requests_per_grant', requests.per_grant)}{complete}",
        f"  {requests.total:,} requests for {requests.grants:,} grants: {calls}",
    ]


def table(figures: Figures, result: RunResult, host: dict[str, Any]) -> str:
    config = result.config
    version = source_version()
    lines = [
        f"Lapse benchmark, N = {figures.n:,} ({config.namespaces} namespaces, "
        f"steady {config.rate:g}/s offered, {figures.steady_create_rate:.1f}/s admitted; "
        f"burst {config.concurrency} in flight)",
        f"machine: {host['cpu']}, {host['cores']} cores, {host['memory_gib']} GiB, "
        f"Python {host['python']}, {host['platform']}",
        f"source: commit {version['commit']} with {version['uncommitted_files']} uncommitted "
        "file(s) under operator/, kubeapi/, crds/",
        f"backend: {result.backend}",
        f"peak active grants: {result.peak_active:,}; overdue at restart: {figures.overdue:,}; "
        f"missing grants: {figures.missing_grants}; missing revocations: "
        f"{figures.missing_revocations}; steady grants revoked before their expiry: "
        f"{figures.revoked_early}",
        "",
        f"{'figure':<38}{'n':>7}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  target",
    ]

    def row(label: str, s: Stats, target: str = "") -> None:
        lines.append(
            f"{label:<38}{s.count:>7}{_fmt(s.p50):>9}{_fmt(s.p95):>9}{_fmt(s.p99):>9}"
            f"{_fmt(s.max):>9}  {target}"
        )

    lag_v = verdict("revocation_lag_s", figures.revocation_lag.p99)
    max_v = verdict("revocation_lag_max_s", figures.revocation_lag.max)
    lat_v = verdict("grant_latency_s", figures.grant_latency.p99)
    row("revocation lag (s)", figures.revocation_lag, f"p99 ≤ 0.5 s: {lag_v}; max ≤ 1 s: {max_v}")
    row("grant latency, steady (s)", figures.grant_latency, f"p99 ≤ 0.3 s: {lat_v}")
    row("  of which create round trip (s)", figures.create_rtt)
    row("grant latency, burst (s)", figures.burst_grant_latency)
    row("overdue gone, after restart spawn (s)", figures.restart_per_binding)
    row(
        "revocation lag after restart (s)",
        figures.lag_after_restart,
        "p99 ≤ 1 s: " + verdict("revocation_lag_after_restart_s", figures.lag_after_restart.p99),
    )
    rss = result.idle.get("rss_mb", float("nan"))
    cpu = result.idle.get("cpu_percent", float("nan"))
    lines += [
        "",
        f"{'grant throughput (grants/s)':<38}{_fmt(figures.grants_per_s):>9} overall, "
        f"{_fmt(figures.grants_per_s_middle)} middle 80%  "
        f"target ≥ 100: {verdict('grants_per_s', figures.grants_per_s)}",
        f"{'restart: every overdue binding gone':<38}{_fmt(figures.restart_recovery_s):>9} s "
        f"after spawn ({_fmt(figures.restart_recovery_from_ready_s)} s after ready)  "
        f"target ≤ 5 s: "
        + (
            "NOT MEASURED"
            if figures.unmeasured
            else verdict("restart_recovery_s", figures.restart_recovery_s)
        ),
        f"{'operator RSS at idle, N active (MB)':<38}{_fmt(rss):>9}  "
        f"target ≤ 300: {verdict('rss_mb', rss)}",
        f"{'operator CPU at idle, N active (%)':<38}{_fmt(cpu):>9}",
        f"{'revocations/s in the wave':<38}{_fmt(figures.wave_revocations_per_s):>9}  "
        f"({config.n:,} grants lapsing over {config.expiry_spread:g} s)",
    ]
    lines += requests_lines(result.requests)
    lag99 = histogram_quantile(result.metrics_text, "lapse_revocation_lag_seconds", 0.99)
    lat99 = histogram_quantile(result.metrics_text, "lapse_grant_latency_seconds", 0.99)
    lines.append(
        f"cross-check, operator's own histograms (bucket bound of p99): revocation lag ≤ "
        f"{lag99} s, grant latency ≤ {lat99} s"
    )
    for phase, shares in result.cpu.items():
        busy = ", ".join(
            f"{k.removesuffix('_percent')} " + ("not measured" if math.isnan(v) else f"{v:g}%")
            for k, v in shares.items()
            if k.endswith("_percent")
        )
        lines.append(f"CPU during {phase} ({shares.get('wall_s', 0):g} s): {busy}")
    if any(math.isnan(p.get("kubeapi_percent", 0.0)) for p in result.cpu.values()):
        lines.append(
            "(the cluster's API server is no process of this run; where it runs on this "
            "machine, it and etcd are in 'others')"
        )
    lines.extend(admission_table(result.admission))
    windows = result.windows
    if windows:
        nan = float("nan")
        lines.append(
            f"{'scheduled start lag p50 / p99 / max (s)':<38}"
            f"{_fmt(windows.get('start_lag_p50_s', nan)):>9} / "
            f"{_fmt(windows.get('start_lag_p99_s', nan))} / "
            f"{_fmt(windows.get('start_lag_max_s', nan))}  "
            f"({windows.get('started', 0):.0f} of {windows.get('count', 0):.0f} bound)"
        )
        lines.append(
            f"{'hand-over lag p50 / p99 / max (s)':<38}"
            f"{_fmt(windows.get('handover_lag_p50_s', nan)):>9} / "
            f"{_fmt(windows.get('handover_lag_p99_s', nan))} / "
            f"{_fmt(windows.get('handover_lag_max_s', nan))}  "
            f"(overlap max {_fmt(windows.get('overlap_max_s', nan))} s, "
            f"gaps {windows.get('gaps', 0):.0f} of {windows.get('handed_over', 0):.0f})"
        )
    wave = result.wave
    if wave is not None:
        lines.append(
            f"{'one-instant wave lag p50 / p99 / max (s)':<38}{_fmt(wave.lag_s.p50):>9} / "
            f"{_fmt(wave.lag_s.p99)} / {_fmt(wave.lag_s.max)}  ({wave.revoked:,} of {wave.n:,} "
            f"revoked, {_fmt(wave.revocations_per_s)}/s, {wave.early} early)"
        )
    lines.extend(f"note: {note}" for note in result.notes)
    return "\n".join(lines)


def admission_table(admission: dict[str, dict[str, float]]) -> list[str]:
    """Per kind Lapse's webhooks see: create latency without them, with them, and the added."""
    if not admission:
        return []
    nan = float("nan")
    lines = [
        f"admission: {COUNT} creates per kind, one at a time, by a caller without a grant, "
        "before and after Lapse registered its webhooks (ms)",
        f"  {'kind':<24}{'Lapse webhook':<29}{'p50 without':>12}{'with':>8}{'added':>8}"
        f"{'p99 without':>13}{'with':>8}{'added':>8}",
    ]
    for kind, webhook in KINDS.items():
        entry = admission.get(kind, {})
        cells = "".join(
            f"{_fmt(entry.get(f'{stage}_{share}_ms', nan)):>{width}}"
            for share in ("p50", "p99")
            for stage, width in (
                ("without_lapse", 12 if share == "p50" else 13),
                ("with_lapse", 8),
                ("added", 8),
            )
        )
        lines.append(f"  {kind:<24}{webhook:<29}{cells}")
    return lines


def to_json(figures: Figures, result: RunResult, host: dict[str, Any]) -> dict[str, Any]:
    config = result.config
    rss = result.idle.get("rss_mb", float("nan"))

    def num(value: float) -> float | None:
        return None if math.isnan(value) or math.isinf(value) else round(value, 4)

    return {
        "n": figures.n,
        "backend": result.backend,
        "revocation_lag_p99_s": num(figures.revocation_lag.p99),
        "grant_latency_p99_s": num(figures.grant_latency.p99),
        "grants_per_s": num(figures.grants_per_s),
        "rss_mb": num(rss),
        "restart_recovery_s": num(figures.restart_recovery_s),
        "revocation_lag_after_restart_p99_s": num(figures.lag_after_restart.p99),
        "wave_revocations_per_s": num(figures.wave_revocations_per_s),
        "requests_per_grant": num(result.requests.per_grant) if result.requests else None,
        "requests": result.requests.to_json() if result.requests else None,
        "repeated_deletes": result.repeated_deletes,
        "cpu_idle_percent": num(result.idle.get("cpu_percent", float("nan"))),
        "peak_active_grants": result.peak_active,
        "grants_made": figures.grant_latency.count + figures.burst_grant_latency.count,
        "grants_expected": 2 * figures.n,
        "missing_grants": figures.missing_grants,
        "missing_revocations": figures.missing_revocations,
        "revoked_before_expiry": figures.revoked_early,
        "overdue_at_restart": figures.overdue,
        "targets_met": {
            "revocation_lag_p99_s": verdict("revocation_lag_s", figures.revocation_lag.p99),
            "grant_latency_p99_s": verdict("grant_latency_s", figures.grant_latency.p99),
            "grants_per_s": verdict("grants_per_s", figures.grants_per_s),
            "rss_mb": verdict("rss_mb", rss),
            "restart_recovery_s": "NOT MEASURED"
            if figures.unmeasured
            else verdict("restart_recovery_s", figures.restart_recovery_s),
            "revocation_lag_after_restart_p99_s": verdict(
                "revocation_lag_after_restart_s", figures.lag_after_restart.p99
            ),
            "requests_per_grant": verdict("requests_per_grant", result.requests.per_grant)
            if result.requests
            else "NOT MEASURED",
        },
        "not_measured": figures.unmeasured,
        "figures": {
            "revocation_lag_s": figures.revocation_lag.to_json(),
            "grant_latency_s": figures.grant_latency.to_json(),
            "create_round_trip_s": figures.create_rtt.to_json(),
            "burst_grant_latency_s": figures.burst_grant_latency.to_json(),
            "overdue_gone_after_restart_s": figures.restart_per_binding.to_json(),
            "revocation_lag_after_restart_s": figures.lag_after_restart.to_json(),
            "grants_per_s_middle_80": num(figures.grants_per_s_middle),
            "restart_recovery_from_ready_s": num(figures.restart_recovery_from_ready_s),
        },
        "operator_histograms_p99_bound_s": {
            "revocation_lag": histogram_quantile(
                result.metrics_text, "lapse_revocation_lag_seconds", 0.99
            ),
            "grant_latency": histogram_quantile(
                result.metrics_text, "lapse_grant_latency_seconds", 0.99
            ),
        },
        "config": {
            "rate_per_s": config.rate,
            "steady_rate_admitted_per_s": _finite(round(figures.steady_create_rate, 2)),
            "slack": config.slack,
            "namespaces": config.namespaces,
            "hold_s": config.hold,
            "expiry_spread_s": config.expiry_spread,
            "concurrency": config.concurrency,
            "overdue_share": config.overdue_share,
        },
        "cpu_percent_by_phase": result.cpu,
        "watch": {"events": result.watch_events, "reconnects": result.watch_reconnects},
        "notes": result.notes,
        "admission_ms": {
            "creates_per_kind": COUNT,
            "control": "configmaps",
            "webhooks": dict(KINDS),
            "by_kind": {
                kind: {k: num(v) for k, v in entry.items()}
                for kind, entry in result.admission.items()
            },
        },
        "windows": {k: num(v) for k, v in result.windows.items()},
        "wave": result.wave.to_json() if result.wave is not None else None,
        "machine": host,
        "source": source_version(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: a figure that could not be measured is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _entry_key(entry: dict[str, Any]) -> tuple[int, str]:
    # Entries written before the backend was recorded all ran against the local API.
    return int(entry.get("n", 0)), str(entry.get("backend") or LOCAL)


def write_results(path: Path, entries: list[dict[str, Any]], host: dict[str, Any]) -> None:
    """Merge into results.json: this run's sizes replace older entries of the same N on the
    same backend."""
    kept: list[dict[str, Any]] = []
    if path.exists():
        try:
            kept = list(json.loads(path.read_text()).get("results", []))
        except (ValueError, AttributeError):
            kept = []
    fresh = {_entry_key(e) for e in entries}
    merged = sorted([e for e in kept if _entry_key(e) not in fresh] + entries, key=_entry_key)
    document = {
        "machine": host,
        "targets": {name: f"{how} {target:g}" for name, (target, how) in TARGETS.items()},
        "results": merged,
    }
    path.write_text(json.dumps(_finite(document), indent=2, allow_nan=False) + "\n")
