"""The page's access review: the query parsed at the edge, the answer in the CLI's own words.

Leads and auditors who do not live in a terminal want the quarterly review in a browser, and
a file to hand over. A second implementation would drift from `kubectl lapse audit report`,
so the grants are read by the command's own `read_cluster_grants`, the rows built by
`lapse.core.accessreview`, and every text and file made by `lapse.cli.accessreport`: for the
same period and filters the page shows, and downloads, what the command prints.

The period is whole days in UTC, as the page's date inputs give them: from the start of the
first day to the end of the last, or to now when the last is today (a grant still held is
counted up to now, never into the future).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from lapse.cli.accessreport import (
    TABLE_COLUMNS,
    render_csv,
    render_html,
    render_json,
    row_cells,
    summary_text,
)
from lapse.cli.audit import moment, resolve
from lapse.cli.render import timestamp
from lapse.core.accessreview import AccessReview, ReviewFilters

# What a period defaults to: the last 30 days, as an auditor's monthly look.
DEFAULT_DAYS = 30
# Download format: (media type, file extension).
FORMATS = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "json": ("application/json; charset=utf-8", "json"),
    "html": ("text/html; charset=utf-8", "html"),
}
# A namespace is a DNS label; checked here because it becomes part of the API's URL.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Role and subject names are matched, never sent anywhere; a bound keeps the query sane.
_MAX_FILTER = 253
# How the page tells someone who may not list requests everywhere to narrow the review.
NARROWING = "fill in a namespace"


class BadQuery(ValueError):
    """A query that names no period or filter Lapse can review; its text is shown as is."""


@dataclass(frozen=True)
class ReportQuery:
    """A validated `/api/report` query."""

    since: datetime
    until: datetime
    # The first and last day of the period (UTC), for the download's file name.
    first_day: date
    last_day: date
    filters: ReviewFilters
    # None: the page's own view (JSON for the table); else a download in that format.
    format: str | None

    def filename(self, extension: str) -> str:
        return f"lapse-access-review-{self.first_day}-{self.last_day}.{extension}"


def _moment(key: str, text: str, *, now: datetime, end: bool) -> datetime:
    """A date (a whole UTC day: its start, or for `until` its end), an RFC 3339 time, or a
    span back from now as `audit report` takes it (30d, 12h)."""
    if _DATE.fullmatch(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise BadQuery(f"{key}: {text!r} is not a date of the calendar") from None
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start + timedelta(days=1) if end else start
    try:
        return resolve(moment(text), now)
    except ValueError as error:
        raise BadQuery(f"{key}: {error}") from None


def _filter(query: Mapping[str, str], key: str) -> str | None:
    text = (query.get(key) or "").strip()
    if not text:
        return None
    if len(text) > _MAX_FILTER or not text.isprintable():
        raise BadQuery(f"{key}: not a name Lapse could match")
    return text


def parse_report_query(query: Mapping[str, str], *, now: datetime) -> ReportQuery:
    """The period, the filters and the format of a query; `now` is the one reading of the
    clock for the whole answer."""
    since_text = (query.get("since") or "").strip()
    until_text = (query.get("until") or "").strip()
    default_since = now - timedelta(days=DEFAULT_DAYS)
    since = _moment("since", since_text, now=now, end=False) if since_text else default_since
    until = _moment("until", until_text, now=now, end=True) if until_text else now
    until = min(until, now)
    if since > until:
        raise BadQuery(
            f"the period starts ({timestamp(since)}) after it ends ({timestamp(until)}): "
            "pick a start on or before the end, and not in the future"
        )
    namespace = _filter(query, "namespace")
    if namespace is not None and not _NAMESPACE.fullmatch(namespace):
        raise BadQuery(f"namespace: {namespace!r} is not a namespace name")
    output = (query.get("format") or "").strip().lower() or None
    if output is not None and output not in FORMATS:
        raise BadQuery(f"format: {output!r} is not one of {', '.join(FORMATS)}")
    # The last day is the one the period's end falls in; an end at midnight closes the day
    # before it.
    last = until - timedelta(microseconds=1) if until > since else until
    return ReportQuery(
        since=since,
        until=until,
        first_day=since.date(),
        last_day=last.date(),
        filters=ReviewFilters(
            role=_filter(query, "role"), namespace=namespace, subject=_filter(query, "subject")
        ),
        format=output,
    )


def render_download(
    review: AccessReview, output: str, *, generated: datetime, sources: list[str]
) -> str:
    """The file `kubectl lapse audit report -o <output>` prints for the same review."""
    if output == "csv":
        return render_csv(review)
    if output == "html":
        return render_html(review, generated=generated, sources=sources)
    return render_json(review) + "\n"


def review_view(review: AccessReview, *, warnings: list[str], sources: list[str]) -> dict[str, Any]:
    """What the page draws: the summary and each row's cells, in the command's words, with
    the few fields the page needs to link a row and flag it."""
    return {
        "since": timestamp(review.since),
        "until": timestamp(review.until),
        "summary": review.summary.to_wire(),
        "summaryText": summary_text(review),
        "columns": list(TABLE_COLUMNS),
        "rows": [
            {
                "kind": row.kind,
                "namespace": row.namespace,
                "name": row.name,
                "source": row.source,
                "unreviewed": row.unreviewed,
                "cells": list(row_cells(row)),
            }
            for row in review.rows
        ],
        "warnings": warnings,
        "sources": sources,
    }
