"""`make bench` (`python -m bench.run`): measure that Lapse's access ends on the second.

For each size in `BENCH_N` it starts a fresh operator and a fresh local Kubernetes API (or uses
the cluster `BENCH_KUBECONFIG` names: see `bench.backend`), runs the phases in `bench.measure`,
prints a table, and writes `results.json`, the raw lag samples and
`revocation_lag.png` to `BENCH_OUTPUT_DIR` (default: this directory). Settings come from the
environment so `make bench BENCH_N=1000` and CI can pick them without flags; see README.md.

Exit status: 0 when every grant was made and every one revoked (targets are reported, not
enforced), 1 otherwise, 2 on a setup failure.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from bench import backend, cluster, measure, plaingrant, plot, report, sidebyside
from bench.cluster import Credentials
from bench.kube import Kube
from bench.wave import Wave

HERE = Path(__file__).resolve().parent


def _env_float(name: str, default: float | None) -> float | None:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def configs_from_env() -> list[measure.Config]:
    sizes = [int(s) for s in os.environ.get("BENCH_N", "1000,10000").split(",") if s.strip()]
    base = measure.Config(n=0)
    configs = []
    for n in sizes:
        configs.append(
            measure.Config(
                n=n,
                rate=_env_float("BENCH_RATE", base.rate) or base.rate,
                namespaces=int(os.environ.get("BENCH_NAMESPACES", base.namespaces)),
                hold=_env_float("BENCH_HOLD", base.hold) or 0.0,
                slack=_env_float("BENCH_SLACK", base.slack) or base.slack,
                spread=_env_float("BENCH_SPREAD", None),
                concurrency=int(os.environ.get("BENCH_CONCURRENCY", base.concurrency)),
                overdue_share=_env_float("BENCH_OVERDUE_SHARE", base.overdue_share) or 0.0,
                margin=_env_float("BENCH_MARGIN", base.margin) or base.margin,
                windows=int(os.environ.get("BENCH_WINDOWS", base.windows)),
                # The side by side's ratio needs Lapse's rate with every delete due at once.
                wave=bool(
                    os.environ.get("BENCH_SIDEBYSIDE", "").strip()
                    or os.environ.get("BENCH_WAVE", "").strip()
                ),
            )
        )
    return configs


def _terminate_as_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same path as Ctrl-C, so every started process is stopped; a second
    # signal must not interrupt that clean-up halfway and leave processes behind.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


async def main_async(out: Path, workroot: Path, choice: backend.Choice) -> int:
    host = report.machine()
    print(
        f"machine: {host['cpu']}, {host['cores']} cores, {host['memory_gib']} GiB, "
        f"Python {host['python']}",
        flush=True,
    )
    if choice.kubeconfig is not None:
        print(f"cluster: {choice.kubeconfig} (named by {choice.named_by})", flush=True)
    entries, all_figures, tables, status = [], [], [], 0

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    for config in configs_from_env():
        workdir = workroot / f"n{config.n}"
        log(f"N = {config.n:,}: workdir {workdir}")
        target = backend.open_backend(choice, workdir)
        result = await measure.run(config, workdir, log, backend=target)
        figures = report.compute(result)
        text = report.table(figures, result, host)
        print("\n" + text + "\n", flush=True)
        tables.append(text)
        entries.append(report.to_json(figures, result, host))
        all_figures.append(figures)
        if figures.missing_grants or figures.missing_revocations:
            status = 1
        for what in figures.unmeasured:
            print(f"NOT MEASURED: {what}", flush=True)
            status = 1
        side = os.environ.get("BENCH_SIDEBYSIDE", "").strip()
        if side and choice.kubeconfig is not None:
            # On the same API server, in the same run: what a plain client and kube-janitor do
            # with the same number of bindings (bench.sidebyside).
            entries[-1]["side_by_side"] = await side_by_side(
                choice.kubeconfig, workdir, figures, result.wave, log
            )
        # Written after every size, so a long run interrupted later keeps what it measured.
        report.write_results(out / "results.json", entries, host)
        samples = plot.write_samples(out / "revocation_lag_samples.json", all_figures)
        plot.plot(out / "revocation_lag.png", samples, host)
    print(f"wrote {out / 'results.json'} and {out / 'revocation_lag.png'}")
    return status


async def side_by_side(
    kubeconfig: Path,
    workdir: Path,
    figures: report.Figures,
    wave: Wave | None,
    log: Callable[[str], None],
) -> dict[str, object]:
    scratch = workdir / "sidebyside-credentials"
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    kube = Kube(Credentials.from_kubeconfig(kubeconfig, scratch=scratch), connections=64)
    try:
        log(f"side by side: a plain client and kube-janitor, N = {figures.n:,}")
        result = await sidebyside.sidebyside(kube, kubeconfig, figures.n, log=log)
        try:
            grants = await plaingrant.plain_grant_rate(kube, figures.n, log=log)
        finally:
            await sidebyside.clean(kube, log)
    finally:
        await kube.close()
        shutil.rmtree(scratch, ignore_errors=True)
    # Lapse's rate with every delete due at one instant (bench.wave); else the steady wave's,
    # which the spread of its expiries bounds.
    lapse_rate = wave.revocations_per_s if wave is not None else figures.wave_revocations_per_s
    text = sidebyside.lines(result.plain, result.janitor, result.backend, lapse_rate)
    print("\n" + "\n".join(text) + "\n", flush=True)
    share = sidebyside.ratio(lapse_rate, result.plain.deletes_per_s)
    grant_share = sidebyside.ratio(figures.grants_per_s, grants.grants_per_s)
    print(
        f"plain grants (the same five requests a grant makes, no webhook, no operator): "
        f"{grants.grants_per_s:.1f}/s ({grants.grants_per_s_middle:.1f} middle 80 %); Lapse's "
        f"burst {figures.grants_per_s:.1f}/s = {grant_share:.2f} of it",
        flush=True,
    )
    return result.to_json() | {
        "plain_grants": grants.to_json(),
        "lapse_burst_grants_per_s": round(figures.grants_per_s, 2),
        "lapse_burst_over_plain_grants": None if math.isnan(grant_share) else round(grant_share, 3),
        "lapse_wave_revocations_per_s": None if math.isnan(lapse_rate) else round(lapse_rate, 2),
        "lapse_over_plain": None if math.isnan(share) else round(share, 3),
        "lapse_revocation_lag_s": figures.revocation_lag.to_json(),
    }


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        choice = backend.choose(os.environ)
    except backend.ChoiceError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    out = Path(os.environ.get("BENCH_OUTPUT_DIR") or HERE)
    out.mkdir(parents=True, exist_ok=True)
    workroot = Path(tempfile.mkdtemp(prefix="lapse-bench-"))
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    signal.signal(signal.SIGINT, _terminate_as_interrupt)
    status = 2
    try:
        status = asyncio.run(main_async(out, workroot, choice))
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        status = 130
    finally:
        cluster.stop_all()
        if status == 0 and not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(workroot, ignore_errors=True)
        else:
            print(f"logs kept in {workroot}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
