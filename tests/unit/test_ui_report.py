"""The page's access review at the edge: the period a query names, the refusals it earns, and
the answer in the command's own words and files.

The browser test (tests/e2e/ui/test_report.py) proves the page draws and downloads it from
real grants; these fix every rule of the query and the headers without a cluster.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lapse.cli.accessreport import CSV_COLUMNS, TABLE_COLUMNS, render_table
from lapse.cli.errors import CliError
from lapse.core.accessreview import build_access_review
from lapse.core.kinds import ACCESS_REQUEST, Kind
from lapse.core.models import AccessRequest, BreakGlass
from lapse.ui.accessreview import BadQuery, parse_report_query, review_view
from lapse.ui.guard import Gate
from lapse.ui.server import Scope, Server
from tests.unit.trails import at, glass_status, request_status

NOW = datetime(2026, 11, 24, 15, 30, tzinfo=UTC)


def test_a_period_of_whole_days_ends_at_the_end_of_the_last_or_now() -> None:
    query = parse_report_query({"since": "2026-10-01", "until": "2026-10-31"}, now=NOW)
    assert query.since == datetime(2026, 10, 1, tzinfo=UTC)
    assert query.until == datetime(2026, 11, 1, tzinfo=UTC)
    assert (query.first_day, query.last_day) == (date(2026, 10, 1), date(2026, 10, 31))
    assert query.filename("csv") == "lapse-access-review-2026-10-01-2026-10-31.csv"
    assert query.format is None

    today = parse_report_query({"since": "2026-11-24", "until": "2026-11-24"}, now=NOW)
    assert today.until == NOW and today.last_day == date(2026, 11, 24)

    default = parse_report_query({}, now=NOW)
    assert (default.since, default.until) == (NOW - timedelta(days=30), NOW)

    # What `audit report` takes works too: times, and spans back from now.
    spans = parse_report_query({"since": "90d", "until": "2026-11-01T12:00:00Z"}, now=NOW)
    assert spans.since == NOW - timedelta(days=90)
    assert spans.until == datetime(2026, 11, 1, 12, tzinfo=UTC)


def test_filters_and_format() -> None:
    query = parse_report_query(
        {"role": " edit ", "namespace": "payments", "subject": "User:alice", "format": "CSV"},
        now=NOW,
    )
    assert (query.filters.role, query.filters.namespace, query.filters.subject) == (
        "edit", "payments", "User:alice"
    )  # fmt: skip
    assert query.format == "csv"
    assert parse_report_query({"namespace": "", "role": "  "}, now=NOW).filters.namespace is None


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ({"since": "2026-13-01"}, "since: '2026-13-01' is not a date of the calendar"),
        ({"since": "yesterday"}, "since: 'yesterday' is not a time such as 2026-10-01"),
        ({"until": "2026-02-30"}, "until: '2026-02-30' is not a date of the calendar"),
        ({"since": "2026-11-10", "until": "2026-11-01"}, "the period starts (2026-11-10T00:00"),
        ({"since": "2026-12-01"}, "after it ends (2026-11-24T15:30:00Z)"),
        ({"namespace": "../kube-system"}, "namespace: '../kube-system' is not a namespace"),
        ({"role": "x" * 300}, "role: not a name Lapse could match"),
        ({"subject": "alice\n"}, None),
        ({"subject": "al\x00ice"}, "subject: not a name"),
        ({"format": "xlsx"}, "format: 'xlsx' is not one of csv, json, html"),
    ],
)
def test_a_bad_query_is_refused_with_a_sentence(query: dict[str, str], said: str | None) -> None:
    if said is None:
        assert parse_report_query(query, now=NOW).filters.subject == "alice"
        return
    with pytest.raises(BadQuery) as refused:
        parse_report_query(query, now=NOW)
    assert said in str(refused.value)


def grants() -> list[AccessRequest | BreakGlass]:
    request = AccessRequest.model_validate(
        {
            "metadata": {"name": "fix", "namespace": "payments", "uid": "uid-fix"},
            "spec": {"role": {"kind": "ClusterRole", "name": "edit"}, "reason": "x"},
        }
    ).model_copy(update={"status": request_status()})
    glass = BreakGlass.model_validate(
        {
            "metadata": {"name": "inc-1", "uid": "uid-inc-1"},
            "spec": {
                "role": {"kind": "ClusterRole", "name": "cluster-admin"},
                "duration": "30m",
                "reason": "x",
                "incident": "INC-<1>",
            },
        }
    ).model_copy(update={"status": glass_status(reviewer=None)})
    return [request, glass]


def test_the_view_shows_the_commands_words() -> None:
    review = build_access_review(grants=grants(), since=at(-1), until=at(90))
    view = review_view(review, warnings=["break-glasses left out: no"], sources=["cluster x"])
    assert view["columns"] == list(TABLE_COLUMNS)
    assert view["summaryText"] == (
        "2 grant(s), 2 distinct subject(s), 1 break-glass(es), 1 unreviewed"
    )
    table = render_table(review)
    for row in view["rows"]:
        # Every cell is a word of the command's own table.
        assert all(cell in table for cell in row["cells"]), row
    glass = next(r for r in view["rows"] if r["kind"] == "BreakGlass")
    assert glass["unreviewed"] is True and "UNREVIEWED" in glass["cells"]
    assert json.loads(json.dumps(view)) == view


class FakeKube:
    """The two lists an access review reads; break-glasses refused when told."""

    cluster = "prod"
    server = "https://prod.example:6443"

    def __init__(self, *, glass_refused: bool = False) -> None:
        self.glass_refused = glass_refused
        self.namespaces: list[str | None] = []

    def list(self, resource: Kind, namespace: str | None) -> list[dict[str, Any]]:
        if resource is ACCESS_REQUEST:
            self.namespaces.append(namespace)
            found = [g for g in grants() if g.kind == "AccessRequest"]
        elif self.glass_refused:
            raise CliError("you may not list breakglasses")
        else:
            found = [g for g in grants() if g.kind == "BreakGlass"]
        return [g.model_dump(by_alias=True, mode="json", exclude_none=True) for g in found]


def ask(kube: FakeKube, path: str, **headers: str) -> tuple[int, dict[str, str], str]:
    gate = Gate(token="t0k", port=8123)

    async def run() -> tuple[int, dict[str, str], str]:
        feed: Any = None
        server = Server(kube, gate, Scope(None, None, "default"), feed)  # type: ignore[arg-type]
        async with TestClient(TestServer(server.app())) as client:
            response = await client.get(
                f"/t0k/{path}", headers={"Host": "127.0.0.1:8123", **headers}
            )
            return response.status, dict(response.headers), await response.text()

    return asyncio.run(run())


def test_the_endpoint_answers_the_view_a_download_or_a_refusal() -> None:
    kube = FakeKube(glass_refused=True)
    period = "since=2026-11-24&until=2026-11-24"
    status, _, text = ask(kube, f"api/report?{period}&namespace=payments")
    assert status == 200, text
    view = json.loads(text)
    assert [r["name"] for r in view["rows"]] == ["fix"]
    assert view["warnings"] == ["break-glasses left out: you may not list breakglasses"]
    assert view["sources"] == ["cluster prod"]
    assert kube.namespaces == ["payments"]

    status, headers, text = ask(FakeKube(), f"api/report?{period}&format=csv")
    assert status == 200, text
    assert headers["Content-Disposition"] == (
        'attachment; filename="lapse-access-review-2026-11-24-2026-11-24.csv"'
    )
    assert headers["Content-Type"].startswith("text/csv")
    # The guard's headers are on downloads too.
    assert headers["Cache-Control"] == "no-store" and headers["X-Content-Type-Options"]
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {r["name"] for r in rows} == {"fix", "inc-1"}

    status, _, text = ask(FakeKube(), "api/report?since=2026-13-01")
    assert status == 400 and "not a date of the calendar" in json.loads(text)["error"]
    # Another site's page cannot read the review through the user's credentials.
    status, _, _ = ask(FakeKube(), f"api/report?{period}", **{"Sec-Fetch-Site": "cross-site"})
    assert status == 403
