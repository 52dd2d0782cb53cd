"""One store for Events, two API shapes: core `v1` and `events.k8s.io/v1`.

A real cluster keeps each Event once and serves it through both groups with renamed fields
(`involvedObject` is `regarding`, `message` is `note`, ...). The local API does the same: it
stores the core shape and converts on the way in and out of `events.k8s.io/v1`.
"""

from __future__ import annotations

from typing import Any

GROUP = "events.k8s.io"
# core v1 field -> events.k8s.io/v1 field
RENAMES = {
    "involvedObject": "regarding",
    "message": "note",
    "reportingComponent": "reportingController",
    "source": "deprecatedSource",
    "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp",
    "count": "deprecatedCount",
}
BACK = {v: k for k, v in RENAMES.items()}


def to_events_v1(core: dict[str, Any]) -> dict[str, Any]:
    out = {RENAMES.get(k, k): v for k, v in core.items()}
    out["apiVersion"] = f"{GROUP}/v1"
    out["kind"] = "Event"
    return out


def to_core(event: dict[str, Any]) -> dict[str, Any]:
    out = {BACK.get(k, k): v for k, v in event.items()}
    out["apiVersion"] = "v1"
    out["kind"] = "Event"
    return out
