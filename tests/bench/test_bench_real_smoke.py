"""Smoke test of `make bench` against a real kube-apiserver, with the operator as users run it
in a benchmark (a process on this machine) and the API server auditing to a file.

It asserts what must hold on any machine: every grant made, every one revoked and none before
its time, and every request of the steady grants' lives counted from the API server's own audit
log — at most ten a grant, Lapse's budget (a count, not a timing). The timings are reported by
`make bench`, never asserted here. It needs LAPSE_TEST_CLUSTER=kubeconfig, a cluster without
Lapse installed, and LAPSE_TEST_AUDIT_LOG naming the file its API server writes its audit log
to (`make bench-smoke-real` in CI: the cluster is started with bench/audit-policy.yaml).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
N = 100


@pytest.mark.timeout(600)
def test_bench_on_a_real_api_server(tmp_path: Path) -> None:
    if os.environ.get("LAPSE_TEST_CLUSTER") != "kubeconfig":
        pytest.skip("needs a real cluster (LAPSE_TEST_CLUSTER=kubeconfig)")
    audit_log = os.environ.get("LAPSE_TEST_AUDIT_LOG", "")
    kubeconfig = os.environ.get("KUBECONFIG", "")
    if not audit_log or not Path(audit_log).is_file():
        pytest.skip("needs the API server's audit log (LAPSE_TEST_AUDIT_LOG)")
    env = dict(os.environ)
    env.update(
        BENCH_N=str(N),
        BENCH_KUBECONFIG=kubeconfig,
        BENCH_AUDIT_LOG=audit_log,
        BENCH_HOLD="8",
        BENCH_SPREAD="6",
        BENCH_MARGIN="6",
        BENCH_WINDOWS="10",
        BENCH_OUTPUT_DIR=str(tmp_path),
        PYTHONUNBUFFERED="1",
    )
    result = subprocess.run(
        [sys.executable, "-m", "bench.run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=560,
        check=False,
    )
    output = f"stdout:\n{result.stdout[-8000:]}\nstderr:\n{result.stderr[-4000:]}"
    assert result.returncode == 0, output

    (entry,) = json.loads((tmp_path / "results.json").read_text())["results"]
    assert entry["backend"].startswith("kube-apiserver v1.36"), output
    assert entry["missing_grants"] == 0, output
    assert entry["missing_revocations"] == 0, output
    assert entry["grants_made"] == entry["grants_expected"] == 2 * N, output
    assert entry["revoked_before_expiry"] == 0, output
    assert entry["windows"]["gaps"] == 0, output
    assert not entry["not_measured"], output
    # Every request of every steady grant's life, from the API server's audit log.
    requests = entry["requests"]
    assert requests is not None, output
    assert requests["grants"] == N and requests["complete"], output
    assert requests["by_call"].get("delete rolebindings") == N, requests
    assert requests["by_call"].get("create rolebindings") == N, requests
    assert requests["per_grant"] <= 10, requests
    # Nobody else deletes the benchmark's bindings: a delete that finds one gone is Lapse
    # asking twice (two paths at one deadline, a restart learning of a binding twice).
    assert entry["repeated_deletes"] == 0, output
