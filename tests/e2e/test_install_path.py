"""`make install` leaves a cluster ready for `make run`: the README's first request is granted.

The operator fixture plays `make run` (the same `lapse-operator` process); this test runs the
real `make install` against the test cluster and then the README's request as alice of
payments-devs, who holds nothing but what `make install` gave her.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.cluster import Cluster, kubectl_binary
from tests.e2e.conftest import Operator
from tests.e2e.harness import ROOT

README_REQUEST = ("request", "edit", "-n", "payments", "--for", "2h", "--reason", "fix retries")
ALICE = ("--as=alice", "--as-group=payments-devs")


SAMPLE_POLICIES = ("payments-self-service", "payments-four-eyes", "sre-break-glass")


@pytest.fixture
def sample_policies_removed(cluster: Cluster) -> Iterator[None]:
    """`make install`'s sample policies name alice, whom every other test plays: they go
    again afterwards, so no other test is judged by them."""
    try:
        yield
    finally:
        cluster.kubectl("delete", "accesspolicy", *SAMPLE_POLICIES, "--ignore-not-found")


def test_make_install_prepares_the_readme_request(
    cluster: Cluster, operator: Operator, sample_policies_removed: None
) -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "install"],
        cwd=ROOT,
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for kind, name in (
        ("namespace", "lapse-system"),
        ("namespace", "payments"),
        ("serviceaccount", "lapse-operator"),
        ("clusterrolebinding", "lapse-operator"),
        ("clusterrolebinding", "lapse-requester-payments-devs"),
        ("clusterrolebinding", "lapse-approver-payments-leads"),
        ("clusterrolebinding", "lapse-breakglass-sre-oncall"),
        ("accesspolicy", "payments-self-service"),
        ("accesspolicy", "payments-four-eyes"),
        ("accesspolicy", "sre-break-glass"),
    ):
        cluster.kubectl("get", kind, name, "-n", "lapse-system")

    asked = subprocess.run(
        [kubectl_binary(), "lapse", *README_REQUEST, *ALICE],
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert "is active" in asked.stdout, asked.stdout
    name = asked.stdout.split()[0].removeprefix("accessrequest/")
    try:
        can_i = cluster.kubectl(
            "auth", "can-i", "create", "deployments", "-n", "payments",
            as_user="alice", groups=("payments-devs",), check=False,
        )  # fmt: skip
        assert can_i.stdout.strip() == "yes"
        body = json.loads(cluster.kubectl("get", "ar", name, "-n", "payments", "-o", "json").stdout)
        assert body["status"]["phase"] == "Active"
        assert body["spec"]["requester"]["username"] == "alice"
    finally:
        cluster.kubectl("delete", "ar", name, "-n", "payments", "--wait=true")
    can_i = cluster.kubectl(
        "auth", "can-i", "create", "deployments", "-n", "payments",
        as_user="alice", groups=("payments-devs",), check=False,
    )  # fmt: skip
    assert can_i.stdout.strip() == "no"
