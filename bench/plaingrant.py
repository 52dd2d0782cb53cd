"""The physical limit of a grant: a plain client making the requests a grant needs, on the same
cluster, as fast as the API server admits them.

Lapse's burst figure (grants per second, 32 requests in flight) means little without the rate
this machine's API server reaches for the same work with no operator at all: per grant the
request's create, then what Lapse writes to make it Active — the RoleBinding, the `Granted`
Event, the status patch and the patch kopf makes of the request — five requests, one after the
other, 32 grants at a time, no watch, no admission webhook, no decision. No operator can make
grants faster than this on the same API server; Lapse adds its webhooks (three calls a grant)
and its own reaction to each event.

The requests are made as the benchmark's admin (no impersonation), in the side by side's own
namespaces (`bench.sidebyside`), which are deleted afterwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.backend import Log
from bench.kube import ApiError, Kube
from bench.report import Stats, stats
from bench.sidebyside import NAMESPACES, PART_OF, _each, middle_rate

GROUP = "lapse.dev"
VERSION = "v1alpha1"
RBAC = "rbac.authorization.k8s.io"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class PlainGrants:
    n: int
    concurrency: int
    made: int
    refused: int
    seconds: float
    grants_per_s: float
    grants_per_s_middle: float
    # One grant's five requests, first sent to last answered.
    grant_s: Stats

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "concurrency": self.concurrency,
            "made": self.made,
            "refused": self.refused,
            "seconds": round(self.seconds, 3),
            "grants_per_s": round(self.grants_per_s, 1),
            "grants_per_s_middle": round(self.grants_per_s_middle, 1),
            "grant_s": self.grant_s.to_json(),
        }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def plain_grant_rate(kube: Kube, n: int, *, concurrency: int = 32, log: Log) -> PlainGrants:
    """Make N plain grants, `concurrency` at a time; the namespaces are the caller's to clean."""
    for name in NAMESPACES:
        metadata = {"name": name, "labels": PART_OF}
        await kube.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}, exist_ok=True
        )
    started: list[float] = []
    finished: list[float] = []
    durations: list[float] = []
    refused = 0

    async def grant(index: int) -> None:
        nonlocal refused
        namespace, name = NAMESPACES[index % len(NAMESPACES)], f"plain-grant-{index:05d}"
        owner = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/accessrequests/{name}"
        began = time.time()
        started.append(began)
        try:
            created = await kube.create(
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "AccessRequest",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {
                        "role": {"kind": "ClusterRole", "name": "view"},
                        "duration": "1h",
                        "reason": "Benchmark of Lapse: the physical limit of a grant.",
                    },
                }
            )
            uid = created["metadata"]["uid"]
            labels = {"app.kubernetes.io/managed-by": "lapse-plain-bench", **PART_OF}
            binding = await kube.create(
                {
                    "apiVersion": f"{RBAC}/v1",
                    "kind": "RoleBinding",
                    "metadata": {
                        "name": f"lapse-{name}",
                        "namespace": namespace,
                        "labels": labels,
                        "annotations": {"lapse.dev/expires-at": _now(), "lapse.dev/owner": uid},
                    },
                    "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "view"},
                    "subjects": [{"apiGroup": RBAC, "kind": "User", "name": f"dev-{index % 50}"}],
                }
            )
            await kube.call(
                "POST",
                f"/api/v1/namespaces/{namespace}/events",
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": f"{name}.{index:x}", "namespace": namespace},
                    "involvedObject": {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "AccessRequest",
                        "name": name,
                        "namespace": namespace,
                        "uid": uid,
                    },
                    "reason": "Granted",
                    "message": f"Granted ClusterRole view in {namespace} for 1h.",
                    "type": "Normal",
                    "source": {"component": "lapse-plain-bench"},
                    "firstTimestamp": _now(),
                    "lastTimestamp": _now(),
                    "count": 1,
                },
            )
            ref = {
                "kind": "RoleBinding",
                "name": binding["metadata"]["name"],
                "namespace": namespace,
                "uid": binding["metadata"]["uid"],
            }
            status = {
                "status": {
                    "phase": "Active",
                    "reason": "Granted",
                    "message": f"Granted ClusterRole view in {namespace} for 1h.",
                    "expiresAt": _now(),
                    "bindings": [ref],
                    "observedGeneration": 1,
                }
            }
            await kube.call("PATCH", f"{owner}/status", status, content_type=MERGE_PATCH)
            handled = {"metadata": {"annotations": {"kopf.zalando.org/last-handled": _now()}}}
            await kube.call("PATCH", owner, handled, content_type=MERGE_PATCH)
        except ApiError as error:
            refused += 1
            if refused <= 3:
                log(f"  plain grant {name} refused: {error}")
            return
        done = time.time()
        finished.append(done)
        durations.append(done - began)

    await _each(concurrency, list(range(n)), grant)
    span = max(finished) - min(started) if finished else float("nan")
    result = PlainGrants(
        n=n,
        concurrency=concurrency,
        made=len(finished),
        refused=refused,
        seconds=span,
        grants_per_s=len(finished) / span if span > 0 else float("nan"),
        grants_per_s_middle=middle_rate(sorted(finished)),
        grant_s=stats(durations),
    )
    log(f"  plain grants: {result.made:,} made in {span:.2f} s, {result.grants_per_s:.0f}/s")
    return result


async def main_async(kubeconfig: str, n: int) -> None:
    import shutil
    import tempfile
    from pathlib import Path

    from bench.cluster import Credentials
    from bench.sidebyside import clean

    scratch = Path(tempfile.mkdtemp(prefix="lapse-plaingrant-"))
    kube = Kube(Credentials.from_kubeconfig(Path(kubeconfig), scratch=scratch), connections=64)
    try:
        await clean(kube, print)
        try:
            result = await plain_grant_rate(kube, n, log=print)
        finally:
            await clean(kube, print)
        print(result.to_json())
    finally:
        await kube.close()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    import asyncio
    import os

    asyncio.run(main_async(os.environ["BENCH_KUBECONFIG"], int(os.environ.get("BENCH_N", "1000"))))
