"""`make demo`: a request is granted, counts down, and lapses — in about a minute.

Starts the project's local Kubernetes API (unless KUBECONFIG names a cluster), installs the
CRDs, the operator's RBAC from `deploy/` and the samples from `deploy/samples/`, runs the
operator as its ServiceAccount (as a Deployment would), and applies the sample AccessRequest as
a developer of group payments-devs. Everything it starts, it stops.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from demo.harness import ROOT, Cluster, Operator, parse_time, service_account_identity, wait_for
from kubeapi.process import LocalServer, server_of

WORKDIR = ROOT / ".demo"
SAMPLES = ROOT / "deploy" / "samples"
USER, GROUP, NAMESPACE = "alice", "payments-devs", "payments"


def heading(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(cluster: Cluster, *args: str, as_user: str | None = None) -> str:
    groups = (GROUP,) if as_user else ()
    who = f" --as {as_user} --as-group {GROUP}" if as_user else ""
    print(f"$ kubectl {shlex.join(args)}{who}", flush=True)
    result = cluster.kubectl(*args, as_user=as_user, groups=groups, check=False)
    output = (result.stdout + result.stderr).rstrip()
    print(output, flush=True)
    return output


def can_i(cluster: Cluster) -> str:
    return show(cluster, "auth", "can-i", "create", "deployments", "-n", NAMESPACE, as_user=USER)


@contextmanager
def cluster_for_demo() -> Iterator[Cluster]:
    if os.environ.get("KUBECONFIG"):
        kubeconfig = Path(os.environ["KUBECONFIG"])
        yield Cluster("kubeconfig", kubeconfig, server_of(kubeconfig), WORKDIR / "cache")
        return
    server = LocalServer(WORKDIR / "kubeapi")
    url = server.start()
    try:
        yield Cluster("local", server.kubeconfig, url, WORKDIR / "cache")
    finally:
        server.stop()


def binding_exists(cluster: Cluster, name: str) -> bool:
    result = cluster.kubectl("get", "rolebinding", name, "-n", NAMESPACE, check=False)
    return result.returncode == 0


def run(cluster: Cluster) -> None:
    heading("Install: CRDs, the requester role, namespace payments, the sample policy")
    cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s", "crd/accessrequests.lapse.dev"
    )
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(namespace))
    for sample in ("requester-clusterrole.yaml", "policy.yaml"):
        show(cluster, "apply", "-f", str((SAMPLES / sample).relative_to(ROOT)))

    heading("Start the operator as ServiceAccount lapse-system/lapse-operator")
    identity = service_account_identity(cluster, WORKDIR / "identity")
    operator = Operator(cluster, WORKDIR / "operator", identity=identity)
    operator.workdir.mkdir(parents=True, exist_ok=True)
    operator.start()
    try:
        print(f"operator ready; metrics at {operator.metrics_url}", flush=True)
        # Requests are deleted while the operator runs: each carries its finalizer, which
        # only the operator takes off (after revoking), so a deletion without it never ends.
        # On a cluster that outlives the demo, an earlier run's request may still be there.
        remove_requests(cluster)
        walkthrough(cluster, operator)
        remove_requests(cluster)
    finally:
        operator.stop()
        print(f"\noperator log: {operator.log_path}\naudit trail: {operator.audit_path}")


def remove_requests(cluster: Cluster) -> None:
    cluster.kubectl("delete", "accessrequest", "--all", "-n", NAMESPACE, "--ignore-not-found")


def walkthrough(cluster: Cluster, operator: Operator) -> None:
    heading(f"Before: may {USER} create deployments in {NAMESPACE}?")
    can_i(cluster)

    heading(f"{USER} asks for edit in {NAMESPACE} for 20s, with the kubectl lapse plugin")
    show(
        cluster,
        "lapse", "request", "edit", "-n", NAMESPACE, "--for", "20s",
        "--name", "fix-payment-retries", "--ticket", "PAY-1234",
        "--reason", "Restart the stuck payment-retry worker after the queue outage.",
        as_user=USER,
    )  # fmt: skip
    print(f"(the same as plain YAML: kubectl apply -f {SAMPLES.relative_to(ROOT)}/request.yaml)")

    def active() -> dict[str, object] | None:
        result = cluster.kubectl(
            "get", "accessrequest", "fix-payment-retries", "-n", NAMESPACE, "-o", "json"
        )
        body = json.loads(result.stdout)
        return body if body.get("status", {}).get("phase") == "Active" else None

    body = wait_for(active, timeout=10, what="the grant")
    status = body["status"]
    assert isinstance(status, dict)
    binding = status["bindings"][0]["name"]
    expires = parse_time(status["expiresAt"])
    show(cluster, "lapse", "list", "-n", NAMESPACE, as_user=USER)
    show(cluster, "get", "accessrequests", "-n", NAMESPACE)

    heading("The binding Lapse made, carrying its expiry")
    show(cluster, "get", "rolebindings", "-n", NAMESPACE, "-l", "app.kubernetes.io/managed-by")
    show(
        cluster,
        "get",
        "rolebinding",
        binding,
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.metadata.annotations.lapse\\.dev/expires-at}{'\\n'}",
    )
    heading(f"Now: may {USER} create deployments in {NAMESPACE}?")
    can_i(cluster)

    heading("Countdown")
    while True:
        left = (expires - datetime.now(UTC)).total_seconds()
        if left <= 0:
            break
        print(f"\r  {left:5.1f}s left  ", end="", flush=True)
        time.sleep(min(1.0, left))
    print("\r  expiresAt reached", flush=True)
    wait_for(lambda: not binding_exists(cluster, binding), timeout=10, interval=0.02)
    observed = (datetime.now(UTC) - expires).total_seconds()

    heading("After: the binding has lapsed")
    show(cluster, "get", "rolebindings", "-n", NAMESPACE, "-l", "app.kubernetes.io/managed-by")
    can_i(cluster)
    wait_for(lambda: "Expired" in show_quiet(cluster), timeout=5)
    show(cluster, "lapse", "list", "-n", NAMESPACE, as_user=USER)
    show(cluster, "lapse", "explain", "fix-payment-retries", "-n", NAMESPACE, as_user=USER)
    show(cluster, "get", "events", "-n", NAMESPACE)

    heading("Measured")
    values = operator.metrics()
    latency = values.get('lapse_grant_latency_seconds_sum{kind="AccessRequest"}', float("nan"))
    lag = values.get('lapse_revocation_lag_seconds_sum{kind="AccessRequest"}', float("nan"))
    print(f"grant latency (admission → binding):       {latency * 1000:8.1f} ms")
    print(f"revocation lag (expiresAt → binding gone): {lag * 1000:8.1f} ms")
    print(f"seen gone by kubectl polling after:         {observed * 1000:8.1f} ms")
    audit_actions = [line["action"] for line in operator.audit_lines()]
    print(f"audit trail: {', '.join(audit_actions)}")


def show_quiet(cluster: Cluster) -> str:
    result = cluster.kubectl("get", "accessrequests", "-n", NAMESPACE, check=False)
    return result.stdout


def main() -> int:
    if WORKDIR.exists():
        shutil.rmtree(WORKDIR)
    WORKDIR.mkdir(parents=True)
    with cluster_for_demo() as cluster:
        run(cluster)
    print("\ndone: everything started by the demo has stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
