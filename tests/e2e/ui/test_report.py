"""The access review on the web page: an auditor picks a period, sees who held access and on
whose say-so, and downloads the files `kubectl lapse audit report` prints.

The grants are real — a self-service request revoked, a break-glass reviewed and one not —
made by the real operator; the auditor holds only what docs/cli.md gives one (read on
grants) and runs their own `kubectl lapse ui`. The session's operator deletes an ended owner
30 s after it ends (tests/e2e/conftest.py RETENTION), so the page reads the revoked request
within seconds of its end.
"""

from __future__ import annotations

import csv
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lapse.cli.accessreport import CSV_COLUMNS
from tests.e2e import test_audit_cli, test_breakglass
from tests.e2e.conftest import Team, wait_for
from tests.e2e.test_audit_cli import Auditor
from tests.e2e.test_breakglass import Crew, annotate, unique
from tests.e2e.test_cli import lapse
from tests.e2e.ui.conftest import screenshot
from tests.e2e.ui.test_guard import call

# The fixtures of the break-glass and audit suites, by name: a crew of SREs and their
# reviewers, and an auditor who may read every grant.
crew = test_breakglass.crew
glass_rbac = test_breakglass.glass_rbac
auditor = test_audit_cli.auditor

pytestmark = pytest.mark.process_only(
    reason="the web page's browser tests run with the process operator (make test)"
)

SECOND = 1000


def cell(page: Any, name: str, column: str) -> str:
    return str(page.locator(f"tr[data-name='{name}'] td[data-column='{column}']").inner_text())


def download(page: Any, label: str) -> tuple[str, str]:
    """Download by keyboard, as a person tabbing to the link would: its name and its text."""
    with page.expect_download() as started:
        page.get_by_role("link", name=label).focus()
        page.keyboard.press("Enter")
    done = started.value
    return done.suggested_filename, Path(done.path()).read_text(encoding="utf-8")


def test_an_auditor_reviews_a_period_on_the_page_and_downloads_it(
    team: Team, crew: Crew, auditor: Auditor, serve: Any, open_page: Any
) -> None:
    glass_policy = crew.policy()
    reviewed, unreviewed = unique("reviewed"), unique("unreviewed")
    crew.break_glass(reviewed, duration="10m")
    crew.break_glass(unreviewed, duration="10m", incident="INC-<b>")
    policy = team.policy()
    team.ask("fix-retries", duration="1h")
    crew.wait_phase(reviewed, "Active")
    crew.wait_phase(unreviewed, "Active")
    annotate(crew.as_lead, reviewed, "lapse.dev/review", "Justified: failover needed a restart")
    team.wait_phase("fix-retries", "Active")
    revoked = lapse(team, "revoke", "fix-retries", "-n", team.namespace, "-m", "Finished")
    assert revoked.returncode == 0, revoked.stderr
    team.wait_phase("fix-retries", "Revoked")
    wait_for(
        lambda: (crew.get(reviewed) or {}).get("status", {}).get("review"),
        timeout=10,
        what="the review in status",
    )

    server = serve(auditor.user, (auditor.group,))
    page = open_page(server.url + "#/review")
    # The last 30 days, at once.
    page.locator("[data-summary]").wait_for(timeout=15 * SECOND)
    today = datetime.now(UTC).date()
    first, last = (today - timedelta(days=1)).isoformat(), today.isoformat()

    form = page.get_by_role("form", name="Access review period")
    form.get_by_label("Since").fill(first)
    form.get_by_label("Until").fill(last)
    form.get_by_label("Namespace").fill(team.namespace)
    page.keyboard.press("Enter")
    summary = page.locator("[data-summary]").filter(has_text=f"{first}T00:00:00Z to")
    summary.wait_for(timeout=15 * SECOND)
    shown = page.locator("table.review tbody tr").count()
    assert re.search(
        rf"^{first}T00:00:00Z to {last}T[\d:]+Z: {shown} grant\(s\), ", summary.inner_text()
    )

    assert cell(page, "fix-retries", "SUBJECT") == "User:alice"
    assert cell(page, "fix-retries", "REQUESTER") == "alice"
    assert cell(page, "fix-retries", "ROLE") == "ClusterRole/edit"
    assert cell(page, "fix-retries", "TARGET") == team.namespace
    assert cell(page, "fix-retries", "POLICY") == policy
    assert cell(page, "fix-retries", "APPROVED BY") == f"self-service (policy {policy})"
    assert (
        cell(page, "fix-retries", "HOW") == "Revoked (RevokedByUser: Revoked by alice: Finished.)"
    )
    assert cell(page, "fix-retries", "ENDED") != "-"
    assert cell(page, "fix-retries", "REVIEW") == "-"
    assert cell(page, reviewed, "POLICY") == glass_policy
    assert cell(page, reviewed, "APPROVED BY") == (
        f"break-glass (policy {glass_policy}); incident INC-4711"
    )
    assert cell(page, reviewed, "REVIEW") == "Justified by lead"
    flag = page.locator(f"tr[data-name='{unreviewed}'] [data-unreviewed]")
    assert flag.inner_text() == "UNREVIEWED"
    # What people typed is text on the page, never markup.
    assert "incident INC-<b>" in cell(page, unreviewed, "APPROVED BY")
    # A row still in the cluster links to its story.
    link = page.locator("tr[data-name='fix-retries'] a")
    assert link.get_attribute("href") == f"#/grant/ar/{team.namespace}/fix-retries"
    page.locator("main").focus()
    page.set_viewport_size({"width": 1920, "height": 900})
    screenshot(page, "report")

    name, text = download(page, "Download CSV")
    assert name == f"lapse-access-review-{first}-{last}.csv"
    rows = list(csv.DictReader(text.splitlines()))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == shown
    by_name = {row["name"]: row for row in rows}
    request = by_name["fix-retries"]
    assert (request["approval"], request["policy"]) == (f"self-service (policy {policy})", policy)
    assert (request["ended"], request["subject"]) == ("Revoked", "User:alice")
    glass = by_name[reviewed]
    assert (glass["reviewVerdict"], glass["reviewer"], glass["unreviewed"]) == (
        "Justified", "lead", "false"
    )  # fmt: skip
    assert by_name[unreviewed]["unreviewed"] == "true"

    name, text = download(page, "Download JSON")
    assert name == f"lapse-access-review-{first}-{last}.json"
    assert {row["name"]: row["approval"] for row in json.loads(text)}["fix-retries"] == (
        f"self-service (policy {policy})"
    )
    name, text = download(page, "Download HTML report")
    assert name.endswith(".html") and text.startswith("<!DOCTYPE html>")
    assert "Justified by lead" in text and "INC-&lt;b&gt;" in text and "INC-<b>" not in text

    # A period that starts after it ends is refused, and the page says why.
    form.get_by_label("Since").fill((today + timedelta(days=1)).isoformat())
    form.get_by_role("button", name="Show").click()
    notice = page.locator("#notice.error")
    notice.wait_for()
    assert "after it ends" in notice.inner_text(), notice.inner_text()
    page.locator("[data-review-error]").wait_for()
    assert page.locator("table.review").count() == 0
    # So is a date no calendar has, asked of the server directly.
    answer = page.request.get(server.url + "api/report?since=2026-02-30")
    assert answer.status == 400
    assert "not a date of the calendar" in answer.json()["error"]
    assert not page.errors

    # The review is the user's credentials at work: the guard keeps other sites from it.
    path = f"/{server.token}/api/report"
    assert call(server, "GET", path, headers={"Origin": "http://evil.example"})[0] == 403
    assert call(server, "GET", "/api/report")[0] == 403
