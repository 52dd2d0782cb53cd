"""The benchmark's raw revocation lags (revocation_lag_samples.json) and their plot
(revocation_lag.png), kept per size and backend so that one picture shows every size run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.backend import LOCAL
from bench.report import EARLY_TOLERANCE_S, Figures, quantile


def sample_key(n: int, backend: str) -> str:
    """The local API's samples are keyed by N alone, as before backends were recorded."""
    return str(n) if backend == LOCAL else f"{n} on {backend}"


def _size(key: str) -> int:
    return int(key.split(" ", 1)[0])


def _label(key: str) -> str:
    """The plot's name for a size: its N, and the backend unless it is the local API."""
    where = key.partition(" ")[2]
    return f"N = {_size(key):,}" + (f" {where}" if where else "")


def write_samples(path: Path, figures: Sequence[Figures]) -> dict[str, Any]:
    """Keep each size's raw lags next to the results, so the plot can show every size run."""
    samples: dict[str, Any] = {}
    if path.exists():
        try:
            samples = dict(json.loads(path.read_text()))
        except ValueError:
            samples = {}
    for f in figures:
        samples[sample_key(f.n, f.backend)] = {
            "revocation_lag_s": [round(v, 4) for v in f.lag_samples],
            "expiry_offset_s": [round(v, 3) for v in f.lag_expiry_offsets],
            "grant_latency_s": [round(v, 4) for v in f.latency_samples],
            "sent_offset_s": [round(v, 3) for v in f.latency_send_offsets],
            "after_restart_lag_s": [round(v, 4) for v in f.restart_lag_samples],
            "after_restart_due_s": [round(v, 3) for v in f.restart_due_offsets],
        }
    path.write_text(json.dumps(samples, separators=(",", ":")) + "\n")
    return samples


def plot(path: Path, samples: dict[str, Any], host: dict[str, Any]) -> None:
    """Revocation lag per N, lag against when each grant was due, and grant latency over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(samples, key=lambda key: (_size(key), key))
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(18, 5))
    for size in sizes:
        lags = [v * 1000 for v in samples[size]["revocation_lag_s"] if v >= -EARLY_TOLERANCE_S]
        if not lags:
            continue
        ordered = sorted(lags)
        p99 = quantile(ordered, 0.99)
        cdf = [(i + 1) / len(ordered) for i in range(len(ordered))]
        left.plot(ordered, cdf, label=f"{_label(size)} (p99 {p99:.0f} ms)")
    left.axvline(500, color="red", linestyle="--", linewidth=1, label="target p99 ≤ 0.5 s")
    left.axhline(0.99, color="grey", linestyle=":", linewidth=1)
    left.set_xscale("symlog", linthresh=1)
    left.set_xlim(left=0)
    left.set_xlabel("revocation lag: binding DELETED seen minus expiresAt (ms)")
    left.set_ylabel("share of grants")
    left.set_title("Revocation lag, cumulative distribution")
    left.legend(loc="lower right")
    left.grid(True, alpha=0.3)

    largest = sizes[-1] if sizes else None
    if largest is not None:
        data = samples[largest]
        # Older sample files may hold early revocations; they are not lag.
        points = [
            (t, v * 1000)
            for t, v in zip(data["expiry_offset_s"], data["revocation_lag_s"], strict=False)
            if v >= -EARLY_TOLERANCE_S
        ]
        middle.scatter([t for t, _ in points], [v for _, v in points], s=3, alpha=0.5)
        middle.axhline(1000, color="red", linestyle="--", linewidth=1)  # the max target
        middle.set_title(f"Lag of each grant as it lapsed, {_label(largest)}")
        right.scatter(
            data.get("sent_offset_s", []),
            [v * 1000 for v in data.get("grant_latency_s", [])],
            s=3,
            alpha=0.5,
            color="tab:green",
        )
        right.axhline(300, color="red", linestyle="--", linewidth=1)
        right.set_title(f"Grant latency of each steady request, {_label(largest)}")
    middle.set_xlabel("when the grant was due (s after the first expiry)")
    middle.set_ylabel("revocation lag (ms)")
    middle.grid(True, alpha=0.3)
    right.set_xlabel("when the request was sent (s after the first)")
    right.set_ylabel("grant latency: binding ADDED seen minus create due (ms)")
    right.grid(True, alpha=0.3)
    fig.suptitle(
        f"Lapse revocation lag — {host['cpu']}, {host['cores']} cores, Python {host['python']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
