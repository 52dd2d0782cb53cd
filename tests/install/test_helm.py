"""The Helm chart on a real node, installed and uninstalled through Helm's own library: the
README's flows through the Service, and `helm uninstall` leaving no access behind."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lapse.core.kinds import GROUP
from tests.cluster import ROOT, Cluster
from tests.e2e.harness import wait_for
from tests.install.conftest import (
    ALICE,
    BOB,
    CAROL,
    NAMESPACE,
    TEAM_NAMESPACE,
    Install,
    elapsed,
    wait_phase,
)

CHART = ROOT / "deploy" / "helm" / "lapse"
RELEASE = "lapse"


@pytest.fixture(scope="module")
def helm(cluster: Cluster, slate: None) -> Iterator[Any]:
    config_mod = pytest.importorskip("helm_python.config")
    with config_mod.Config(kubeconfig_path=str(cluster.kubeconfig), namespace=NAMESPACE) as config:
        yield config


@pytest.fixture(scope="module")
def install(cluster: Cluster, helm: Any, request: pytest.FixtureRequest) -> Install:
    from tests.install.conftest import FIGURES

    installed = Install(cluster, "helm")
    started = time.monotonic()
    helm.install(
        str(CHART), RELEASE, {}, namespace=NAMESPACE, create_namespace=True, timeout=240,
        wait="watcher",
    )  # fmt: skip
    installed.apply_samples()
    installed.wait_ready()
    request.config.stash[FIGURES]["helm: install to webhooks answering (s)"] = elapsed(started)
    return installed


def test_readme_flows_through_the_service(install: Install) -> None:
    out = install.kubectl(
        "lapse", "request", "edit", "-n", TEAM_NAMESPACE, "--name", "helm-edit", "--for", "2h",
        "--reason", "fix payment retries", who=ALICE,
    ).stdout  # fmt: skip
    assert "is active" in out, out
    install.kubectl(
        "lapse", "request", "admin", "-n", TEAM_NAMESPACE, "--name", "helm-admin",
        "--for", "1h", "--reason", "restart the stuck worker", "--no-wait", who=ALICE,
    )  # fmt: skip
    wait_phase(install, "helm-admin", "Pending")
    install.kubectl("lapse", "approve", "helm-admin", "-n", TEAM_NAMESPACE, "-m", "ok", who=BOB)
    wait_phase(install, "helm-admin", "Active")
    install.kubectl(
        "lapse", "breakglass", "admin", "--namespace", TEAM_NAMESPACE, "--incident",
        "INC-5150", "--for", "30m", "--reason", "helm route", who=CAROL,
    )  # fmt: skip
    can = install.kubectl("auth", "can-i", "delete", "pods", "-n", TEAM_NAMESPACE, who=CAROL)
    assert can.stdout.strip() == "yes"


def test_helm_uninstall_ends_every_grant_and_leaves_nothing_stuck(
    install: Install, helm: Any, figures: dict[str, Any]
) -> None:
    """One command: its pre-delete hook stops the Deployment while the replicas still hold
    their RBAC, they end every grant, then Helm removes the rest (keeping the CRDs and so the
    ended records, as Helm does)."""
    assert install.managed_bindings()
    started = time.monotonic()
    try:
        helm.uninstall(RELEASE, timeout=240, wait="watcher")
    except Exception:
        # What the hook said, for whoever reads the failure.
        for what in (("get", "pods,jobs", "-o", "wide"), ("logs", "job/lapse-uninstall")):
            print(install.kubectl("-n", NAMESPACE, *what, check=False).stdout)
        print(install.kubectl("-n", NAMESPACE, "get", "events", check=False).stdout)
        raise
    figures["helm: uninstall (s)"] = elapsed(started)
    assert not install.managed_bindings()
    for item in install.requests():
        assert item["status"]["phase"] == "Revoked", item["metadata"]["name"]
        assert not item["metadata"].get("finalizers")
    glass = json.loads(install.kubectl("get", "breakglasses", "-o", "json").stdout)["items"]
    assert [g["status"]["phase"] for g in glass] == ["Revoked"]
    assert not glass[0]["metadata"].get("finalizers")
    for who, verb in ((ALICE, "create deployments"), (CAROL, "delete pods")):
        can = install.kubectl(
            "auth", "can-i", *verb.split(), "-n", TEAM_NAMESPACE, who=who, check=False
        )
        assert can.stdout.strip() == "no", who
    # Nothing waits on a finalizer: the records and the CRDs go at once when asked to.
    install.kubectl("delete", "-f", str(CHART / "crds"), "--timeout=60s", timeout=70)
    crds = json.loads(install.kubectl("get", "crd", "-o", "json").stdout)["items"]
    assert not [c for c in crds if c["spec"]["group"] == GROUP]
    wait_for(
        lambda: install.kubectl("get", "namespace", NAMESPACE, check=False).returncode == 0,
        10,
        1,
        "the release namespace (kept by Helm: it did not make it)",
    )
