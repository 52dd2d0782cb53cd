"""Smoke test of `make bench`: a small run (N = 200) end to end, so a change that breaks the
benchmark is caught in CI rather than on the day someone wants the numbers.

It asserts only that every grant was made, every one revoked, every admission figure measured,
and the results written; the timings themselves depend on the machine and are reported by
`make bench`, never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
N = 200


@pytest.mark.localonly
@pytest.mark.timeout(240)
def test_bench_smoke(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(
        BENCH_N=str(N),
        BENCH_HOLD="4",
        BENCH_SPREAD="4",
        BENCH_MARGIN="4",
        BENCH_WINDOWS="20",
        BENCH_OUTPUT_DIR=str(tmp_path),
        PYTHONUNBUFFERED="1",
    )
    result = subprocess.run(
        [sys.executable, "-m", "bench.run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    output = f"stdout:\n{result.stdout[-6000:]}\nstderr:\n{result.stderr[-6000:]}"
    assert result.returncode == 0, output

    document = json.loads((tmp_path / "results.json").read_text())
    assert document["machine"]["cores"] >= 1
    (entry,) = [e for e in document["results"] if e["n"] == N]
    assert entry["missing_grants"] == 0, output
    assert entry["missing_revocations"] == 0, output
    assert entry["grants_made"] == entry["grants_expected"] == 2 * N, output
    for figure in ("revocation_lag_p99_s", "grant_latency_p99_s", "grants_per_s", "rss_mb"):
        assert entry[figure] is not None, f"{figure} missing\n{output}"
    assert entry["restart_recovery_s"] is not None, output
    assert not entry["not_measured"], output
    # Every hand-over seen by the watch: the extension's binding added before the old one went.
    windows = entry["windows"]
    assert windows["started"] == windows["handed_over"] == 20, output
    assert windows["gaps"] == 0, output
    assert (tmp_path / "revocation_lag.png").stat().st_size > 0
    assert entry["backend"] == "local API", output
    # Every request of the steady grants' lives, from the local API's audit log as from
    # kube-apiserver's: Lapse's budget is ten a grant.
    requests = entry["requests"]
    assert requests is not None and requests["complete"], output
    assert requests["grants"] == N, requests
    assert requests["by_call"].get("delete rolebindings") == N, requests
    assert requests["per_grant"] <= 10, requests
    # Nobody else deletes the benchmark's bindings: a delete that finds one gone is Lapse
    # asking twice (two paths at one deadline, a restart learning of a binding twice).
    assert entry["repeated_deletes"] == 0, output
    # What Lapse's webhooks add to each kind they see, against the control no webhook sees.
    admission = entry["admission_ms"]
    assert admission["control"] == "configmaps", output
    kinds = ("configmaps", "secrets", "pods", "serviceaccounts/token", "accessrequests")
    for kind in kinds:
        figures = admission["by_kind"][kind]
        for stage in ("without_lapse", "with_lapse", "added"):
            for share in ("p50", "p99"):
                assert figures[f"{stage}_{share}_ms"] is not None, f"{kind} {stage} {share}"
        assert figures["with_lapse_p50_ms"] > 0, output
        assert kind in result.stdout, output
