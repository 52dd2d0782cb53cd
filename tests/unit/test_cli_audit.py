"""`kubectl lapse audit` at the edge: the line formats a trail arrives in, key files, times,
and the report's CSV and HTML."""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lapse.cli import main
from lapse.cli.accessreport import render_csv, render_html
from lapse.cli.audit import moment, parse_key, resolve
from lapse.cli.trailinput import parse_line, read_trail
from lapse.core.accessreview import build_access_review
from lapse.core.grants import GrantKey
from lapse.core.models import BreakGlass
from lapse.core.trail import compute_parts
from tests.unit.trails import ADMIN, KEY, at, build_stream, glass_status, request_status

OWNER = GrantKey("AccessRequest", "payments", "fix", "uid-fix")


def stream() -> list[dict[str, object]]:
    return build_stream(OWNER, request_status(approvers=["bob"]), retired=True)


def test_line_formats() -> None:
    record = stream()[0]
    plain = json.dumps(record)
    assert parse_line(plain) == [record]
    syslog = f'<134>1 2026-11-24T14:00:00Z node lapse - audit [x@1 a="{{"] {plain}'
    assert parse_line(syslog) == [record]
    assert parse_line("\ufeff" + syslog + "\r") == [record]
    hec = json.dumps({"time": 1, "host": "n", "event": record})
    assert parse_line(hec + " " + hec) == [record, record]
    assert parse_line(json.dumps([{"time": 1, "event": record}, record])) == [record, record]
    assert parse_line(json.dumps({"time": 1, "event": plain})) == [record]
    part = compute_parts(record, 200)[0]
    assert parse_line(json.dumps(part)) == [part]
    for other in ("", "Dec  5 10:00:00 node sshd[7]: opened", '{"level": "info"}', "{broken"):
        assert parse_line(other) == []


def test_read_trail_counts_lines_and_names_them(tmp_path: Path) -> None:
    records = stream()
    path = tmp_path / "trail.log"
    path.write_text("noise\n" + "\n".join(json.dumps(r) for r in records) + "\n")
    found = read_trail([str(path)])
    assert (found.lines, found.skipped) == (len(records) + 1, 1)
    assert [(i.file, i.line) for i in found.items][:2] == [(str(path), 2), (str(path), 3)]


def test_key_files_raw_or_base64() -> None:
    raw = bytes(range(40))
    assert parse_key(raw) == raw
    assert parse_key(base64.b64encode(raw) + b"\n") == raw
    # Text that happens to be base64 of a short value is a raw key.
    assert parse_key(b"abcd") == b"abcd"


def test_times() -> None:
    now = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    assert resolve(moment("30d"), now) == now - timedelta(days=30)
    assert resolve(moment("2w"), now) == now - timedelta(days=14)
    assert resolve(moment("12h"), now) == now - timedelta(hours=12)
    assert resolve(moment("2026-10-01"), now) == datetime(2026, 10, 1, tzinfo=UTC)
    assert resolve(moment("2026-10-01T02:00:00+02:00"), now) == datetime(2026, 10, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        moment("last week")


def test_csv_is_rfc_4180_and_html_escapes() -> None:
    glass = BreakGlass.model_validate(
        {
            "metadata": {"name": "inc-1", "uid": "uid-inc-1"},
            "spec": {
                "role": {"kind": "ClusterRole", "name": "cluster-admin"},
                "duration": "30m",
                "reason": "x",
                "incident": 'INC-1 "<script>alert(1)</script>", urgent',
            },
        }
    ).model_copy(update={"status": glass_status(reviewer=None)})
    review = build_access_review(grants=[glass], since=at(-1), until=at(60))
    text = render_csv(review)
    assert text.count("\r\n") == 2
    (row,) = csv.DictReader(io.StringIO(text, newline=""))
    assert row["incident"] == 'INC-1 "<script>alert(1)</script>", urgent'
    assert row["unreviewed"] == "true"
    page = render_html(review, generated=at(61), sources=["cluster <prod>"])
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "cluster &lt;prod&gt;" in page and "UNREVIEWED" in page
    assert "1 grant(s), 1 distinct subject(s), 1 break-glass(es), 1 unreviewed" in page


def test_verify_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = stream() + build_stream(
        GrantKey("BreakGlass", None, "inc-1", "uid-inc-1"), glass_status(), role=ADMIN
    )
    trail, key = tmp_path / "trail.log", tmp_path / "key"
    trail.write_text("".join(json.dumps(r) + "\n" for r in records))
    key.write_bytes(KEY)
    assert main(["audit", "verify", str(trail), "--key-file", str(key)]) == 0
    assert "2 streams, 8 records: whole and unaltered; 1 complete, 1 still open" in (
        capsys.readouterr().out
    )
    records[4]["seq"] = 9
    trail.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["audit", "verify", str(trail), "--key-file", str(key)]) == 1
    out = capsys.readouterr().out
    assert f"{trail}:5 (seq 9): altered" in out or f"{trail}:5 (seq 9): bad signature" in out
    assert main(["audit", "verify", str(tmp_path / "none"), "--key-file", str(key)]) == 2
    assert "cannot read" in capsys.readouterr().err
