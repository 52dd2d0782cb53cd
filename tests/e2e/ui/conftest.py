"""Fixtures for the web page: `kubectl lapse ui` as a person runs it, and a real browser.

Each page server is the real command (`kubectl lapse ui --no-browser --as … --as-group …`)
in its own process, acting as one impersonated person who holds only the sample roles;
the browser is Debian's headless chromium driven by Playwright, which downloads nothing.
Without chromium the browser tests skip and say why.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import ROOT, Cluster, kubectl_binary
from tests.e2e.conftest import SAMPLES, Team

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Test artefacts (git-ignored); docs/ui/ keeps the copies the README shows.
SCREENSHOTS = ROOT / "build" / "ui-screenshots"
RBAC = "rbac.authorization.k8s.io"
URL = re.compile(r"(http://127\.0\.0\.1:\d+/\S+/)")


@dataclass
class PageServer:
    """One `kubectl lapse ui` process and the URL it printed."""

    process: subprocess.Popen[str]
    url: str
    output: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.url.split(":")[2].split("/")[0])

    @property
    def token(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[1]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def start_page_server(
    cluster: Cluster,
    user: str,
    groups: tuple[str, ...],
    namespace: str | None,
    *,
    flags: Sequence[str] = (),
    kubeconfig: Path | None = None,
) -> PageServer:
    """`kubectl lapse ui` as `user`; `flags` such as `--all-contexts`, and `kubeconfig` for a
    page over the contexts of another kubeconfig than the cluster's."""
    command = [kubectl_binary(), "lapse", "ui", "--no-browser", f"--as={user}", *flags]
    command += [f"--as-group={g}" for g in groups]
    if namespace:
        command += ["-n", namespace]
    env = cluster.env()
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    output: list[str] = []
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            match = URL.search(line)
            if match and not found:
                found.append(match.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(60)
    if not found:
        process.kill()
        raise AssertionError(f"kubectl lapse ui printed no URL:\n{''.join(output)}")
    return PageServer(process, found[0], output)


@pytest.fixture
def serve(cluster: Cluster) -> Iterator[Any]:
    """Start page servers as people; all stopped after the test."""
    started: list[PageServer] = []

    def start(user: str, groups: tuple[str, ...], namespace: str | None = None) -> PageServer:
        server = start_page_server(cluster, user, groups, namespace)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        assert "Traceback" not in "".join(server.output), "".join(server.output)


def _apply(cluster: Cluster, *objects: dict[str, Any]) -> None:
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"kind": "List", "apiVersion": "v1", "items": list(objects)}),
    )


def cluster_binding(name: str, group: str, role: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "subjects": [{"kind": "Group", "name": group, "apiGroup": RBAC}],
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
    }


@dataclass
class People:
    """One test's cast: alice asks (and may read policies, so the form offers what they
    allow), bob approves in the team's namespace, sre breaks glass, lead reviews."""

    team: Team
    devs: str
    leads: str
    oncall: str
    reviewers: str


@pytest.fixture
def people(cluster: Cluster, team: Team) -> Iterator[People]:
    ns = team.namespace
    leads, oncall, reviewers = f"{ns}-leads", f"{ns}-oncall", f"{ns}-reviewers"
    cluster.kubectl("apply", "-f", str(SAMPLES / "approver-clusterrole.yaml"))
    cluster.kubectl("apply", "-f", str(SAMPLES / "breakglass-clusterrole.yaml"))
    reader = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": f"{ns}-policy-reader"},
        "rules": [
            {"apiGroups": ["lapse.dev"], "resources": ["accesspolicies"], "verbs": ["get", "list"]}
        ],
    }
    approver = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "lapse-approvers", "namespace": ns},
        "subjects": [{"kind": "Group", "name": leads, "apiGroup": RBAC}],
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "lapse-approver"},
    }
    bindings = [
        cluster_binding(f"{ns}-policy-readers", team.group, reader["metadata"]["name"]),
        cluster_binding(f"{ns}-oncall-policy-readers", oncall, reader["metadata"]["name"]),
        cluster_binding(f"{ns}-oncall", oncall, "lapse-breakglass"),
        cluster_binding(f"{ns}-reviewers", reviewers, "lapse-reviewer"),
    ]
    _apply(cluster, reader, approver, *bindings)
    try:
        yield People(team, team.group, leads, oncall, reviewers)
    finally:
        for binding in bindings:
            cluster.kubectl(
                "delete", "clusterrolebinding", binding["metadata"]["name"], "--ignore-not-found",
                check=False,
            )  # fmt: skip
        cluster.kubectl(
            "delete", "clusterrole", reader["metadata"]["name"], "--ignore-not-found", check=False
        )


# Module-scoped: Playwright's sync API keeps an event loop running in this thread while it
# is open, and every later test calling asyncio.run() would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    """A fresh browser context per person (no shared storage), light or dark."""
    contexts: list[Any] = []

    def open_(url: str, scheme: str = "light") -> Any:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme=scheme)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        # Script errors only: an action the API refuses is a 4xx the browser logs, and a
        # refusal the page shows is the expected outcome of some tests.
        page.on(
            "console",
            lambda message: (
                errors.append(message.text)
                if message.type == "error"
                and not message.text.startswith("Failed to load resource")
                else None
            ),
        )
        page.errors = errors
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=20_000)
        return page

    yield open_
    for context in contexts:
        context.close()
