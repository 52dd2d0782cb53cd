"""`kubectl apply -k deploy/` on a real node: the README's flows through the Service, high
availability under a rolling restart and a deleted leader, and `kubectl delete -k deploy/`.

The tests run in file order on one installation; the last one uninstalls it.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes.client
import pytest
from cryptography import x509
from kubernetes.client.rest import ApiException

from lapse.config import Settings
from lapse.core.certificates import KeyPair, build_serving, compute_service_hosts
from lapse.core.kinds import GROUP, VERSION
from tests.cluster import ROOT, Cluster
from tests.e2e.harness import wait_for
from tests.install.conftest import (
    ALICE,
    CAROL,
    DEPLOYMENT,
    NAMESPACE,
    TEAM_NAMESPACE,
    BindingWatch,
    Install,
    doc_blocks,
    elapsed,
    lateness,
    percentile,
    request_manifest,
    run_blocks,
    wait_all,
    wait_phase,
)

LEASE_DURATION = 15.0
SETTINGS = Settings()
README = ROOT / "README.md"
DEPLOY_README = ROOT / "deploy" / "README.md"


@pytest.fixture(scope="module")
def install(cluster: Cluster, slate: None, request: pytest.FixtureRequest) -> Iterator[Install]:
    from tests.install.conftest import FIGURES

    installed = Install(cluster, "kustomize")
    started = time.monotonic()
    # deploy/README.md's install, as written.
    (install_block,) = doc_blocks(DEPLOY_README, "With kustomize")[:1]
    run_blocks(cluster, install_block)
    installed.apply_samples()
    installed.wait_ready()
    request.config.stash[FIGURES]["kustomize: apply -k to webhooks answering (s)"] = elapsed(
        started
    )
    yield installed


def create_many(
    install: Install, count: int, durations: list[str], prefix: str
) -> tuple[list[str], list[str]]:
    """`count` self-service requests as alice, through the API as kubectl would send them;
    the names created and the refusals met."""
    api = kubernetes.client.CustomObjectsApi(install.api_as(ALICE))
    names: list[str] = []
    refused: list[str] = []
    for i in range(count):
        manifest = request_manifest(f"{prefix}-{i:03d}", "view", durations[i % len(durations)])
        try:
            created = api.create_namespaced_custom_object(
                GROUP, VERSION, TEAM_NAMESPACE, "accessrequests", manifest
            )
            names.append(created["metadata"]["name"])
        except ApiException as error:
            refused.append(f"{error.status}: {error.body}")
    return names, refused


def test_readme_flows_through_the_service(install: Install) -> None:
    """README.md's flows as written — alice's self-service edit, her admin request that bob
    approves, carol's break-glass that dave reviews — each admitted through the Service and
    acted on by the pods."""
    flows = [b for b in doc_blocks(README, "Try it by hand") if "--as " in b]
    assert len(flows) == 3, flows
    out = run_blocks(install.cluster, *flows)
    assert "is active" in out, out
    approved = wait_phase(install, "restart-worker", "Active")
    assert approved["spec"]["requester"]["username"] == "alice"
    # alice alone could not have: her own approval is refused.
    own = install.kubectl(
        "lapse", "approve", "restart-worker", "-n", TEAM_NAMESPACE, "-m", "mine", who=ALICE,
        check=False,
    )  # fmt: skip
    assert own.returncode != 0
    wait_for(
        lambda: (
            install.kubectl("auth", "can-i", "*", "*", who=CAROL, check=False).stdout.strip()
            == "no"
        ),
        30,
        0.5,
        "carol's break-glass ended",
    )
    glass = json.loads(install.kubectl("get", "breakglass", "inc-4711", "-o", "json").stdout)
    assert glass["status"]["phase"] == "Revoked"
    assert (glass["status"].get("review") or {}).get("verdict") in ("justified", "Justified")


def test_a_hundred_admissions_none_refused(install: Install, figures: dict[str, Any]) -> None:
    """Both replicas serve the one certificate the API server trusts: 100 creates through the
    Service, spread over both endpoints, all admitted and stamped, all granted."""
    started = time.monotonic()
    names, refused = create_many(install, 100, ["2m"], "hundred")
    figures["kustomize: 100 creates through the Service (s)"] = elapsed(started)
    figures["kustomize: refused admissions of 100"] = len(refused)
    assert refused == []
    by_name = {r["metadata"]["name"]: r for r in install.requests()}
    assert all(by_name[n]["spec"]["requester"]["username"] == "alice" for n in names)

    wait_all(install, names, ("Active",), 120, "the 100 requests granted")
    install.kubectl("delete", "accessrequests", *names, "-n", TEAM_NAMESPACE, "--wait=false")


def served_certificates(install: Install) -> list[bytes]:
    """The certificate each replica serves on its webhook port, as the API server meets it."""
    return [
        ssl.get_server_certificate((pod["status"]["podIP"], 9443)).encode()
        for pod in install.pods()
        if pod["status"].get("podIP") and not pod["metadata"].get("deletionTimestamp")
    ]


def test_a_renewed_certificate_reaches_every_replica_and_no_admission_fails(
    install: Install, figures: dict[str, Any]
) -> None:
    """The serving certificate near its end (as if issued 80 of its 85 days ago): the leader
    renews it, every replica swaps it in, and admissions never stop meanwhile. The Secret has
    cert-manager's shape, which the cert-manager route serves the same way."""
    core = kubernetes.client.CoreV1Api(install.cluster.api())
    tls = core.read_namespaced_secret(SETTINGS.webhook_secret, NAMESPACE)
    assert tls.type == "kubernetes.io/tls"
    assert set(tls.data) == {"tls.crt", "tls.key", "ca.crt"}
    ca = core.read_namespaced_secret(SETTINGS.webhook_ca_secret, NAMESPACE)
    authority = KeyPair(
        cert=base64.b64decode(ca.data["tls.crt"]), key=base64.b64decode(ca.data["tls.key"])
    )
    hosts = compute_service_hosts(SETTINGS.webhook_service, NAMESPACE)
    ending = build_serving(
        authority, hosts, datetime.now(UTC) - timedelta(days=80), timedelta(days=85)
    )
    core.patch_namespaced_secret(
        SETTINGS.webhook_secret,
        NAMESPACE,
        {"data": {k: base64.b64encode(v).decode() for k, v in
                  (("tls.crt", ending.cert), ("tls.key", ending.key))}},
    )  # fmt: skip
    stop = threading.Event()
    refusals: list[str] = []
    tries = admit_in_a_loop(install, stop, refusals)
    started = time.monotonic()

    def renewed_everywhere() -> bool:
        current = base64.b64decode(
            core.read_namespaced_secret(SETTINGS.webhook_secret, NAMESPACE).data["tls.crt"]
        )
        if current == ending.cert:
            return False
        served = [x509.load_pem_x509_certificate(c) for c in served_certificates(install)]
        wanted = x509.load_pem_x509_certificate(current)
        return len(served) == 2 and all(c == wanted for c in served)

    wait_for(renewed_everywhere, 150, 2, "the renewed certificate served by both replicas")
    figures["renewal: near-ending certificate to renewed on every replica (s)"] = elapsed(started)
    stop.set()
    time.sleep(0.5)
    figures["renewal: admissions tried / refused"] = f"{tries[0]} / {len(refusals)}"
    assert refusals == []
    assert tries[0] > 0


def admit_in_a_loop(install: Install, stop: threading.Event, refused: list[str]) -> list[int]:
    """Server-side dry-run creates as alice until `stop`: each passes both webhooks."""
    counted = [0]
    api = kubernetes.client.CustomObjectsApi(install.api_as(ALICE))

    def run() -> None:
        while not stop.is_set():
            try:
                api.create_namespaced_custom_object(
                    GROUP, VERSION, TEAM_NAMESPACE, "accessrequests",
                    request_manifest("dry", "view", "1m", generate=True), dry_run="All",
                )  # fmt: skip
            except ApiException as error:
                refused.append(f"{error.status}: {error.body}")
            counted[0] += 1
            time.sleep(0.05)

    threading.Thread(target=run, daemon=True).start()
    return counted


def test_rolling_restart_refuses_nothing_and_ends_on_time(
    install: Install, figures: dict[str, Any]
) -> None:
    """`kubectl rollout restart` while 200 grants fall due: no admission refused, every grant
    ended, none outliving its expiry by more than the lease time."""
    watch = BindingWatch(install.cluster)
    watch.start()
    durations = [f"{s}s" for s in range(15, 55, 2)]
    names, refused = create_many(install, 200, durations, "rollout")
    assert refused == []
    wait_all(install, names, ("Active", "Expired"), 120, "the 200 grants made")
    stop = threading.Event()
    admission_refusals: list[str] = []
    tries = admit_in_a_loop(install, stop, admission_refusals)
    started = time.monotonic()
    install.kubectl("-n", NAMESPACE, "rollout", "restart", f"deployment/{DEPLOYMENT}")
    install.kubectl(
        "-n", NAMESPACE, "rollout", "status", f"deployment/{DEPLOYMENT}", "--timeout=180s",
        timeout=190,
    )  # fmt: skip
    figures["rollout: restart to rolled out (s)"] = elapsed(started)

    wait_all(install, names, ("Expired",), 180, "every grant of the rollout ended")
    stop.set()
    time.sleep(1)
    watch.stop()
    late = lateness(install, watch, names)
    figures["rollout: admissions tried / refused"] = f"{tries[0]} / {len(admission_refusals)}"
    figures["rollout: grant lateness p50 / p99 / max (s)"] = (
        f"{percentile(late, 50):.2f} / {percentile(late, 99):.2f} / {max(late):.2f}"
    )
    assert admission_refusals == []
    assert min(late) > -1.0, "a grant ended before its expiry"
    assert max(late) <= LEASE_DURATION + 1.0
    install.kubectl("delete", "accessrequests", *names, "-n", TEAM_NAMESPACE, "--wait=false")


def test_a_deleted_leader_is_followed_by_the_standby(
    install: Install, figures: dict[str, Any]
) -> None:
    """The leader's pod deleted while grants fall due: the standby leads, and those grants end
    no later than the lease time after their expiry."""
    watch = BindingWatch(install.cluster)
    watch.start()
    names, refused = create_many(install, 30, [f"{s}s" for s in range(20, 50)], "leader")
    assert refused == []
    wait_all(install, names, ("Active",), 60, "the 30 grants active")
    leader = install.leader()
    assert leader
    started = time.monotonic()
    install.kubectl("-n", NAMESPACE, "delete", "pod", leader, "--wait=false")
    follower = wait_for(
        lambda: (lambda held: held if held and held != leader else None)(install.leader()),
        60,
        0.2,
        "another replica holding the lease",
    )
    figures["leader deleted: standby leads after (s)"] = elapsed(started)
    wait_all(install, names, ("Expired",), 120, "every grant ended")
    watch.stop()
    late = lateness(install, watch, names)
    figures["leader deleted: grant lateness p50 / max (s)"] = (
        f"{percentile(late, 50):.2f} / {max(late):.2f}"
    )
    assert follower != leader
    assert max(late) <= LEASE_DURATION + 1.0
    install.kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{DEPLOYMENT}")
    install.kubectl("delete", "accessrequests", *names, "-n", TEAM_NAMESPACE, "--wait=false")


def test_kubectl_delete_k_leaves_no_access_and_nothing_stuck(
    install: Install, figures: dict[str, Any]
) -> None:
    """Uninstalling with active grants: afterwards no binding Lapse made remains, no object is
    left Terminating, the namespace and the CRDs are gone."""
    install.kubectl(
        "lapse", "request", "edit", "-n", TEAM_NAMESPACE, "--name", "before-uninstall",
        "--for", "2h", "--reason", "still working", who=ALICE,
    )  # fmt: skip
    install.kubectl(
        "lapse", "breakglass", "admin", "--namespace", TEAM_NAMESPACE, "--incident",
        "INC-9000", "--for", "30m", "--reason", "uninstall with glass broken", who=CAROL,
    )  # fmt: skip
    assert install.managed_bindings()
    # deploy/README.md's kustomize uninstall, as written: the Deployment first (while the
    # replicas hold their RBAC, they end every grant), then everything else.
    (uninstall_block,) = [b for b in doc_blocks(DEPLOY_README, "Uninstalling") if "-k" in b]
    first, rest = uninstall_block.split("\n", 1)
    started = time.monotonic()
    run_blocks(install.cluster, first)
    figures["kustomize: Deployment deleted, grants ended (s)"] = elapsed(started)
    assert not install.managed_bindings()
    ended = {r["metadata"]["name"]: r["status"] for r in install.requests()}
    assert ended["before-uninstall"]["phase"] == "Revoked"
    assert not any(r["metadata"].get("finalizers") for r in install.requests())
    started = time.monotonic()
    run_blocks(install.cluster, rest)
    figures["kustomize: delete -k (s)"] = elapsed(started)
    crds = install.kubectl("get", "crd", "-o", "json").stdout
    assert not [c for c in json.loads(crds)["items"] if c["spec"]["group"] == GROUP]
    namespaces = install.kubectl("get", "namespace", NAMESPACE, check=False)
    assert namespaces.returncode != 0
    can = install.kubectl(
        "auth", "can-i", "create", "deployments", "-n", TEAM_NAMESPACE, who=ALICE, check=False
    )
    assert can.stdout.strip() == "no"
