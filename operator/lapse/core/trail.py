"""The exported audit trail: each owner's history as a chain of signed records.

Audit sinks (syslog, HTTPS collectors) must receive every fact of every grant, whole and in
order, even across crashes and sink outages of days. The facts are already durable: they are
in the owner's status (its history of phases, its approvals, its review, its verification
verdict). So the trail is derived from the status, never from what a process happened to log:
`compute_new_facts` says which facts of an owner are not in its trail yet, `build_trail_record`
turns one into a record, and the exporter stores the record in the owner's `status.trail`
before any sink sees it. The object is the outbox: a record is delivered from there, and the
object is deleted only once every sink has it.

Each owner's records form one stream: `seq` counts from 1, `prev` is the hash of the record
before it (of a fixed genesis value for the first), and `sig` is an HMAC over the record with
the operator's signing key (`lapse.signing`). Whoever holds the key can tell a received stream
whole and unaltered (`lapse.core.trailcheck`); whoever does not cannot forge one that passes.
The last record of an owner deleted by retention is `retired`, which says how many came
before: a stream that ends there is complete.

A sink that takes only short messages gets a record in parts (`compute_parts`), each saying
which record and which part it is; `join_parts` puts them back before verification.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lapse.core.audit import build_audit_record
from lapse.core.bindings import format_time
from lapse.core.grants import GrantKey
from lapse.core.models import (
    AccessRequestStatus,
    BreakGlassStatus,
    GrantStatus,
    Phase,
    RoleRef,
)
from lapse.core.verification import VERIFIED

STREAM = "lapse.dev/audit/v1"
SIG_PREFIX = "hmac-sha256:"
PART_KEY = "lapsePart"

# Fact kinds, in the order a status records them.
HISTORY = "history"
APPROVALS = "approvals"
REVIEW = "review"
VERIFIED_FACT = "verified"
RETIRED = "retired"


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash and signature are computed over: keys sorted, no spaces."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_genesis(uid: str) -> str:
    """The `prev` of an owner's first record."""
    return hashlib.sha256(f"{STREAM}\x1f{uid}".encode()).hexdigest()


def compute_record_hash(record: Mapping[str, Any]) -> str:
    """What the next record of the stream carries as `prev`: the hash of this one, signed."""
    return hashlib.sha256(canonical(record)).hexdigest()


def compute_signature(record: Mapping[str, Any], key: bytes) -> str:
    unsigned = {k: v for k, v in record.items() if k != "sig"}
    return SIG_PREFIX + hmac.new(key, canonical(unsigned), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Fact:
    """One fact of an owner's status that its trail records: what kind, which (the index in
    an append-only list), when, and the audit fields that say it."""

    kind: str
    index: int
    at: datetime
    action: str
    reason: str
    message: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.index}"


def _phase_action(kind: str, phase: Phase) -> str:
    if phase == Phase.ACTIVE:
        return "activated" if kind == "BreakGlass" else "granted"
    return phase.value.lower()


def compute_facts(kind: str, status: GrantStatus) -> list[Fact]:
    """Every fact of `status` a trail records, in the order the status came to hold them."""
    facts: list[Fact] = []
    if isinstance(status, AccessRequestStatus):
        for index, approval in enumerate(status.approvals):
            verb = "approved" if approval.decision == "Approve" else "denied"
            facts.append(
                Fact(
                    APPROVALS,
                    index,
                    approval.at,
                    "approval" if approval.decision == "Approve" else "denial",
                    approval.decision,
                    f"{approval.user.username} {verb}"
                    + (f": {approval.comment}" if approval.comment else "."),
                    {"by": approval.user.username},
                )
            )
    for index, step in enumerate(status.history):
        facts.append(
            Fact(
                HISTORY, index, step.at, _phase_action(kind, step.phase), step.reason, step.message
            )
        )
    if isinstance(status, BreakGlassStatus) and status.review is not None:
        review = status.review
        facts.append(
            Fact(
                REVIEW,
                0,
                review.at,
                "reviewed",
                review.verdict,
                review.comment or f"Reviewed as {review.verdict}.",
                {"by": review.reviewer.username, "verdict": review.verdict},
            )
        )
    verified = next((c for c in status.conditions if c.type == VERIFIED), None)
    if verified is not None and verified.status != "Unknown":
        # The check comes after the end it checks, even when its verdict was reached a moment
        # before the end was written (it rides on the same status write).
        checked_at = max(
            verified.last_transition_time,
            status.ended_at or datetime.min.replace(tzinfo=verified.last_transition_time.tzinfo),
        )
        facts.append(
            Fact(
                VERIFIED_FACT,
                0,
                checked_at,
                "verified",
                verified.reason,
                verified.message,
                {"accessGone": verified.status == "True"},
            )
        )
    # Stable: the status's own order within a kind, time across kinds, and on a tie an
    # approval before the phase it brings and a phase before the check of it.
    rank = {APPROVALS: 0, HISTORY: 1, VERIFIED_FACT: 2, REVIEW: 3}
    return sorted(facts, key=lambda f: (f.at, rank.get(f.kind, 4), f.index))


def compute_new_facts(kind: str, status: GrantStatus, covered: Mapping[str, int]) -> list[Fact]:
    """The facts not in the trail yet: `covered` counts, per fact kind, how many the trail
    holds (the lists it counts only grow)."""
    return [f for f in compute_facts(kind, status) if f.index >= covered.get(f.kind, 0)]


def build_trail_record(
    *,
    key: GrantKey,
    status: GrantStatus,
    role: RoleRef | None,
    fact: Fact,
    seq: int,
    prev: str,
    signing_key: bytes,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The signed record of `fact`, `seq`-th of the owner's stream, after a record that
    hashes to `prev`."""
    namespaces = [b.namespace for b in status.bindings if b.namespace]
    fields: dict[str, Any] = {**fact.extra, **(extra or {})}
    if status.risk is not None and status.risk.summary:
        fields.setdefault("risk", status.risk.summary)
    record = build_audit_record(
        action=fact.action,
        key=key,
        status=status,
        role=role,
        target_namespace=",".join(namespaces) if namespaces else key.namespace,
        reason=fact.reason,
        message=fact.message,
        now=fact.at,
        **fields,
    )
    # One id per fact of one owner, whenever and however often it is derived: a receiver drops
    # the repeats that at-least-once delivery brings.
    record["id"] = hashlib.sha256(f"{key.uid}\x1f{fact.ref}".encode()).hexdigest()[:20]
    record.update({"stream": STREAM, "fact": fact.ref, "seq": seq, "prev": prev})
    record["sig"] = compute_signature(record, signing_key)
    return record


def build_retired_fact(*, at: datetime, records: int, ended_at: datetime | None) -> Fact:
    """The last fact of an owner deleted by retention: how many records came before."""
    since = f" (it ended {format_time(ended_at)})" if ended_at else ""
    return Fact(
        RETIRED,
        0,
        at,
        "retired",
        "Retention",
        f"Deleted from the cluster by retention{since}; its trail has {records} record(s) "
        "before this one.",
        {"records": records},
    )


# Parts -----------------------------------------------------------------------------------


def compute_parts(record: Mapping[str, Any], limit: int) -> list[dict[str, Any]]:
    """`record` as it is when its JSON fits in `limit` bytes; otherwise as parts that each
    fit, carrying the record's id, owner, seq and a base64 slice of its canonical JSON."""
    whole = canonical(record)
    if len(whole) <= limit:
        return [dict(record)]
    encoded = base64.b64encode(whole).decode()
    envelope = {
        PART_KEY: {
            "id": record.get("id"),
            "uid": record.get("uid"),
            "seq": record.get("seq"),
            "part": 999999,
            "parts": 999999,
            "data": "",
        }
    }
    room = limit - len(canonical(envelope))
    if room < 64:
        raise ValueError(f"a limit of {limit} bytes leaves no room for a part")
    chunks = [encoded[i : i + room] for i in range(0, len(encoded), room)]
    return [
        {
            PART_KEY: {
                "id": record.get("id"),
                "uid": record.get("uid"),
                "seq": record.get("seq"),
                "part": number,
                "parts": len(chunks),
                "data": chunk,
            }
        }
        for number, chunk in enumerate(chunks, start=1)
    ]


def join_parts(items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Records and parts as received, with every record whose parts all arrived put back
    together (in the place of its first part); parts of a record still incomplete are left
    out and named by `missing_parts`."""
    out: list[dict[str, Any] | tuple[str, int]] = []
    pending: dict[tuple[str, int], dict[int, str]] = {}
    sizes: dict[tuple[str, int], int] = {}
    for item in items:
        part = item.get(PART_KEY)
        if not isinstance(part, Mapping):
            out.append(dict(item))
            continue
        ident = (str(part.get("id")), int(part.get("seq") or 0))
        if ident not in pending:
            pending[ident] = {}
            out.append(ident)
        pending[ident][int(part.get("part") or 0)] = str(part.get("data") or "")
        sizes[ident] = int(part.get("parts") or 0)
    records: list[dict[str, Any]] = []
    for entry in out:
        if isinstance(entry, dict):
            records.append(entry)
            continue
        chunks = pending[entry]
        if len(chunks) != sizes[entry] or set(chunks) != set(range(1, sizes[entry] + 1)):
            continue
        data = "".join(chunks[i] for i in range(1, sizes[entry] + 1))
        records.append(json.loads(base64.b64decode(data)))
    return records


def missing_parts(items: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ids of records some of whose parts never arrived."""
    seen: dict[str, set[int]] = {}
    sizes: dict[str, int] = {}
    for item in items:
        part = item.get(PART_KEY)
        if isinstance(part, Mapping):
            ident = str(part.get("id"))
            seen.setdefault(ident, set()).add(int(part.get("part") or 0))
            sizes[ident] = int(part.get("parts") or 0)
    return [i for i, got in seen.items() if got != set(range(1, sizes[i] + 1))]
