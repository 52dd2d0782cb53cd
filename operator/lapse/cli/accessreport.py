"""An access review (`lapse.core.accessreview`) printed for whoever asked: a table for people at
a terminal, CSV for a spreadsheet, JSON for scripts, and a standalone HTML page to hand an
auditor or print to PDF.

Every value in the review comes from objects and records users can write into (names,
reasons, incident references), so the HTML escapes all of it and the CSV quotes what needs it.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Sequence
from datetime import datetime, timedelta

from lapse.cli.render import CLUSTER_WIDE, Row, short_duration, table, timestamp
from lapse.core.accessreview import AccessReview, ReviewRow

TABLE_COLUMNS = (
    "KIND",
    "NAME",
    "SUBJECT",
    "REQUESTER",
    "ROLE",
    "TARGET",
    "GRANTED",
    "ENDED",
    "HOW",
    "DURATION",
    "POLICY",
    "APPROVED BY",
    "REVIEW",
    "ACTIVITY",
)

CSV_COLUMNS = (
    "cluster",
    "kind",
    "namespace",
    "name",
    "uid",
    "subject",
    "requester",
    "role",
    "targetNamespaces",
    "grantedAt",
    "endedAt",
    "ended",
    "endReason",
    "duration",
    "durationSeconds",
    "policy",
    "approvedBy",
    "pullRequest",
    "commit",
    "approval",
    "incident",
    "reviewVerdict",
    "reviewer",
    "unreviewed",
    "activityEvents",
    "activityWrites",
    "activitySecretsRead",
    "activityExecSessions",
    "activityRefusals",
    "activity",
    "source",
)


def _name(row: ReviewRow) -> str:
    return f"{row.namespace}/{row.name}" if row.namespace else row.name


def _targets(row: ReviewRow) -> str:
    return ",".join(row.target_namespaces) or CLUSTER_WIDE


def _ended(row: ReviewRow) -> str:
    if row.ended is None:
        return "still active" if row.ended_at is None else "?"
    if not row.end_reason:
        return row.ended
    # `Revoked: fixed` says it all; `Revoked (Unreviewed: …)` needs the phase too.
    if row.end_reason.partition(":")[0] == row.ended:
        return row.end_reason
    return f"{row.ended} ({row.end_reason})"


def _review(row: ReviewRow) -> str:
    if row.kind != "BreakGlass":
        return ""
    if row.unreviewed:
        return "UNREVIEWED"
    return f"{row.review_verdict} by {row.reviewer}" if row.reviewer else str(row.review_verdict)


def _activity(row: ReviewRow) -> str:
    a = row.activity
    if a is None:
        return "none recorded"
    if not a.events and a.summary:
        return a.summary
    return (
        f"{a.events} requests, {a.writes} writes, {a.secrets_read} Secrets read, "
        f"{a.exec_sessions} exec, {a.refusals} refused"
    )


def _approval(row: ReviewRow) -> str:
    said = row.approval
    return f"{said}; incident {row.incident}" if row.incident else said


def _duration(row: ReviewRow) -> str:
    return short_duration(timedelta(seconds=row.duration_seconds))


def row_cells(row: ReviewRow, *, with_cluster: bool = False) -> tuple[str, ...]:
    """A row as people read it, one text per TABLE_COLUMNS: the terminal's table, the HTML
    report and the web page all show these very words."""
    name = _name(row) + (f" ({row.cluster})" if with_cluster and row.cluster else "")
    return (
        row.kind,
        name,
        row.subject or "?",
        row.requester or "?",
        row.role or "?",
        _targets(row),
        timestamp(row.granted_at),
        timestamp(row.ended_at) if row.ended_at else "-",
        _ended(row),
        _duration(row),
        row.policy or "-",
        _approval(row),
        _review(row) or "-",
        _activity(row),
    )


def summary_text(review: AccessReview) -> str:
    s = review.summary
    return (
        f"{s.grants} grant(s), {s.subjects} distinct subject(s), "
        f"{s.break_glasses} break-glass(es), {s.unreviewed} unreviewed"
    )


def render_table(review: AccessReview, *, with_cluster: bool = False) -> str:
    if not review.rows:
        return "No grant held access in this period."
    if with_cluster:
        rows = [
            Row((row.cluster or "?", *row_cells(row)), row.ended or "Active") for row in review.rows
        ]
        return table(("CLUSTER", *TABLE_COLUMNS), rows)
    rows = [Row(row_cells(row), row.ended or "Active") for row in review.rows]
    return table(TABLE_COLUMNS, rows)


def _csv_values(row: ReviewRow) -> list[str]:
    a = row.activity

    def count(value: int | None) -> str:
        return "" if value is None else str(value)

    return [
        row.cluster or "",
        row.kind,
        row.namespace or "",
        row.name,
        row.uid or "",
        row.subject or "",
        row.requester or "",
        row.role or "",
        " ".join(row.target_namespaces),
        timestamp(row.granted_at),
        timestamp(row.ended_at) if row.ended_at else "",
        row.ended or "",
        row.end_reason or "",
        _duration(row),
        str(row.duration_seconds),
        row.policy or "",
        " ".join(row.approved_by),
        row.pull_request or "",
        row.commit or "",
        row.approval,
        row.incident or "",
        row.review_verdict or "",
        row.reviewer or "",
        "true" if row.unreviewed else "false",
        count(a.events if a else None),
        count(a.writes if a else None),
        count(a.secrets_read if a else None),
        count(a.exec_sessions if a else None),
        count(a.refusals if a else None),
        a.summary if a else "",
        row.source,
    ]


def render_csv(review: AccessReview) -> str:
    """RFC 4180: a header row, CRLF line ends, fields quoted when they need it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(_csv_values(row) for row in review.rows)
    return out.getvalue()


def render_json(review: AccessReview) -> str:
    return json.dumps([row.to_wire() for row in review.rows], indent=2)


def _filters_text(review: AccessReview) -> str:
    f = review.filters
    said = [f"{label} {value}" for label, value in (
        ("role", f.role), ("namespace", f.namespace), ("subject", f.subject)
    ) if value]  # fmt: skip
    return ", ".join(said) or "none"


_STYLE = """
body { font: 13px/1.4 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em; }
h1 { font-size: 20px; margin: 0 0 .3em; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dt { font-weight: 600; }
table { border-collapse: collapse; width: 100%; margin-top: 1em; }
th, td { border: 1px solid #bbb; padding: .25em .45em; text-align: left; vertical-align: top; }
th { background: #eee; }
tr.unreviewed td { background: #fde8e8; }
.flag { color: #a00; font-weight: 700; }
@media print { body { margin: 0; } tr { page-break-inside: avoid; } }
"""


def _cell(text: str, flag: bool = False) -> str:
    escaped = html.escape(text)
    return f'<td class="flag">{escaped}</td>' if flag else f"<td>{escaped}</td>"


def render_html(review: AccessReview, *, generated: datetime, sources: Sequence[str]) -> str:
    """A standalone page: the period, the filters, a summary and every row."""
    period = f"{timestamp(review.since)} to {timestamp(review.until)}"
    facts = [
        ("Period", period),
        ("Filters", _filters_text(review)),
        ("Sources", ", ".join(sources) or "none"),
        ("Summary", summary_text(review)),
        ("Generated", timestamp(generated)),
    ]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in TABLE_COLUMNS)
    review_column = TABLE_COLUMNS.index("REVIEW")
    body = []
    for row in review.rows:
        cells = [
            _cell(text, flag=row.unreviewed and i == review_column)
            for i, text in enumerate(row_cells(row, with_cluster=True))
        ]
        css = ' class="unreviewed"' if row.unreviewed else ""
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    rows = (
        "\n".join(body)
        or f'<tr><td colspan="{len(TABLE_COLUMNS)}">No grant held access in this period.</td></tr>'
    )
    listed = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts)
    title = html.escape(f"Lapse access review, {period}")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{title}</h1>\n<dl>{listed}</dl>\n"
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n"
        "</body>\n</html>\n"
    )
