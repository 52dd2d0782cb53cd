"""Whether an exported audit trail arrived whole and unaltered: the receiver's half of
`lapse.core.trail`.

A security team keeps Lapse's trail in its own systems (syslog, a SIEM) precisely so that
nobody who can change the cluster can change the record of what happened there. That is only
worth something if the copy can be checked without trusting whoever carried it: every record
is signed with the operator's key and links to the one before it, so with the key a reader can
tell, per owner, that nothing was changed, dropped, added, reordered or replayed with other
content — and name the first record where it was.

This module is the check alone: records already parsed (with the file and line each came
from) and the key in, a typed verdict out. Reading files and fetching the key is the command
line's business (`lapse.cli.audit`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from lapse.core.trail import (
    PART_KEY,
    RETIRED,
    STREAM,
    canonical,
    compute_genesis,
    compute_record_hash,
    compute_signature,
)


@dataclass(frozen=True)
class Located:
    """One item as received (a record, or a part of one) and where it was read."""

    item: Mapping[str, Any]
    file: str
    line: int


class Verdict(StrEnum):
    COMPLETE = "intact-complete"
    OPEN = "intact-open"
    BROKEN = "broken"


class Breach(StrEnum):
    BAD_SIGNATURE = "bad signature"
    ALTERED = "altered"
    MISSING = "missing records"
    REORDERED = "reordered"
    CONFLICT = "duplicate id with different content"
    SEQ_TAKEN = "two records at one seq"
    UNKNOWN_STREAM = "unknown stream version"
    INCOMPLETE = "incomplete parts"
    MALFORMED = "malformed record"
    AFTER_RETIRED = "records after retired"
    MISCOUNTED = "retired count mismatch"


class _Out(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


class Breakage(_Out):
    """The first record that breaks a stream, where it was read, and why."""

    breach: Breach
    detail: str
    file: str
    line: int
    uid: str | None
    seq: int | None
    id: str | None


class StreamVerdict(_Out):
    uid: str
    verdict: Verdict
    kind: str | None
    namespace: str | None
    name: str | None
    # Distinct records received, and how many arrived more than once.
    records: int
    repeats: int
    # The last record found whole and in place (before the break, for a broken stream).
    last_seq: int
    last_action: str | None
    breakage: Breakage | None = None


class TrailVerdict(_Out):
    streams: list[StreamVerdict]
    records: int
    repeats: int
    # Items that belong to no stream (no owner uid): always a break of the whole.
    strays: list[Breakage]

    @property
    def intact(self) -> bool:
        return not self.strays and all(s.verdict != Verdict.BROKEN for s in self.streams)

    def count(self, verdict: Verdict) -> int:
        return sum(1 for s in self.streams if s.verdict == verdict)


# Parts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One record as received, put back together from its parts when it came in parts (or
    never: `missing` then says which parts), in the place of its first part."""

    record: Mapping[str, Any] | None
    at: Located
    uid: str | None
    seq: int | None
    id: str | None
    missing: str = ""
    conflict: bool = False


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def compute_entries(items: Sequence[Located]) -> list[Received]:
    """Records as received, with parts joined; a part carries no signature of its own, so a
    record joined from parts is checked like any other once whole."""
    out: list[Received | tuple[str, int | None, str | None]] = []
    chunks: dict[tuple[str, int | None, str | None], dict[int, str]] = {}
    sizes: dict[tuple[str, int | None, str | None], int] = {}
    first: dict[tuple[str, int | None, str | None], Located] = {}
    clashed: set[tuple[str, int | None, str | None]] = set()
    for located in items:
        part = located.item.get(PART_KEY)
        if not isinstance(part, Mapping):
            record = located.item
            out.append(
                Received(
                    record,
                    located,
                    _str(record.get("uid")),
                    _int(record.get("seq")),
                    _str(record.get("id")),
                )
            )
            continue
        ident = (str(part.get("id")), _int(part.get("seq")), _str(part.get("uid")))
        if ident not in chunks:
            chunks[ident], first[ident] = {}, located
            out.append(ident)
        number, data = _int(part.get("part")) or 0, str(part.get("data") or "")
        if chunks[ident].get(number, data) != data:
            clashed.add(ident)
        chunks[ident][number] = data
        sizes[ident] = max(sizes.get(ident, 0), _int(part.get("parts")) or 0)
    entries: list[Received] = []
    for entry in out:
        if isinstance(entry, Received):
            entries.append(entry)
            continue
        ident, got, size = entry, chunks[entry], sizes[entry]
        where, (ident_id, seq, uid) = first[ident], ident
        if ident in clashed:
            entries.append(Received(None, where, uid, seq, ident_id, conflict=True))
            continue
        absent = [n for n in range(1, size + 1) if n not in got]
        if absent or not size:
            said = ", ".join(str(n) for n in absent) or "all"
            entries.append(Received(None, where, uid, seq, ident_id, missing=f"{said} of {size}"))
            continue
        data = "".join(got[n] for n in range(1, size + 1))
        try:
            joined: Any = json.loads(base64.b64decode(data, validate=True))
        except (binascii.Error, ValueError):
            joined = None
        if not isinstance(joined, Mapping):
            entries.append(Received(None, where, uid, seq, ident_id, missing="none readable"))
            continue
        # The record's own (signed) fields say whose it is, not the part's envelope.
        entries.append(
            Received(
                joined,
                where,
                _str(joined.get("uid")),
                _int(joined.get("seq")),
                _str(joined.get("id")),
            )
        )
    return entries


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# Streams -----------------------------------------------------------------------------------


def _signed(record: Mapping[str, Any], key: bytes) -> bool:
    sig = record.get("sig")
    return isinstance(sig, str) and hmac.compare_digest(sig, compute_signature(record, key))


def _break(entry: Received, breach: Breach, detail: str) -> Breakage:
    return Breakage(
        breach=breach,
        detail=detail,
        file=entry.at.file,
        line=entry.at.line,
        uid=entry.uid,
        seq=entry.seq,
        id=entry.id,
    )


def _describe_seq(entry: Received) -> str:
    return f"seq {entry.seq}" if entry.seq is not None else "a record"


def _walk(uid: str, entries: Sequence[Received], key: bytes) -> StreamVerdict:
    """One owner's records in the order received: repeats dropped, the rest checked in turn
    until one breaks the stream."""
    seen: dict[str, bytes] = {}
    by_seq: dict[int, Received] = {}
    for entry in entries:
        if entry.record is not None and entry.seq is not None:
            by_seq.setdefault(entry.seq, entry)
    whole_ids = {e.id for e in entries if e.record is not None and e.id}
    bodies = [canonical(e.record) for e in entries if e.record is not None]
    # Counted over the whole stream, the part after a break included.
    received, repeats = len(set(bodies)), len(bodies) - len(set(bodies))
    expected, prev = 1, compute_genesis(uid)
    last_action: str | None = None
    retired_at: Received | None = None
    head = next((e.record for e in entries if e.record is not None), None) or {}

    def verdict(state: Verdict, breakage: Breakage | None = None) -> StreamVerdict:
        return StreamVerdict(
            uid=uid,
            verdict=state,
            kind=_str(head.get("kind")),
            namespace=_str(head.get("namespace")),
            name=_str(head.get("name")),
            records=received,
            repeats=repeats,
            last_seq=expected - 1,
            last_action=last_action,
            breakage=breakage,
        )

    for entry in entries:
        if entry.conflict:
            return verdict(
                Verdict.BROKEN,
                _break(entry, Breach.CONFLICT, "one part of it arrived twice with other data"),
            )
        if entry.record is None:
            if entry.id in whole_ids:
                continue  # also received whole: these parts are a repeat
            return verdict(
                Verdict.BROKEN,
                _break(entry, Breach.INCOMPLETE, f"part(s) {entry.missing} never arrived"),
            )
        record = entry.record
        body = canonical(record)
        if entry.id is None or entry.seq is None or entry.seq < 1:
            return verdict(
                Verdict.BROKEN, _break(entry, Breach.MALFORMED, "it has no id or no valid seq")
            )
        if entry.id in seen:
            if seen[entry.id] == body:
                continue
            return verdict(
                Verdict.BROKEN,
                _break(entry, Breach.CONFLICT, f"id {entry.id} arrived before with other content"),
            )
        seen[entry.id] = body
        if record.get("stream") != STREAM:
            return verdict(
                Verdict.BROKEN,
                _break(
                    entry,
                    Breach.UNKNOWN_STREAM,
                    f"stream {record.get('stream')!r}; this Lapse reads {STREAM!r}",
                ),
            )
        if retired_at is not None:
            return verdict(
                Verdict.BROKEN,
                _break(
                    entry,
                    Breach.AFTER_RETIRED,
                    f"it follows the retired record (seq {retired_at.seq}), which ends the stream",
                ),
            )
        if not _signed(record, key):
            following = by_seq.get(entry.seq + 1)
            if (
                following is not None
                and following.record is not None
                and (following.record.get("prev") != compute_record_hash(record))
            ):
                detail = (
                    "its content changed after it was signed: its signature fails and the "
                    f"next record (seq {entry.seq + 1}) links to other content"
                )
                return verdict(Verdict.BROKEN, _break(entry, Breach.ALTERED, detail))
            detail = "its signature does not match (altered, or signed with another key)"
            return verdict(Verdict.BROKEN, _break(entry, Breach.BAD_SIGNATURE, detail))
        if entry.seq < expected:
            return verdict(
                Verdict.BROKEN,
                _break(entry, Breach.SEQ_TAKEN, f"seq {entry.seq} was already another record"),
            )
        if entry.seq > expected:
            if expected in by_seq and by_seq[expected] is not entry:
                later = by_seq[expected].at
                detail = (
                    f"seq {entry.seq} arrived before seq {expected} ({later.file}:{later.line})"
                )
                return verdict(Verdict.BROKEN, _break(entry, Breach.REORDERED, detail))
            gap = f"{expected}" if entry.seq - 1 == expected else f"{expected}..{entry.seq - 1}"
            return verdict(
                Verdict.BROKEN,
                _break(entry, Breach.MISSING, f"record(s) {gap} before this one never arrived"),
            )
        if record.get("prev") != prev:
            detail = "it does not link to the record before it: that one was replaced"
            if entry.seq == 1:
                detail = "it does not link to the stream's start"
            return verdict(Verdict.BROKEN, _break(entry, Breach.ALTERED, detail))
        if record.get("action") == RETIRED:
            counted = _int(record.get("records"))
            if counted != entry.seq - 1:
                detail = f"it counts {counted} record(s) before it; the stream has {entry.seq - 1}"
                return verdict(Verdict.BROKEN, _break(entry, Breach.MISCOUNTED, detail))
            retired_at = entry
        prev, expected = compute_record_hash(record), expected + 1
        last_action = _str(record.get("action"))
    return verdict(Verdict.COMPLETE if retired_at is not None else Verdict.OPEN)


def compute_trail_verdict(items: Sequence[Located], key: bytes) -> TrailVerdict:
    """The verdict on every stream among `items` (records and parts in the order received,
    across files): each stream is complete, open, or broken at its first bad record."""
    streams: dict[str, list[Received]] = {}
    strays: list[Breakage] = []
    for entry in compute_entries(items):
        if entry.uid is None:
            strays.append(_break(entry, Breach.MALFORMED, "it names no owner (uid)"))
            continue
        streams.setdefault(entry.uid, []).append(entry)
    verdicts = [_walk(uid, entries, key) for uid, entries in streams.items()]
    verdicts.sort(key=lambda v: (v.verdict != Verdict.BROKEN, v.kind or "", v.namespace or "",
                                 v.name or "", v.uid))  # fmt: skip
    return TrailVerdict(
        streams=verdicts,
        records=sum(v.records for v in verdicts),
        repeats=sum(v.repeats for v in verdicts),
        strays=strays,
    )


def describe_stream(stream: StreamVerdict) -> str:
    """`AccessRequest payments/edit-x7k2p (uid …)`."""
    where = "/".join(p for p in (stream.namespace, stream.name) if p)
    owner = f"{stream.kind or 'owner'} {where}".strip()
    return f"{owner} (uid {stream.uid})"


def describe_verdict(verdict: TrailVerdict) -> str:
    """The one-line summary of a verdict."""
    streams = len(verdict.streams)
    said = f"{streams} stream{'s' if streams != 1 else ''}, {verdict.records} records"
    if verdict.repeats:
        said += f" ({verdict.repeats} repeats dropped)"
    complete, open_ = verdict.count(Verdict.COMPLETE), verdict.count(Verdict.OPEN)
    if verdict.intact:
        return f"{said}: whole and unaltered; {complete} complete, {open_} still open"
    broken = verdict.count(Verdict.BROKEN)
    strays = f", {len(verdict.strays)} record(s) of no stream" if verdict.strays else ""
    return f"{said}: BROKEN: {broken} broken{strays}; {complete} complete, {open_} still open"
