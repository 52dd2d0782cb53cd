"""etcd's size as the history benchmark reads it: what Lapse's ended objects cost the cluster.

Retention exists so that etcd does not fill. The figure is `etcd_mvcc_db_total_size_in_use_in_bytes`
from etcd's /metrics: the bytes of its database file that hold data (the file itself,
`etcd_mvcc_db_total_size_in_bytes`, never shrinks without a defragmentation, so it says how
large the database once was, not what it holds). In-use still counts every old revision of
every key until a compaction removes it, and kube-apiserver compacts only every 5 minutes: a
figure read at an arbitrary moment carries up to 5 minutes of history. So each measurement
here first compacts to the current revision and defragments (etcd's grpc-gateway:
`POST /v3/kv/compaction`, `POST /v3/maintenance/defragment`), which leaves in use exactly the
live keys' latest values plus the database's fixed overhead: comparable before and after.
This is what kube-apiserver's own compaction does anyway, only sooner; the defragmentation
blocks etcd for a moment (milliseconds at these sizes).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

DEFAULT_URL = "http://127.0.0.1:16379"
IN_USE = "etcd_mvcc_db_total_size_in_use_in_bytes"
TOTAL = "etcd_mvcc_db_total_size_in_bytes"
KEYS = "etcd_debugging_mvcc_keys_total"


def url_from_env() -> str | None:
    """BENCH_ETCD_URL, or the default; empty (`BENCH_ETCD_URL=`) when etcd is not reachable."""
    value = os.environ.get("BENCH_ETCD_URL")
    if value is None:
        return DEFAULT_URL
    return value.strip().rstrip("/") or None


@dataclass(frozen=True)
class Size:
    in_use: int
    total: int
    keys: int
    revision: int
    compacted: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "in_use_bytes": self.in_use,
            "total_bytes": self.total,
            "keys": self.keys,
            "revision": self.revision,
            "compacted_and_defragmented": self.compacted,
        }


def _post(url: str, path: str, body: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    request = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return dict(json.loads(response.read() or b"{}"))


def _metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in (IN_USE, TOTAL, KEYS):
            found[name] = float(value)
    return found


def revision(url: str) -> int:
    status = _post(url, "/v3/maintenance/status", {})
    return int(status["header"]["revision"])


def measure(url: str, compact: bool = True) -> Size:
    """The in-use size, after a compaction to the current revision and a defragmentation."""
    current = revision(url)
    if compact:
        try:
            _post(url, "/v3/kv/compaction", {"revision": str(current), "physical": True})
        except urllib.error.HTTPError as error:
            # Compacted to this revision already (kube-apiserver got there first): fine.
            if b"compacted" not in error.read():
                raise
        _post(url, "/v3/maintenance/defragment", {})
    found = _metrics(url)
    return Size(
        in_use=int(found.get(IN_USE, 0)),
        total=int(found.get(TOTAL, 0)),
        keys=int(found.get(KEYS, 0)),
        revision=current,
        compacted=compact,
    )
