"""The web page in a real browser: ask, watch, approve, be refused, break glass, review.

Every person runs their own `kubectl lapse ui` (impersonated, holding only the sample roles)
and acts in headless chromium as a person would: links, forms, buttons and the keyboard. What
the page shows is checked against what the API holds. Screenshots of every page go to
build/ui-screenshots.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import pytest

from tests.cluster import Cluster
from tests.e2e.conftest import wait_for
from tests.e2e.ui.conftest import People, screenshot

# The page is the command line's (`kubectl lapse ui`), not the operator's: where the operator
# runs changes nothing it shows. Its browser waits flaked against Lapse in pods (2 runs of 5,
# a list still loading); not understood yet, so these run with the process operator only.
pytestmark = pytest.mark.process_only(
    reason="the web page's browser tests run with the process operator (make test)"
)

SECOND = 1000


def row(page: Any, name: str) -> Any:
    return page.locator(f"tr[data-name='{name}']")


def heading_phase(page: Any) -> Any:
    return page.locator("main h1 .phase")


def test_a_requester_asks_and_watches_it_become_active_then_expired(
    serve: Any, open_page: Any, people: People
) -> None:
    team = people.team
    policy = team.policy(roles=("view", "edit"), default="1h", maximum="4h")
    server = serve("alice", (team.group,), team.namespace)
    page = open_page(server.url + "#/ask")

    page.get_by_label("Role").select_option(
        label=f"edit (ClusterRole) — {policy}, self-service, up to 4h"
    )
    assert page.get_by_label("Namespace").input_value() == team.namespace
    page.get_by_label("Duration").fill("8s")
    page.get_by_label("Reason").fill("Fix the payment retries")
    page.get_by_label("Ticket").fill("PAY-1234")
    screenshot(page, "ask")
    page.get_by_role("button", name="Ask").click()

    # The story page of the new request, Active as soon as Lapse grants it.
    page.wait_for_url(re.compile(r"#/grant/ar/"))
    heading = heading_phase(page)
    heading.filter(has_text="Active").wait_for(timeout=15 * SECOND)
    name = page.url.rsplit("/", 1)[1]
    assert team.request(name)["status"]["phase"] == "Active"
    assert page.get_by_text(re.compile(r"RoleBinding .*lapse-")).count() == 1
    screenshot(page, "story")

    page.get_by_role("link", name="My access").click()
    mine = row(page, name)
    mine.locator("[data-phase=Active]").wait_for()
    assert re.fullmatch(r"\d+s", mine.locator(".left").inner_text()), mine.inner_text()
    assert "PAY-1234" in mine.inner_text()
    screenshot(page, "mine")

    # The countdown runs out and the watch turns the row Expired, with no reload.
    mine.locator("[data-phase=Expired]").wait_for(timeout=15 * SECOND)
    assert team.request(name)["status"]["phase"] == "Expired"
    assert not page.errors


def approvers_policy(people: People) -> None:
    approval = {"approvers": {"groups": [people.leads]}, "required": 1}
    people.team.policy(roles=("edit",), mode="Approvers", suffix="-approvers", approval=approval)


def test_a_requester_cannot_approve_her_own_request_and_the_page_says_why(
    serve: Any, open_page: Any, people: People
) -> None:
    team = people.team
    approvers_policy(people)
    team.ask("own-approval", duration="2m")
    team.wait_phase("own-approval", "Pending")
    server = serve("alice", (team.group,), team.namespace)
    page = open_page(server.url + f"#/grant/ar/{team.namespace}/own-approval")
    heading_phase(page).filter(has_text="Pending").wait_for()

    page.get_by_label("Message").fill("looks fine to me")
    page.get_by_role("button", name="Approve").click()
    notice = page.locator("#notice.error")
    notice.wait_for()
    assert "their own" in notice.inner_text(), notice.inner_text()
    screenshot(page, "own-approval-refused")
    body = team.request("own-approval")
    assert body["status"]["phase"] == "Pending"
    assert not body["status"].get("approvals")
    assert not page.errors


def test_an_approver_sees_what_waits_with_its_summary_and_approves_by_keyboard(
    serve: Any, open_page: Any, people: People
) -> None:
    team = people.team
    approvers_policy(people)
    team.ask("needs-bob", duration="2m", ticket="PAY-77")
    team.wait_phase("needs-bob", "Pending")
    wait_for(
        lambda: (team.request("needs-bob")["status"].get("risk") or {}).get("summary"),
        10, 0.2, "the risk summary",
    )  # fmt: skip
    requester = open_page(serve("alice", (team.group,), team.namespace).url + "#/mine")
    row(requester, "needs-bob").locator("[data-phase=Pending]").wait_for()

    server = serve("bob", (people.leads,), team.namespace)
    page = open_page(server.url + "#/waiting", scheme="dark")
    card = page.locator("section.card[data-name='needs-bob']")
    card.wait_for()
    text = card.inner_text()
    assert "alice" in text and "ClusterRole edit" in text and "PAY-77" in text
    assert "What it gives" in text
    assert page.locator("#waiting-count").inner_text() == "1"
    screenshot(page, "waiting")

    card.get_by_label("Message").focus()
    page.keyboard.type("Checked PAY-77")
    page.keyboard.press("Tab")
    # Another request arrives as bob tabs to Approve: the list grows, his words stay and so
    # does his focus, on the button.
    team.ask("also-waiting", duration="2m")
    page.locator("section.card[data-name='also-waiting']").wait_for(timeout=10 * SECOND)
    assert card.get_by_label("Message").input_value() == "Checked PAY-77"
    focused = page.evaluate(
        "[document.activeElement.tagName, document.activeElement.textContent,"
        " document.activeElement.closest('section.card')?.dataset.name]"
    )
    assert focused == ["BUTTON", "Approve", "needs-bob"], focused
    page.keyboard.press("Enter")
    page.locator("#notice.info").wait_for()
    team.wait_phase("needs-bob", "Active")
    card.wait_for(state="detached")
    assert page.locator("#waiting-count").inner_text() == "1"
    assert team.request("also-waiting")["status"]["phase"] == "Pending"
    approvals = team.request("needs-bob")["status"]["approvals"]
    assert [(a["user"]["username"], a["comment"]) for a in approvals] == [("bob", "Checked PAY-77")]
    # The requester's page turned Active by itself.
    row(requester, "needs-bob").locator("[data-phase=Active]").wait_for(timeout=10 * SECOND)

    # A denial needs a reason the requester will read; then it is final.
    other = page.locator("section.card[data-name='also-waiting']")
    other.get_by_role("button", name="Deny").click()
    assert "say why" in page.locator("#notice.error").inner_text()
    other.get_by_label("Message").fill("Use the read-only role")
    other.get_by_role("button", name="Deny").click()
    team.wait_phase("also-waiting", "Denied")
    other.wait_for(state="detached")
    denied = row(requester, "also-waiting").locator("[data-phase=Denied]")
    denied.wait_for(timeout=10 * SECOND)
    assert not page.errors and not requester.errors


def test_on_call_breaks_glass_ends_it_and_a_reviewer_reviews_it(
    cluster: Cluster, serve: Any, open_page: Any, people: People
) -> None:
    team = people.team
    glass_policy = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": f"{team.namespace}-bg"},
        "spec": {
            "breakGlass": {
                "requesters": {"groups": [people.oncall]},
                "roles": [{"kind": "ClusterRole", "name": "admin"}],
                "maxDuration": "1h",
                "requireIncident": True,
                "review": {"approvers": {"groups": [people.reviewers]}, "deadline": "24h"},
            }
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(glass_policy))
    team.policies.append(glass_policy["metadata"]["name"])
    incident = f"T-UI-{secrets.token_hex(3)}"
    name = incident.lower()
    try:
        server = serve("sre", (people.oncall,))
        page = open_page(server.url + "#/oncall")
        form = page.get_by_role("form", name="Break glass")
        form.get_by_label("ClusterRole").fill("admin")
        form.get_by_label("Namespaces").fill(team.namespace)
        form.get_by_label("Duration").fill("10m")
        form.get_by_label("Incident").fill(incident)
        form.get_by_label("Reason").fill("The database failed over and needs a manual restart.")
        form.get_by_role("button", name="Break glass").click()
        page.wait_for_url(re.compile(rf"#/grant/bg/-/{name}$"))
        heading_phase(page).filter(has_text="Active").wait_for(timeout=15 * SECOND)

        page.get_by_role("link", name="On call").click()
        active = row(page, name)
        active.locator("[data-phase=Active]").wait_for()
        assert incident in active.inner_text()
        screenshot(page, "oncall")
        active.get_by_role("button", name="Revoke now").click()
        # Ended, it leaves the active list; its review is still due.
        active.wait_for(state="detached", timeout=15 * SECOND)
        assert (
            (
                json.loads(cluster.kubectl("get", "breakglass", name, "-o", "json").stdout)[
                    "status"
                ]["phase"]
            )
            == "Revoked"
        )

        lead = open_page(serve("lead", (people.reviewers,)).url + "#/oncall")
        card = lead.locator(f"section.card[data-name='{name}']")
        card.wait_for()
        card.get_by_label("Verdict").select_option("justified")
        card.get_by_label("Notes").fill("Failover runbook followed.")
        screenshot(lead, "review")
        card.get_by_role("button", name="Record review").click()
        card.wait_for(state="detached", timeout=10 * SECOND)

        def reviewed() -> dict[str, Any] | None:
            body = cluster.kubectl("get", "breakglass", name, "-o", "json").stdout
            review = (json.loads(body).get("status") or {}).get("review")
            return review if review else None

        review = wait_for(reviewed, 10, 0.2, "the review")
        assert review["verdict"] == "Justified"
        assert review["reviewer"]["username"] == "lead"
        assert not page.errors and not lead.errors
    finally:
        cluster.kubectl("delete", "breakglass", name, "--ignore-not-found", check=False)
