"""Lapse's exported trail as it lands where security teams keep it: one record a line, wrapped
however the sink and the collector behind it wrap it.

Each line holds its record somewhere: a plain JSON line (a file sink, `jq`), a syslog line
(RFC 5424: the JSON is the MSG, after the header and structured data), a Splunk HTTP Event
Collector envelope `{"time": …, "event": {record}}` (one or several on a line, as a batch is
posted), or a JSON array of those. Lines that hold no record (other programs' syslog lines)
are passed over and counted. Every item keeps its file and line, so a verdict can point at it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from lapse.cli.errors import CliError, ExitCode
from lapse.core.trail import PART_KEY
from lapse.core.trailcheck import Located

STDIN = "-"
STDIN_NAME = "<stdin>"

_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class TrailInput:
    items: list[Located]
    lines: int
    # Lines with text but no record in them.
    skipped: int


def is_record(value: Mapping[str, Any]) -> bool:
    """A trail record (or a part of one), as opposed to any other JSON a log may hold."""
    if isinstance(value.get(PART_KEY), Mapping):
        return True
    return "stream" in value or ("seq" in value and "sig" in value)


def _decode_all(text: str) -> list[Any] | None:
    """Every JSON value in `text`, one after another to its end; None unless all of it is."""
    values: list[Any] = []
    index = 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        try:
            value, index = _DECODER.raw_decode(text, index)
        except ValueError:
            return None
        values.append(value)
    return values


def _unwrap(value: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, list):
        for item in value:
            yield from _unwrap(item)
        return
    if not isinstance(value, Mapping):
        return
    if is_record(value):
        yield value
        return
    event = value.get("event")
    if isinstance(event, str):
        # HEC also takes the event as a string: the record's JSON, as text.
        try:
            event = json.loads(event)
        except ValueError:
            return
    if isinstance(event, Mapping | list):
        yield from _unwrap(event)


def parse_line(line: str) -> list[Mapping[str, Any]]:
    """The records and parts one line holds, in order; none for a line of something else."""
    text = line.strip().lstrip("\ufeff")
    if not text:
        return []
    if text[0] in "{[":
        values = _decode_all(text)
        if values is not None:
            return [r for v in values for r in _unwrap(v)]
    # A syslog line: the first `{` from which the rest of the line is JSON.
    start = text.find("{")
    while start != -1:
        values = _decode_all(text[start:])
        if values is not None:
            return [r for v in values for r in _unwrap(v)]
        start = text.find("{", start + 1)
    return []


def read_trail(paths: Sequence[str], stdin: TextIO | None = None) -> TrailInput:
    """Every record and part in `paths` (`-` is standard input), in the order given."""
    items: list[Located] = []
    total = skipped = 0
    for path in paths:
        name = STDIN_NAME if path == STDIN else path
        try:
            if path == STDIN:
                text = (stdin or sys.stdin).read()
            else:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    text = handle.read()
        except OSError as error:
            raise CliError(
                f"cannot read {name}: {error.strerror or error}", ExitCode.USAGE
            ) from None
        # Newlines only: the line numbers editors and `sed -n Np` use (splitlines would also
        # split at the Unicode separators a record's text may hold).
        lines = text.split("\n")
        if lines and not lines[-1]:
            lines.pop()
        for number, line in enumerate(lines, start=1):
            total += 1
            found = parse_line(line)
            if not found and line.strip():
                skipped += 1
            items += [Located(record, name, number) for record in found]
    return TrailInput(items, total, skipped)
