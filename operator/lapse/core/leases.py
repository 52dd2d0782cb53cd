"""Leader election, the decisions: may this replica take or keep the Lease, and what to write.

Two replicas must never both act, and a dead leader must be replaced within a bounded time. The
rules live here, as pure functions of the Lease, this replica's identity and the time, so they
are tested without an API; `lapse.leader` only reads and writes the Lease.

A lease counts as expired when nobody has renewed it for its duration *as this replica
observed it*: the time is taken from this replica's own clock when it last saw the lease change,
not from `renewTime` written by another host, so clock skew between nodes cannot shorten it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any


class LeaseAction(StrEnum):
    CREATE = "create"  # no Lease yet
    RENEW = "renew"  # ours: write a fresh renewTime
    ACQUIRE = "acquire"  # someone else's, expired or released: take it over
    WAIT = "wait"  # someone else's and alive


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    renew_time: datetime | None
    duration: timedelta
    transitions: int
    resource_version: str | None
    acquire_time: datetime | None = None


def format_micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def parse_lease(body: Mapping[str, Any] | None) -> LeaseRecord | None:
    if body is None:
        return None
    spec = body.get("spec") or {}
    seconds = spec.get("leaseDurationSeconds")
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        renew_time=_parse(spec.get("renewTime")) or _parse(spec.get("acquireTime")),
        duration=timedelta(seconds=seconds if isinstance(seconds, int | float) else 0),
        transitions=int(spec.get("leaseTransitions") or 0),
        resource_version=(body.get("metadata") or {}).get("resourceVersion"),
        acquire_time=_parse(spec.get("acquireTime")),
    )


def compute_lease_action(
    lease: LeaseRecord | None, identity: str, now: datetime, observed_at: datetime | None
) -> LeaseAction:
    """What to do with the Lease now. `observed_at` is when this replica first saw the
    lease's current holder and renewTime (None if it never saw this version)."""
    if lease is None:
        return LeaseAction.CREATE
    if lease.holder == identity:
        return LeaseAction.RENEW
    if not lease.holder:
        return LeaseAction.ACQUIRE
    seen = observed_at or now
    if seen + lease.duration <= now:
        return LeaseAction.ACQUIRE
    return LeaseAction.WAIT


def build_lease(
    name: str,
    namespace: str,
    identity: str,
    now: datetime,
    duration: timedelta,
    previous: LeaseRecord | None,
) -> dict[str, Any]:
    """The Lease this replica writes to create, renew or take over the lease; the previous
    resourceVersion makes a replace a compare-and-swap, so of two replicas taking over at once
    exactly one wins."""
    taking_over = previous is None or previous.holder != identity
    spec: dict[str, Any] = {
        "holderIdentity": identity,
        "leaseDurationSeconds": max(1, round(duration.total_seconds())),
        "renewTime": format_micro_time(now),
        "leaseTransitions": (previous.transitions if previous else 0)
        + (1 if previous is not None and taking_over else 0),
    }
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if previous is not None and previous.resource_version:
        metadata["resourceVersion"] = previous.resource_version
    acquired = now if taking_over or previous is None else previous.acquire_time or now
    spec["acquireTime"] = format_micro_time(acquired)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": spec,
    }


def build_release(lease: LeaseRecord, name: str, namespace: str) -> dict[str, Any]:
    """The Lease given up: no holder, so a standby takes it at its next attempt instead of
    waiting out the duration (client-go's ReleaseOnCancel does the same). The resourceVersion
    makes it a compare-and-swap: a lease someone else took meanwhile is left alone."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if lease.resource_version:
        metadata["resourceVersion"] = lease.resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": None,
            "leaseDurationSeconds": max(1, round(lease.duration.total_seconds())),
            "leaseTransitions": lease.transitions,
        },
    }


def renew_deadline(duration: timedelta, renew: timedelta) -> timedelta:
    """How long a leader may go without a successful renewal before it must stop acting: one
    renew interval short of the duration, so it has stopped before a standby may take over."""
    return max(duration - renew, renew)
