"""Smoke test of `python -m bench.activity`: small, so a change that breaks it shows in CI.

It asserts that each phase ran and printed its figures; the figures themselves depend on the
machine and are reported (docs/activity.md), never asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.localonly
@pytest.mark.timeout(240)
def test_activity_bench_smoke() -> None:
    env = dict(os.environ, ACTIVITY_N="10", ACTIVITY_FLOOD="2", ACTIVITY_SENDERS="2")
    result = subprocess.run(
        [sys.executable, "-m", "bench.activity"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    output = f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    assert result.returncode == 0, output
    assert "did not expire" not in result.stdout, output
    assert result.stdout.count("grant latency median") == 3, output
    assert "events/s" in result.stdout and "folded" in result.stdout, output
