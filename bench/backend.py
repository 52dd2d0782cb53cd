"""Where the benchmark runs: the local API it starts itself, or a cluster a kubeconfig names.

The rule (see README.md): `BENCH_KUBECONFIG=path` runs against that cluster;
`BENCH_CLUSTER=kubeconfig` runs against the cluster `KUBECONFIG` names (or `~/.kube/config`);
otherwise (`BENCH_CLUSTER` unset or `local`) against a local API started for each size. A
`KUBECONFIG` alone never switches: a run makes tens of thousands of objects, and the cluster
a shell happens to point at is not to be benchmarked by accident.

A cluster outlives the run, so the benchmark leaves it as it found it: before each size it
removes what an earlier, killed run left behind, and after each size it deletes its namespaces
(waiting until they are gone), its policy, its requester role and the webhook configurations
its operator registered. The CRDs stay: other AccessRequests in the cluster live in them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.cluster import Credentials, LocalApi
from bench.install import PART_OF, POLICY, REQUESTER_ROLE, install, install_on_cluster
from bench.kube import ApiError, Kube
from lapse.config import Settings

LOCAL = "local API"
SELECTOR = ",".join(f"{k}={v}" for k, v in PART_OF.items())
# Requests' finalizers taken off at once when cleaning up: as many as the API takes in flight.
CONCURRENCY = 16
# How long a size's namespaces may take to go (tens of thousands of objects at N = 10,000).
GONE_WITHIN = 900.0

Log = Callable[[str], None]


class ChoiceError(ValueError):
    """The environment names no usable cluster; the message says what to change."""


@dataclass(frozen=True)
class Choice:
    """Which cluster the environment names: None for the local API."""

    kubeconfig: Path | None
    named_by: str = ""


def choose(env: Mapping[str, str]) -> Choice:
    """The backend `env` asks for, by the rule in this module's docstring."""
    mode = env.get("BENCH_CLUSTER", "").strip()
    explicit = env.get("BENCH_KUBECONFIG", "").strip()
    if mode not in ("", "local", "kubeconfig"):
        raise ChoiceError(f"BENCH_CLUSTER={mode!r}: use 'local' or 'kubeconfig'")
    if mode == "local":
        if explicit:
            raise ChoiceError("BENCH_CLUSTER=local and BENCH_KUBECONFIG both set: pick one")
        return Choice(None)
    if explicit:
        named, by = explicit, "BENCH_KUBECONFIG"
    elif mode == "kubeconfig":
        named, by = env.get("KUBECONFIG", "").strip() or "~/.kube/config", "KUBECONFIG"
    else:
        return Choice(None)
    if os.pathsep in named:
        raise ChoiceError(f"{by}={named!r} lists several files; name one kubeconfig")
    path = Path(named).expanduser()
    if not path.is_file():
        raise ChoiceError(f"{by} names {path}, which is not a file")
    return Choice(path.resolve(), by)


class Backend(Protocol):
    """What a benchmark run needs of its cluster, the same for both kinds."""

    label: str
    kubeconfig: Path
    # The API server's audit log, where the requests per grant are counted (None: not known).
    audit_log: Path | None

    def start(self) -> Credentials: ...
    def api_pid(self) -> int | None: ...
    async def install(self, kube: Kube, namespaces: list[str], log: Log) -> None: ...
    async def clean(self, kube: Kube, log: Log) -> None: ...
    def stop(self) -> None: ...


def open_backend(choice: Choice, workdir: Path) -> Backend:
    if choice.kubeconfig is None:
        return LocalBackend(workdir)
    return ClusterBackend(workdir, choice.kubeconfig)


class LocalBackend:
    """`python -m kubeapi`, started for one size and stopped with everything in it."""

    label = LOCAL

    def __init__(self, workdir: Path) -> None:
        self.api = LocalApi(workdir / "kubeapi")
        self.kubeconfig = self.api.kubeconfig
        self.audit_log: Path | None = self.api.audit_log

    def start(self) -> Credentials:
        return self.api.start()

    def api_pid(self) -> int | None:
        return self.api.pid

    async def install(self, kube: Kube, namespaces: list[str], log: Log) -> None:
        await install(kube, namespaces)

    async def clean(self, kube: Kube, log: Log) -> None:
        """Nothing: the API and all it holds end with the run."""

    def stop(self) -> None:
        self.api.stop()


class ClusterBackend:
    """A cluster named by a kubeconfig, used with the credentials it holds (an admin's).

    Its API server is no process of this run: its CPU is not measured, and it must reach the
    operator's webhook server at 127.0.0.1 of this machine.
    """

    def __init__(self, workdir: Path, kubeconfig: Path) -> None:
        self.secrets = workdir / "credentials"
        self.kubeconfig = kubeconfig
        self.label = "kube-apiserver"
        # The API server's --audit-log-path, when it runs on this machine (README).
        audit_log = os.environ.get("BENCH_AUDIT_LOG", "").strip()
        self.audit_log: Path | None = Path(audit_log) if audit_log else None
        # The operator inherits LAPSE_* settings, its webhook configurations' name included.
        self.webhook_configuration = Settings.from_env().webhook_configuration
        # Set once the cluster passed `_refuse_foreign`: a refused cluster is left untouched,
        # also by the clean-up that follows a failed run.
        self.claimed = False

    def start(self) -> Credentials:
        # The admin's key, if the kubeconfig embeds one, is written here for `ssl` to read and
        # removed again in `stop`: a failed run keeps its workdir for its logs, not for this.
        self.secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        credentials = Credentials.from_kubeconfig(self.kubeconfig, scratch=self.secrets)
        self.label = f"kube-apiserver {_version(credentials)}"
        return credentials

    def api_pid(self) -> int | None:
        return None

    def stop(self) -> None:
        """The cluster is not the run's to stop (`clean` removed what the run made); only the
        copies of its credentials go."""
        shutil.rmtree(self.secrets, ignore_errors=True)

    async def install(self, kube: Kube, namespaces: list[str], log: Log) -> None:
        await self._refuse_foreign(kube, namespaces)
        self.claimed = True
        await self.clean(kube, log)
        await install_on_cluster(kube, namespaces)

    async def clean(self, kube: Kube, log: Log) -> None:
        """Remove what the benchmark makes; before a size (a killed run's) and after it."""
        if not self.claimed:
            return
        # Webhooks first: with the operator gone they point at nothing, and the Lapse ones that
        # fail closed would refuse every AccessRequest in the cluster, not only ours.
        for kind in ("mutating", "validating"):
            await kube.delete(
                f"/apis/admissionregistration.k8s.io/v1/{kind}webhookconfigurations/"
                f"{self.webhook_configuration}"
            )
        await _delete_unfinalized(kube, f"/apis/lapse.dev/v1alpha1/accesspolicies/{POLICY}")
        listing = await kube.call("GET", "/api/v1/namespaces", params={"labelSelector": SELECTOR})
        ours = sorted({item["metadata"]["name"] for item in listing.get("items", [])})
        if ours:
            log(f"  removing namespaces {', '.join(ours)} from {self.label}")
            await self._remove_namespaces(kube, ours, log)
        rbac = "/apis/rbac.authorization.k8s.io/v1"
        await kube.delete(f"{rbac}/clusterrolebindings/{REQUESTER_ROLE}")
        await kube.delete(f"{rbac}/clusterroles/{REQUESTER_ROLE}")

    async def _refuse_foreign(self, kube: Kube, namespaces: list[str]) -> None:
        """Refuse a cluster where the benchmark would take over what is not its own: a
        namespace of its names that it did not make, or Lapse itself installed (its webhook
        configurations, same name, would be re-pointed at this machine and then deleted)."""
        for name in namespaces:
            try:
                found = await kube.call("GET", f"/api/v1/namespaces/{name}")
            except ApiError as error:
                if error.status == 404:
                    continue
                raise
            labels = found["metadata"].get("labels") or {}
            if any(labels.get(k) != v for k, v in PART_OF.items()):
                raise RuntimeError(
                    f"namespace {name} exists and is not the benchmark's (no label {SELECTOR}); "
                    "the benchmark would write into it and then delete it"
                )
        for kind in ("mutating", "validating"):
            path = (
                f"/apis/admissionregistration.k8s.io/v1/{kind}webhookconfigurations/"
                f"{self.webhook_configuration}"
            )
            try:
                found = await kube.call("GET", path)
            except ApiError as error:
                if error.status == 404:
                    continue
                raise
            if any(
                (h.get("clientConfig") or {}).get("service") for h in found.get("webhooks") or []
            ):
                raise RuntimeError(
                    f"{kind} webhook configuration {self.webhook_configuration} calls a Service: "
                    "Lapse is installed in this cluster; benchmark a cluster without it"
                )

    async def _remove_namespaces(self, kube: Kube, names: list[str], log: Log) -> None:
        """Delete them and wait until they are gone. The requests in them hold Lapse's
        finalizer, and no operator runs now to take it off: it is taken off here. Their
        bindings go with the namespace."""
        for name in names:
            await kube.delete(f"/api/v1/namespaces/{name}")
        started = time.monotonic()
        deadline = started + GONE_WITHIN
        last_report = time.monotonic()
        remaining, stripped = list(names), 0
        while remaining:
            for name in remaining:
                stripped += await _strip_finalizers(kube, name)
            remaining = [
                name for name in remaining if await _exists(kube, f"/api/v1/namespaces/{name}")
            ]
            if not remaining:
                log(f"  namespaces gone after {time.monotonic() - started:.0f}s")
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"namespaces {', '.join(remaining)} were not gone within {GONE_WITHIN:.0f}s"
                )
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                log(
                    f"  … waiting for {len(remaining)} namespace(s) to go "
                    f"({stripped} finalizers taken off)"
                )
            await asyncio.sleep(1.0)


def _version(credentials: Credentials) -> str:
    """The API server's gitVersion, e.g. v1.36.2: which Kubernetes the figures are from."""
    request = urllib.request.Request(credentials.server + "/version", headers=credentials.headers())
    context = credentials.ssl_context()
    with urllib.request.urlopen(
        request, timeout=10, context=context if isinstance(context, ssl.SSLContext) else None
    ) as response:
        return str(json.loads(response.read())["gitVersion"])


async def _exists(kube: Kube, path: str) -> bool:
    try:
        await kube.call("GET", path)
    except ApiError as error:
        if error.status == 404:
            return False
        raise
    return True


NO_FINALIZERS = {"metadata": {"finalizers": None}}


async def _delete_unfinalized(kube: Kube, path: str) -> None:
    """Delete an object, taking off any finalizer whose controller is not running."""
    if await kube.delete(path) and await _exists(kube, path):
        await _patch_absent(kube, path, NO_FINALIZERS)


async def _patch_absent(kube: Kube, path: str, patch: dict[str, Any]) -> None:
    try:
        await kube.call("PATCH", path, patch, content_type="application/merge-patch+json")
    except ApiError as error:
        if error.status != 404:
            raise


async def _strip_finalizers(kube: Kube, namespace: str) -> int:
    """Take every finalizer off the AccessRequests in `namespace`; how many it took off."""
    collection = f"/apis/lapse.dev/v1alpha1/namespaces/{namespace}/accessrequests"
    held: list[str] = []
    params = {"limit": "500"}
    while True:
        try:
            page = await kube.call("GET", collection, params=params)
        except ApiError as error:
            # Gone with its namespace, or the CRD was never installed.
            if error.status == 404:
                return 0
            raise
        held.extend(
            item["metadata"]["name"]
            for item in page.get("items", [])
            if item["metadata"].get("finalizers")
        )
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            break
        params = {"limit": "500", "continue": token}
    gate = asyncio.Semaphore(CONCURRENCY)

    async def strip(name: str) -> None:
        async with gate:
            await _patch_absent(kube, f"{collection}/{name}", NO_FINALIZERS)

    await asyncio.gather(*(strip(name) for name in held))
    return len(held)
