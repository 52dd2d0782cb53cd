"""The web page across clusters in a real browser: one "Waiting for me" over east and west.

bob leads the team on both clusters and runs `kubectl lapse ui --all-contexts` on the fleet's
kubeconfig. A request of the same name waits in each cluster: the page shows both, each card
naming its cluster; the filter narrows to one; approving one approves it in that cluster only.
Then west goes away: the page says so, keeps west's card greyed, and east's cards still work;
west comes back and the page picks it up by itself, with no reload.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from demo.fleet import Fleet
from tests.e2e.conftest import SAMPLES, Team
from tests.e2e.ui import conftest as ui
from tests.e2e.ui.conftest import PageServer, screenshot, start_page_server
from tests.fleet.conftest import FleetTeam

SECOND = 1000
# The browser fixtures of the one-cluster page's tests, shared.
browser = ui.browser
open_page = ui.open_page
RBAC = "rbac.authorization.k8s.io"


def card(page: Any, name: str, cluster: str) -> Any:
    return page.locator(f"section.card[data-name='{name}'][data-cluster='{cluster}']")


def chip(page: Any, cluster: str) -> Any:
    return page.locator(f"#clusters [data-filter='{cluster}']")


@pytest.fixture
def leads(fleet: Fleet, fleet_team: FleetTeam) -> str:
    """The team's approver group on every member; the team's policy there needs one of them."""
    group = f"{fleet_team.namespace}-leads"
    for member in fleet:
        member.cluster.kubectl("apply", "-f", str(SAMPLES / "approver-clusterrole.yaml"))
        binding = {
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "lapse-approvers", "namespace": fleet_team.namespace},
            "subjects": [{"kind": "Group", "name": group, "apiGroup": RBAC}],
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "lapse-approver"},
        }
        member.cluster.kubectl("apply", "-f", "-", input=json.dumps(binding))
        # The same name as the fixture's Auto policy: it now asks the leads instead.
        approval = {"approvers": {"groups": [group]}, "required": 1}
        fleet_team[member.name].policy(roles=("view", "edit"), mode="Approvers", approval=approval)
    return group


@pytest.fixture
def bobs_page(fleet: Fleet, fleet_team: FleetTeam, leads: str) -> Iterator[PageServer]:
    server = start_page_server(
        fleet["east"].cluster, "bob", (leads,), fleet_team.namespace,
        flags=("--all-contexts",), kubeconfig=fleet.kubeconfig,
    )  # fmt: skip
    try:
        yield server
    finally:
        server.stop()
    output = "".join(server.output)
    print(f"kubectl lapse ui said:\n{output}")
    assert "Traceback" not in output, output
    assert "Lapse for bob across east, west" in output, output


def pending(team: Team, name: str) -> None:
    team.ask(name, duration="10m")
    team.wait_phase(name, "Pending", timeout=20)


def phase(team: Team, name: str) -> str:
    return str(team.request(name)["status"]["phase"])


def test_one_inbox_over_two_clusters_acts_in_each_cards_own_cluster(
    fleet: Fleet, fleet_team: FleetTeam, bobs_page: PageServer, open_page: Any
) -> None:
    east, west = fleet_team["east"], fleet_team["west"]
    for team in (east, west):
        pending(team, "fix")
    page = open_page(bobs_page.url + "#/waiting")

    # One inbox: the request of each cluster, each card saying where it is.
    for cluster in ("east", "west"):
        found = card(page, "fix", cluster)
        found.wait_for(timeout=15 * SECOND)
        assert found.locator(".cluster").first.inner_text() == cluster
        assert "alice" in found.inner_text() and "ClusterRole edit" in found.inner_text()
        chip(page, cluster).locator("[data-state=connected]").wait_for()
    assert page.locator("#waiting-count").inner_text() == "2"
    screenshot(page, "fleet")

    # The filter: west only, then all again.
    chip(page, "west").click()
    card(page, "fix", "east").wait_for(state="detached")
    assert card(page, "fix", "west").is_visible()
    assert page.locator("#waiting-count").inner_text() == "1"
    assert chip(page, "west").get_attribute("aria-pressed") == "true"
    chip(page, "").click()
    card(page, "fix", "east").wait_for()

    # Approving east's approves it in east only: west's of the same name still waits.
    east_card = card(page, "fix", "east")
    east_card.get_by_label("Message").fill("Checked in east")
    east_card.get_by_role("button", name="Approve").click()
    east.wait_phase("fix", "Active", timeout=20)
    east_card.wait_for(state="detached", timeout=10 * SECOND)
    assert phase(west, "fix") == "Pending"
    assert not west.request("fix")["status"].get("approvals")
    approvals = east.request("fix")["status"]["approvals"]
    decisions = [(a["user"]["username"], a["comment"]) for a in approvals]
    assert decisions == [("bob", "Checked in east")]
    assert card(page, "fix", "west").is_visible()

    # West goes away: the page says so and keeps its card, greyed, its buttons off.
    fleet.stop("west")
    banner = page.locator("#banners [data-unreachable='west']")
    banner.wait_for(timeout=15 * SECOND)
    assert "west is unreachable" in banner.inner_text()
    chip(page, "west").locator("[data-state=unreachable]").wait_for()
    west_card = card(page, "fix", "west")
    assert "stale" in (west_card.get_attribute("class") or "")
    assert west_card.get_by_role("button", name="Approve").is_disabled()
    screenshot(page, "fleet-unreachable")

    # East still works while west is away: a new request appears live and is approved there.
    pending(east, "while-west-is-away")
    east_new = card(page, "while-west-is-away", "east")
    east_new.wait_for(timeout=10 * SECOND)
    east_new.get_by_role("button", name="Approve").click()
    east.wait_phase("while-west-is-away", "Active", timeout=20)
    east_new.wait_for(state="detached", timeout=10 * SECOND)

    # West comes back: the page picks it up by itself, and its card works again.
    fleet.start("west")
    banner.wait_for(state="detached", timeout=30 * SECOND)
    chip(page, "west").locator("[data-state=connected]").wait_for()
    west_card.get_by_role("button", name="Approve").wait_for()
    assert west_card.get_by_role("button", name="Approve").is_enabled()
    west_card.get_by_label("Message").fill("Checked in west")
    west_card.get_by_role("button", name="Approve").click()
    west.wait_phase("fix", "Active", timeout=20)
    west_card.wait_for(state="detached", timeout=10 * SECOND)
    assert page.locator("#waiting-count").inner_text() == ""
    assert not page.errors, page.errors


def test_the_ask_form_and_the_review_act_in_the_cluster_picked(
    fleet: Fleet, fleet_team: FleetTeam, open_page: Any
) -> None:
    """alice asks for access in west from a page over both: it is made there, not in east."""
    server = start_page_server(
        fleet["east"].cluster, "alice", (fleet_team.group,), fleet_team.namespace,
        flags=("--contexts", "east,west"), kubeconfig=fleet.kubeconfig,
    )  # fmt: skip
    try:
        page = open_page(server.url + "#/ask")
        form = page.get_by_role("form", name="Ask for access")
        form.get_by_label("Cluster").select_option("west")
        # alice may not read policies: the form takes the role as text.
        form.get_by_label("Role").fill("edit")
        form.get_by_label("Namespace").fill(fleet_team.namespace)
        form.get_by_label("Reason").fill("Fix the west payment retries")
        form.get_by_role("button", name="Ask").click()
        page.wait_for_url("**/#/grant/ar/**/west")
        name = page.url.split("/")[-2]
        page.locator("main h1 .phase").filter(has_text="Active").wait_for(timeout=15 * SECOND)
        assert phase(fleet_team["west"], name) == "Active"
        missing = fleet_team["east"].cluster.kubectl(
            "get", "accessrequest", name, "-n", fleet_team.namespace, check=False
        )
        assert missing.returncode != 0

        # The access review reads the cluster picked there: west's lists the request.
        page.get_by_role("link", name="Access review").click()
        review = page.get_by_role("form", name="Access review period")
        review.get_by_label("Cluster").select_option("west")
        review.get_by_role("button", name="Show").click()
        page.locator(f"table.review tr[data-name='{name}']").wait_for(timeout=15 * SECOND)
        review.get_by_label("Cluster").select_option("east")
        review.get_by_role("button", name="Show").click()
        page.get_by_text("No grant held access in this period.").wait_for(timeout=15 * SECOND)
        assert page.locator(f"table.review tr[data-name='{name}']").count() == 0
        assert not page.errors, page.errors
    finally:
        server.stop()
