"""The trail's receiver: real streams, tampered with as an attacker would, each tampering named
at the record that shows it; what honest delivery does (repeats, parts) is accepted."""

from __future__ import annotations

import copy
from typing import Any

from lapse.core.grants import GrantKey
from lapse.core.models import Phase
from lapse.core.trail import compute_parts, compute_record_hash, compute_signature
from lapse.core.trailcheck import (
    Breach,
    Located,
    TrailVerdict,
    Verdict,
    compute_trail_verdict,
    describe_verdict,
)
from tests.unit.trails import (
    ADMIN,
    KEY,
    OTHER_KEY,
    build_stream,
    glass_status,
    located,
    request_status,
)

REQUEST = GrantKey("AccessRequest", "payments", "fix", "uid-fix")
OTHER = GrantKey("AccessRequest", "payments", "look", "uid-look")
GLASS = GrantKey("BreakGlass", None, "inc-4711", "uid-glass")


def retired_stream() -> list[dict[str, Any]]:
    return build_stream(REQUEST, request_status(approvers=["bob"]), retired=True)


def verify(records: list[dict[str, Any]], key: bytes = KEY) -> TrailVerdict:
    return compute_trail_verdict(located(records), key)


def only_break(verdict: TrailVerdict) -> tuple[Breach, int, int | None]:
    (broken,) = [s for s in verdict.streams if s.verdict == Verdict.BROKEN]
    assert broken.breakage is not None
    return broken.breakage.breach, broken.breakage.line, broken.breakage.seq


def test_intact_streams_complete_and_open() -> None:
    retired = retired_stream()
    open_ = build_stream(OTHER, request_status(ended=None))
    glass = build_stream(GLASS, glass_status(), role=ADMIN)
    verdict = verify(retired + open_ + glass)
    assert verdict.intact
    states = {s.uid: s.verdict for s in verdict.streams}
    assert states == {
        "uid-fix": Verdict.COMPLETE,
        "uid-look": Verdict.OPEN,
        "uid-glass": Verdict.OPEN,
    }
    assert verdict.records == len(retired) + len(open_) + len(glass)
    assert describe_verdict(verdict) == (
        f"3 streams, {verdict.records} records: whole and unaltered; 1 complete, 2 still open"
    )


def test_streams_may_interleave() -> None:
    first, second = retired_stream(), build_stream(OTHER, request_status())
    assert len(second) == 2
    mixed = [r for pair in zip(first, second, strict=False) for r in pair] + first[2:]
    assert verify(mixed).intact


def test_repeats_are_dropped() -> None:
    stream = retired_stream()
    # At-least-once delivery: a sink retried a batch, and an old record came again later.
    again = stream[:3] + stream[1:3] + stream[3:] + [stream[0]]
    verdict = verify(again)
    assert verdict.intact
    assert verdict.repeats == 3
    assert verdict.records == len(stream)
    assert "(3 repeats dropped)" in describe_verdict(verdict)


def test_a_changed_field_is_named() -> None:
    stream = retired_stream()
    stream[2]["subject"] = "User:mallory"
    breach, line, seq = only_break(verify(stream))
    assert (breach, line, seq) == (Breach.ALTERED, 3, 3)


def test_a_changed_last_record_has_a_bad_signature() -> None:
    stream = build_stream(REQUEST, request_status())
    stream[-1]["reason"] = "Expired"
    stream[-1]["message"] = "Nothing happened."
    breach, line, seq = only_break(verify(stream))
    assert (breach, line, seq) == (Breach.BAD_SIGNATURE, len(stream), len(stream))


def test_a_dropped_record_is_named() -> None:
    stream = retired_stream()
    del stream[1]
    verdict = verify(stream)
    breach, line, seq = only_break(verdict)
    assert (breach, line, seq) == (Breach.MISSING, 2, 3)
    assert verdict.streams[0].breakage is not None
    assert "record(s) 2 before this one never arrived" in verdict.streams[0].breakage.detail


def test_several_dropped_records() -> None:
    stream = retired_stream()
    del stream[1:3]
    verdict = verify(stream)
    assert only_break(verdict) == (Breach.MISSING, 2, 4)
    assert "2..3" in (verdict.streams[0].breakage.detail if verdict.streams[0].breakage else "")


def test_swapped_records_are_reordered() -> None:
    stream = retired_stream()
    stream[1], stream[2] = stream[2], stream[1]
    assert only_break(verify(stream)) == (Breach.REORDERED, 2, 3)


def test_resigned_with_another_key() -> None:
    """Whoever lacks the key may rebuild a whole stream, chained and signed with their own."""
    forged = build_stream(REQUEST, request_status(approvers=["bob"]), signing_key=OTHER_KEY)
    assert only_break(verify(forged)) == (Breach.BAD_SIGNATURE, 1, 1)


def test_an_insider_rewrite_breaks_the_next_link() -> None:
    """Even with the key, a record rewritten in place breaks the link the next one carries."""
    stream = retired_stream()
    stream[1]["message"] = "bob approved: looked fine."
    stream[1]["sig"] = compute_signature(stream[1], KEY)
    breach, line, seq = only_break(verify(stream))
    assert (breach, line, seq) == (Breach.ALTERED, 3, 3)


def test_duplicate_id_with_other_content() -> None:
    stream = retired_stream()
    changed = copy.deepcopy(stream[2])
    changed["subject"] = "User:mallory"
    changed["sig"] = compute_signature(changed, KEY)
    verdict = verify([*stream, changed])
    assert only_break(verdict) == (Breach.CONFLICT, len(stream) + 1, 3)


def test_deleted_retired_record_leaves_the_stream_open() -> None:
    """Without its `retired` record, a deleted owner's stream can no longer be shown complete:
    it reads as still kept, and the verdict names the last record there is."""
    stream = retired_stream()
    complete = verify(stream).streams[0]
    assert complete.verdict == Verdict.COMPLETE and complete.last_action == "retired"
    cut = verify(stream[:-1]).streams[0]
    assert cut.verdict == Verdict.OPEN
    assert (cut.last_seq, cut.last_action) == (len(stream) - 1, "expired")


def test_retired_record_that_miscounts() -> None:
    """A forger holding the key who drops the tail and writes a `retired` after it anyway."""
    stream = retired_stream()
    retired = {**stream[-1], "seq": 3, "prev": compute_record_hash(stream[1])}
    retired["sig"] = compute_signature(retired, KEY)
    assert only_break(verify([*stream[:2], retired])) == (Breach.MISCOUNTED, 3, 3)


def test_records_after_retired() -> None:
    stream = retired_stream()
    after = {**stream[-1], "id": "x", "seq": len(stream) + 1, "action": "granted"}
    after["prev"] = compute_record_hash(stream[-1])
    after["sig"] = compute_signature(after, KEY)
    assert only_break(verify([*stream, after])) == (Breach.AFTER_RETIRED, len(stream) + 1, 6)


def test_unknown_stream_version() -> None:
    stream = retired_stream()
    stream[0]["stream"] = "lapse.dev/audit/v9"
    stream[0]["sig"] = compute_signature(stream[0], KEY)
    assert only_break(verify(stream)) == (Breach.UNKNOWN_STREAM, 1, 1)


def parts_of(stream: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [part for record in stream for part in compute_parts(record, 300)]


def test_parts_are_joined() -> None:
    parts = parts_of(retired_stream())
    assert len(parts) > 10
    verdict = compute_trail_verdict(located(parts), KEY)
    assert verdict.intact and verdict.streams[0].verdict == Verdict.COMPLETE
    # Parts sent twice are repeats too.
    assert compute_trail_verdict(located(parts + parts[:4]), KEY).intact


def test_truncated_parts_are_named() -> None:
    stream = retired_stream()
    parts = parts_of(stream)
    first_of_third = next(i for i, p in enumerate(parts) if p["lapsePart"]["seq"] == 3)
    size = parts[first_of_third]["lapsePart"]["parts"]
    del parts[first_of_third + size - 1]
    verdict = compute_trail_verdict(located(parts), KEY)
    breach, line, seq = only_break(verdict)
    assert (breach, line, seq) == (Breach.INCOMPLETE, first_of_third + 1, 3)
    assert f"part(s) {size} of {size} never arrived" in str(verdict.streams[0].breakage)


def test_a_part_with_other_data() -> None:
    parts = parts_of(retired_stream())
    forged = copy.deepcopy(parts[1])
    forged["lapsePart"]["data"] = forged["lapsePart"]["data"][::-1]
    assert only_break(compute_trail_verdict(located([*parts, forged]), KEY))[0] == Breach.CONFLICT


def test_break_names_the_file_and_line_across_files() -> None:
    stream = retired_stream()
    stream[3]["reason"] = "Revoked"
    items = [Located(r, "day1.log", n) for n, r in enumerate(stream[:2], start=7)]
    items += [Located(r, "day2.log", n) for n, r in enumerate(stream[2:], start=1)]
    verdict = compute_trail_verdict(items, KEY)
    (stream_verdict,) = verdict.streams
    assert stream_verdict.breakage is not None
    assert (stream_verdict.breakage.file, stream_verdict.breakage.line) == ("day2.log", 2)
    assert stream_verdict.last_seq == 3
    assert "BROKEN" in describe_verdict(verdict)


def test_record_without_owner_is_a_stray() -> None:
    stream = build_stream(REQUEST, request_status(ended=Phase.REVOKED))
    del stream[0]["uid"]
    verdict = verify(stream)
    assert not verdict.intact
    assert verdict.strays[0].breach == Breach.MALFORMED and verdict.strays[0].line == 1
