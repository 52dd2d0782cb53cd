"""API requests per grant, counted where nothing escapes: the API server's own audit log.

Lapse shares its API server with everything else in the cluster; each request it does not make
is one the server does not queue in front of someone else's (and in front of Lapse's next
delete). The operator cannot count its own requests credibly (kopf makes some of them), so
the benchmark reads the audit log of the API server — kube-apiserver's `--audit-log-path`, or
the local API's, which writes the same lines — and counts every request made with the
operator's user agents (its own client's and kopf's, the same in a process and in a pod)
between two moments: the first steady request sent, and the moment the last steady grant's
end was checked with the API server. Divided by the grants of that window, that is each
grant's whole life: request to Expired, its verification included.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
POLICY = HERE / "audit-policy.yaml"
# The operator's client says `lapse-operator`; kopf's says `kopf/<version>`.
OPERATOR_AGENTS = ("lapse-operator", "kopf/")
TARGET_PER_GRANT = 10.0


@dataclass(frozen=True)
class RequestCount:
    """What the operator asked of the API server in a window, and per grant."""

    total: int
    grants: int
    by_call: dict[str, int] = field(default_factory=dict)
    # Every request of the window's grants is in it: their checks had all run at its end.
    complete: bool = True
    # The window counted, wall-clock seconds: a later recount reads the same.
    window: tuple[float, float] = (0.0, 0.0)

    @property
    def per_grant(self) -> float:
        return self.total / self.grants if self.grants else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "grants": self.grants,
            "per_grant": round(self.per_grant, 2),
            "complete": self.complete,
            "window": [round(self.window[0], 3), round(self.window[1], 3)],
            "target_per_grant": TARGET_PER_GRANT,
            "by_call": dict(sorted(self.by_call.items(), key=lambda kv: -kv[1])),
        }


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def call_name(event: dict[str, Any]) -> str:
    """`verb resource[/subresource]`, as a reader of the table says it."""
    ref = event.get("objectRef") or {}
    resource = str(ref.get("resource") or event.get("requestURI") or "")
    if ref.get("subresource"):
        resource += f"/{ref['subresource']}"
    return f"{event.get('verb', '')} {resource}"


def log_files(path: Path) -> list[Path]:
    """The log and what kube-apiserver rotated out of it (at 100 MB by default, as
    `audit-<time>.log` beside it): a 10,000-grant run writes several."""
    rotated = sorted(path.parent.glob(f"{path.stem}-*{path.suffix}"))
    return [*rotated, path] if path.is_file() else rotated


def count_requests(path: Path, since: float, until: float, grants: int) -> RequestCount:
    """The operator's requests received in [since, until] (wall-clock seconds)."""
    calls: Counter[str] = Counter()
    for each in log_files(path):
        with each.open("r", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                # Most lines are the benchmark's own or the cluster's: skip them unparsed.
                if '"lapse-operator' not in line and '"kopf/' not in line:
                    continue
                event = json.loads(line)
                if event.get("stage") != "ResponseComplete":
                    continue
                if not str(event.get("userAgent") or "").startswith(OPERATOR_AGENTS):
                    continue
                received = _stamp(str(event.get("requestReceivedTimestamp")))
                if since <= received <= until:
                    calls[call_name(event)] += 1
    return RequestCount(
        total=sum(calls.values()), grants=grants, by_call=dict(calls), window=(since, until)
    )


def count_repeated_deletes(path: Path, since: float, until: float) -> int:
    """The operator's binding deletes in [since, until] that found the binding gone already
    (404, or 409 for a UID precondition that no longer holds): requests that took nothing
    away, sent at the moment the API server is busiest. Lapse sends none in a benchmark,
    where nobody else deletes its bindings."""
    repeated = 0
    for each in log_files(path):
        with each.open("r", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if '"delete"' not in line or "rolebindings" not in line:
                    continue
                if '"lapse-operator' not in line and '"kopf/' not in line:
                    continue
                event = json.loads(line)
                if event.get("stage") != "ResponseComplete" or event.get("verb") != "delete":
                    continue
                if (event.get("objectRef") or {}).get("resource") != "rolebindings":
                    continue
                if not str(event.get("userAgent") or "").startswith(OPERATOR_AGENTS):
                    continue
                code = (event.get("responseStatus") or {}).get("code")
                received = _stamp(str(event.get("requestReceivedTimestamp")))
                if code in (404, 409) and since <= received <= until:
                    repeated += 1
    return repeated
