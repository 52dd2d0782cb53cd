"""What Lapse's admission webhooks add to the creates they see, for callers without a grant.

The API server calls Lapse for creates all over the cluster, by anyone: every AccessRequest
(the requester stamp and the create check, both failing closed), and every create of the kinds
a grant could leave something behind with — pods, Secrets, ServiceAccount tokens, workloads,
RBAC objects (the foothold webhook, failing open). For a caller without a grant the foothold
webhook must answer at once, from memory.

Each kind below is created `COUNT` times, one at a time and interleaved, by the admin (who holds
no grant), twice: before the operator has registered its webhooks and after. **Added** latency
is with minus without, per kind and percentile. ConfigMaps, which no Lapse webhook sees, are
the control: what they "gain" is the running operator's load and drift, the noise floor under
the other kinds' figures.

AccessRequests are created as a dry run (`dryRun=All`). Their webhooks are called for it exactly
as for a stored create (neither has side effects), and the write they skip is skipped in both
passes alike. A stored request would be judged by the operator at once, and that work, in the
process that also answers the webhooks, would slow every create measured meanwhile: on two
cores it nearly doubles what the foothold webhook appears to cost.
"""

from __future__ import annotations

import math
import time
from typing import Any

from bench.install import ROLE
from bench.kube import Kube

COUNT = 150
# Creates of each kind made first and not counted: the first webhook call opens a connection.
WARM_UP = 5
SERVICE_ACCOUNT = "bench-admission"
CONTROL = "configmaps"
# Resource (and subresource) of each kind measured → which of Lapse's webhooks see its creates.
KINDS: dict[str, str] = {
    CONTROL: "none (control)",
    "secrets": "foothold",
    "pods": "foothold",
    "serviceaccounts/token": "foothold",
    "accessrequests": "requester + create (dry run)",
}

Timings = dict[str, list[float]]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def _manifest(kind: str, namespace: str, name: str) -> tuple[str, dict[str, Any]]:
    """Where to POST a create of `kind`, and what (AccessRequests: see the module's docstring)."""
    meta = {"name": name, "namespace": namespace}
    core = f"/api/v1/namespaces/{namespace}"
    if kind == "serviceaccounts/token":
        # The shortest token an API server issues: nothing here uses it.
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        }
        return f"{core}/serviceaccounts/{SERVICE_ACCOUNT}/token", body
    if kind == "accessrequests":
        return f"/apis/lapse.dev/v1alpha1/namespaces/{namespace}/accessrequests", {
            "apiVersion": "lapse.dev/v1alpha1",
            "kind": "AccessRequest",
            "metadata": meta,
            "spec": {
                "role": {"kind": "ClusterRole", "name": ROLE},
                "duration": "1m",
                "reason": "Benchmark of Lapse: what its admission webhooks cost.",
            },
        }
    if kind == "pods":
        # Never scheduled where no node runs (it stays Pending); the create is what counts.
        return f"{core}/pods", {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {
                "serviceAccountName": SERVICE_ACCOUNT,
                "automountServiceAccountToken": False,
                "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}],
            },
        }
    kinds = {"configmaps": "ConfigMap", "secrets": "Secret"}
    return f"{core}/{kind}", {"apiVersion": "v1", "kind": kinds[kind], "metadata": meta}


async def _pass(kube: Kube, namespace: str, tag: str, count: int) -> Timings:
    """`count` timed creates of every kind, interleaved so drift touches each kind alike."""
    timings: Timings = {kind: [] for kind in KINDS}
    for index in range(-WARM_UP, count):
        for kind in KINDS:
            name = f"bench-admission-{tag}-{index}" if index >= 0 else f"bench-warm-{tag}{index}"
            path, body = _manifest(kind, namespace, name)
            params = {"dryRun": "All"} if kind == "accessrequests" else None
            started = time.perf_counter()
            await kube.call("POST", path, body, params=params)
            if index >= 0:
                timings[kind].append((time.perf_counter() - started) * 1000)
    return timings


async def without_lapse(kube: Kube, namespace: str, count: int = COUNT) -> Timings:
    """Before the operator starts: the creates as the cluster answers them without Lapse."""
    await kube.create(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace},
        },
        exist_ok=True,
    )
    return await _pass(kube, namespace, "without", count)


async def with_lapse(
    kube: Kube, namespace: str, without: Timings, count: int = COUNT
) -> dict[str, dict[str, float]]:
    """With the operator's webhooks registered and answering: per kind, p50 and p99 without,
    with, and added (ms)."""
    timings = await _pass(kube, namespace, "with", count)
    figures: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        entry: dict[str, float] = {}
        for share, label in ((0.5, "p50"), (0.99, "p99")):
            before = _percentile(without[kind], share)
            after = _percentile(timings[kind], share)
            entry[f"without_lapse_{label}_ms"] = before
            entry[f"with_lapse_{label}_ms"] = after
            entry[f"added_{label}_ms"] = after - before
        figures[kind] = entry
    return figures
