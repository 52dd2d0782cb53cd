"""The operator as the history benchmark runs it: a process, with settings of the run's own.

`bench.cluster.Operator` runs the operator with `LAPSE_NAMESPACE=default`; on a cluster others
share, its Lease and signing key would then meet whoever else runs Lapse there (a standby never
leads, and retention is the leader's). Here the operator keeps them in a namespace of the
benchmark's, and each start carries the settings of its phase (retention, the syslog sink).

Start-up is measured in steps, each from the spawn: the metrics endpoint answers (the process
is up), the log says the grant index is loaded (every owner listed), the admission webhook
answers, and the process has settled (its CPU under `SETTLED_CPU` per cent over
`SETTLED_WINDOW` seconds: kopf has handed every owner to its handlers once).
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.cluster import ROOT, Operator, _spawn, usage

INDEX_LOADED = "active grant(s) in memory"
SETTLED_CPU = 5.0
SETTLED_WINDOW = 5.0


class HistoryOperator(Operator):
    def __init__(
        self, workdir: Path, kubeconfig: Path, namespace: str, settings: Mapping[str, str]
    ) -> None:
        super().__init__(workdir, kubeconfig)
        self.namespace = namespace
        self.settings = dict(settings)
        self.log_offset = 0

    def start(self) -> float:
        """Spawn the operator with the run's namespace and settings; the wall-clock spawn."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            PYTHONUNBUFFERED="1",
            LAPSE_WEBHOOK_ADDR="127.0.0.1",
            LAPSE_WEBHOOK_HOST="127.0.0.1",
            LAPSE_WEBHOOK_PORT=str(self.webhook_port),
            LAPSE_WEBHOOK_CERT_DIR=str(self.workdir / "certs"),
            LAPSE_METRICS_ADDR="127.0.0.1",
            LAPSE_METRICS_PORT=str(self.metrics_port),
            LAPSE_NAMESPACE=self.namespace,
        )
        env.update(self.settings)
        override = os.environ.get("BENCH_OPERATOR_COMMAND", "").strip()
        command = shlex.split(override) if override else [sys.executable, "-m", "lapse.main"]
        # Each start's log begins where the last one's ended: the index line is looked for
        # from here on.
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.started_at = time.time()
        with self.audit_path.open("ab") as out, self.log_path.open("ab") as err:
            self.process = _spawn(command, cwd=ROOT, env=env, stdout=out, stderr=err)
        return self.started_at

    def log_has(self, text: str) -> bool:
        """Whether this start's log has said `text` yet (read on from where it was left)."""
        if not self.log_path.exists():
            return False
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            chunk = log.read()
        # Keep the tail: a line may be cut where the last read ended.
        self.log_offset += max(0, len(chunk) - len(text.encode()))
        return text.encode() in chunk

    def metric(self, name: str) -> float:
        """The sum of a metric's samples (every label set); NaN when the endpoint is down."""
        try:
            text = self.metrics_text()
        except OSError:
            return float("nan")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


@dataclass
class RssSampler:
    """The operator's RSS, sampled by its caller once a second: the peak and the last."""

    pid: int
    samples: list[tuple[float, int]] = field(default_factory=list)

    def sample(self) -> int:
        rss = usage(self.pid).rss_bytes
        self.samples.append((time.time(), rss))
        return rss

    @property
    def peak_mb(self) -> float:
        return max((r for _, r in self.samples), default=0) / 2**20

    @property
    def last_mb(self) -> float:
        return self.samples[-1][1] / 2**20 if self.samples else float("nan")


def cpu_seconds(pid: int) -> float:
    return usage(pid).cpu_seconds
