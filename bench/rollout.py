"""`python -m bench.rollout`: Lapse's revocation lag in pods, through a rolling restart.

`bench.run` runs the operator as a process of this machine. A cluster runs it as `deploy/`
installs it: two replicas in pods, one leading through the Lease `lapse-leader`. Its most
exposed ordinary moment is a rolling restart (an upgrade, `kubectl rollout restart`): the leader
stops and another pod takes over while grants keep falling due. This measures that moment from
the outside with the benchmark's own parts (`measure.steady_phase`, `BindingWatch`,
`report.stats`, `requests.count_requests`): N grants lapse over `BENCH_SPREAD` seconds and,
half-way through the wave, the Deployment is restarted. Each binding's DELETED event against its
`lapse.dev/expires-at` says whether a grant outlived its expiry, and by how much.

It needs the cluster `BENCH_KUBECONFIG` names, with Lapse installed by `kubectl apply -k deploy/`
(`ROLLOUT_INSTALL=1` applies it). Its own objects are removed before (a killed run's) and after;
Lapse's webhook configurations, CRDs and `lapse-system` are Lapse's and never written. Results go
to `rollout.json` in `BENCH_OUTPUT_DIR`. Exit status: 0 when every grant was made and revoked,
1 when not, 2 when it could not run, 130 when interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import measure, report
from bench.backend import SELECTOR
from bench.cluster import ROOT, Credentials, _spawn, _terminate, stop_all
from bench.install import GROUP, PART_OF, POLICY, REQUESTER_ROLE, ROLE, manifests
from bench.kube import FIELD_MANAGER, ApiError, Kube
from bench.measure import Config, PhaseResult, count_done, wait_until
from bench.report import _fmt, stats, verdict
from bench.requests import OPERATOR_AGENTS, RequestCount, _stamp, count_requests
from bench.watch import BindingWatch
from demo.harness import kubectl_binary

HERE = Path(__file__).resolve().parent
NAMESPACE, DEPLOYMENT = "lapse-system", "deployment/lapse-operator"
APPLY, REVIEWS = "application/apply-patch+yaml", "subjectaccessreviews"
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/lapse-leader"
INSTALL = (
    "make image && make image-load REALK8S=../shared/realk8s && kubectl apply -k deploy/ && "
    f"kubectl -n {NAMESPACE} rollout status {DEPLOYMENT}"
)
# The wave must outlast the restart that cuts it half-way, and the new leader's catch-up after
# it: each old pod's 5 s preStop pause and shutdown, each new pod's start (12 s on two cores).
SPREAD = 60.0
# The grants' requests are counted until this long after the last deletion, once the operator
# asked nothing about the benchmark's objects for QUIET_S (`AuditTail`).
AFTER_LAST_S, QUIET_S = 15.0, 10.0
RSS = "operator RSS: not measured (the operator runs in pods, no process of this run)"
GROUPS = ("all", "due before the restart", "due during the rollout", "due after the rollout")

Log = Callable[[str], None]


class SetupError(RuntimeError):
    """The cluster is not ready for the run; the message says what to do (exit status 2)."""


def config_from_env() -> Config:
    def number(name: str, default: float) -> float:
        return float(os.environ.get(name, "").strip() or default)

    base = Config(n=int(number("BENCH_N", 1000)), windows=0)
    return replace(
        base,
        rate=number("BENCH_RATE", base.rate),
        namespaces=int(number("BENCH_NAMESPACES", base.namespaces)),
        hold=number("BENCH_HOLD", base.hold),
        slack=number("BENCH_SLACK", base.slack),
        spread=number("BENCH_SPREAD", SPREAD),
    )


class Kubectl:
    """The project's kubectl, on the benchmark's cluster whatever the shell's KUBECONFIG."""

    def __init__(self, kubeconfig: Path) -> None:
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    async def __call__(self, *args: str, within: float = 120) -> str:
        process = await asyncio.create_subprocess_exec(
            kubectl_binary(), *args, cwd=ROOT, env=self.env, stdout=PIPE, stderr=STDOUT
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), within)
        except TimeoutError:
            raise RuntimeError(f"kubectl {' '.join(args)}: no end within {within:.0f}s") from None
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        if process.returncode:
            raise RuntimeError(f"kubectl {' '.join(args)}: {out.decode(errors='replace').strip()}")
        return out.decode(errors="replace")

    def follow(self, pod: str, since: str, path: Path) -> subprocess.Popen[bytes]:
        """A pod's log into `path` until its container ends: an old pod's is gone after it."""
        command = [kubectl_binary(), "-n", NAMESPACE, "logs", "-f", pod, f"--since-time={since}"]
        with path.open("wb") as out:
            return _spawn(command, env=self.env, stdout=out, stderr=subprocess.STDOUT)


async def operator_pods(kube: Kube, stopping: bool = False) -> dict[str, str]:
    """Lapse's pods, each with the image it runs (by digest once started): the operator
    measured is the image's, whatever the source tree says. With `stopping`, also the pods
    being deleted and not gone yet."""
    selector = "app.kubernetes.io/name=lapse,app.kubernetes.io/component=operator"
    path = f"/api/v1/namespaces/{NAMESPACE}/pods"
    found = (await kube.call("GET", path, params={"labelSelector": selector}))["items"]
    return {
        pod["metadata"]["name"]: next(
            (s.get("imageID") or s["image"] for s in pod["status"].get("containerStatuses", [])),
            pod["spec"]["containers"][0]["image"],
        )
        for pod in found
        if stopping or "deletionTimestamp" not in pod["metadata"]
    }


async def ensure_installed(kubectl: Kubectl, log: Log) -> None:
    wait = 60
    try:
        if os.environ.get("ROLLOUT_INSTALL", "").strip() == "1":
            log("ROLLOUT_INSTALL=1: kubectl apply -k deploy/ (the image must be on the node)")
            await kubectl("apply", "-k", str(ROOT / "deploy"), within=180)
            wait = 300  # pulls nothing, but two pods start in turn
        status = ("-n", NAMESPACE, "rollout", "status", DEPLOYMENT, f"--timeout={wait}s")
        await kubectl(*status, within=wait + 20)
    except RuntimeError as error:
        raise SetupError(f"Lapse is not rolled out ({error}). Install it: {INSTALL}") from None


async def install(kube: Kube, namespaces: list[str]) -> list[str]:
    """`install_on_cluster`, without writing the CRDs: Lapse's install owns them, and they are
    only compared with crds/ (a note when they differ). A namespace of the benchmark's names
    that it did not make is refused: not its to fill and delete."""
    for item in (await kube.call("GET", "/api/v1/namespaces"))["items"]:
        name, labels = item["metadata"]["name"], item["metadata"].get("labels") or {}
        if name in namespaces and any(labels.get(k) != v for k, v in PART_OF.items()):
            raise SetupError(f"namespace {name} exists without the label {SELECTOR}: not ours")
    notes = []
    for doc in manifests(namespaces):
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "CustomResourceDefinition":
            path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            try:
                current = await kube.call("GET", path)
            except ApiError as error:
                raise SetupError(f"CRD {name}: {error}. Install Lapse: {INSTALL}") from None
            # What applying crds/ would make of it, written nowhere: the server's defaults are
            # on both sides, so only a real difference shows.
            params = {"fieldManager": FIELD_MANAGER, "force": "true", "dryRun": "All"}
            would = await kube.call("PATCH", path, doc, params=params, content_type=APPLY)
            if would.get("spec") != current.get("spec"):
                notes.append(f"CRD {name} differs from crds/; left as installed")
        elif (kind == "ClusterRole" and name == ROLE) or kind == "Namespace":
            await kube.create(doc, exist_ok=True)
        else:
            await kube.apply(doc)
    return notes


async def clean(kubectl: Kubectl, log: Log) -> None:
    """The benchmark's namespaces, policy and requester role: `ClusterBackend.clean` without
    the webhook configurations, which are Lapse's here. Lapse runs: it ends the requests of a
    deleted namespace and takes its finalizer off them, so none is forced off here."""
    log("removing the benchmark's namespaces, policy and requester role (any left)")
    await kubectl("delete", "namespaces", "-l", SELECTOR, "--timeout=900s", within=920)
    rbac = ("clusterrolebindings", "clusterroles")
    names = [f"accesspolicies.lapse.dev/{POLICY}", *(f"{r}/{REQUESTER_ROLE}" for r in rbac)]
    await kubectl("delete", *names, "--ignore-not-found")


async def wait_admission(kube: Kube, namespace: str, within: float = 60) -> None:
    """Until Lapse's webhooks stamp a dry-run request by a user of the benchmark's group."""
    probe = measure.request_manifest((namespace, "bench-readiness-probe"), "1m")
    path = f"/apis/lapse.dev/v1alpha1/namespaces/{namespace}/accessrequests"
    who: dict[str, Any] = {"as_user": measure.user_of(0), "as_groups": (GROUP,)}
    deadline, problem = time.monotonic() + within, ""
    while time.monotonic() < deadline:
        try:
            created = await kube.call("POST", path, probe, params={"dryRun": "All"}, **who)
            if created.get("spec", {}).get("requester", {}).get("username"):
                return
            problem = "the requester was not stamped"
        except (ApiError, OSError) as error:
            problem = str(error)
        await asyncio.sleep(1.0)
    raise SetupError(f"Lapse's webhooks do not answer ({problem}). Install it: {INSTALL}")


class AuditTail:
    """When the operator last asked the API server about an object in the benchmark's
    namespaces, or for an access review; read from the audit log's new end only (a shared
    cluster's log grows by megabytes). Its periodic work (the Lease, the policies' exposure
    every 2 s, the webhook certificate, the sweep) never stops, and is no sign that grants are
    still being ended."""

    def __init__(self, path: Path, namespaces: list[str]) -> None:
        self.path, self.offset, self.last = path, path.stat().st_size, 0.0
        self.namespaces = set(namespaces)

    @classmethod
    def named(cls, namespaces: list[str]) -> AuditTail | None:
        """The API server's audit log `BENCH_AUDIT_LOG` names, from its present end."""
        path = Path(os.environ.get("BENCH_AUDIT_LOG", "").strip() or os.devnull)
        return cls(path, namespaces) if path.is_file() else None

    def read(self) -> float:
        with self.path.open("rb") as log:
            if log.seek(0, os.SEEK_END) < self.offset:
                self.offset = 0  # rotated
            log.seek(self.offset)
            for line in log:
                if not line.endswith(b"\n"):
                    break  # still being written: read whole next time
                self.offset += len(line)
                if b'"lapse-operator' not in line and b'"kopf/' not in line:
                    continue
                event = json.loads(line)
                ref = event.get("objectRef", {})
                # An end's check asks access reviews, and writes only a verdict with a reader.
                ours = ref.get("namespace") in self.namespaces or ref.get("resource") == REVIEWS
                if ours and str(event.get("userAgent")).startswith(OPERATOR_AGENTS):
                    self.last = max(self.last, _stamp(event["requestReceivedTimestamp"]))
        return self.last


@dataclass
class Rollout:
    restart_at: float = math.nan
    rolled_out_at: float = math.nan  # `rollout status` returned
    # The last old pod gone: `rollout status` counts the new pods only, and the old ones keep
    # running (and leading) through their preStop pause and their shutdown.
    settled_at: float = math.nan
    first_expiry: float = math.nan
    pods_before: list[str] = field(default_factory=list)
    pods_after: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # what the new pods run
    # (wall clock, holder) whenever the Lease changed hands, from just before the restart.
    holders: list[tuple[float, str | None]] = field(default_factory=list)
    # When each old pod was gone from the API (its container ended, its object deleted).
    gone: dict[str, float] = field(default_factory=dict)

    def leader(self) -> str | None:
        return self.holders[-1][1] if self.holders else None


async def follow_rollout(kube: Kube, rollout: Rollout) -> None:
    """Every 0.5 s: who holds the Lease, and which of the old pods are gone."""
    while True:
        with contextlib.suppress(ApiError, OSError, TimeoutError):
            holder = (await kube.call("GET", LEASE))["spec"].get("holderIdentity")
            if not rollout.holders or rollout.leader() != holder:
                rollout.holders.append((time.time(), holder))
            present = await operator_pods(kube, stopping=True)
            for pod in set(rollout.pods_before) - set(present) - set(rollout.gone):
                rollout.gone[pod] = time.time()
        await asyncio.sleep(0.5)


@dataclass
class Outcome:
    config: Config
    backend: str
    steady: PhaseResult
    rollout: Rollout
    requests: RequestCount | None
    notes: list[str]
    watch: dict[str, int]


async def run(config: Config, kube: Kube, kubectl: Kubectl, workdir: Path, log: Log) -> Outcome:
    """One measurement; whatever it made in the cluster is gone again when it returns."""
    namespaces = [f"bench-{i}" for i in range(config.namespaces)]
    watch = BindingWatch(kube.credentials, namespaces)
    rollout, claimed, watching = Rollout(), False, False
    logs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        backend = f"kube-apiserver {(await kube.call('GET', '/version')).get('gitVersion')}"
        await ensure_installed(kubectl, log)
        claimed = True
        await clean(kubectl, log)
        notes = await install(kube, namespaces)
        await wait_admission(kube, namespaces[0])
        rollout.pods_before = sorted(await operator_pods(kube))
        log(f"{backend}: Lapse in pods {', '.join(rollout.pods_before)}")
        since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for pod in rollout.pods_before:
            logs[pod] = kubectl.follow(pod, since, workdir / f"{pod}.log")
        tail = AuditTail.named(namespaces)
        watch.start()
        watching = True
        log(f"steady: {config.n} requests at {config.rate:g}/s")
        base = watch.counts()
        steady, planned = await measure.steady_phase(kube, watch, config, namespaces)
        if failed := [s for s in steady.sent if s.error]:
            notes.append(f"{len(failed)} creates failed, e.g. {failed[0].error}")
        granted = count_done(watch, base, config.n - len(failed), 0)
        await wait_until("every grant", granted, within=max(60.0, planned - time.time() - 1))
        seen = watch.snapshot()
        due = [b.expires_at for s in steady.sent if (b := seen.get(s.key)) and b.expires_at]
        rollout.first_expiry = min(due, default=planned)
        restart_due = rollout.first_expiry + config.expiry_spread / 2
        log(f"  {len(due)} granted; rollout restart in {restart_due - time.time():.0f}s")
        await asyncio.sleep(max(0.0, restart_due - 0.6 - time.time()))

        async def rolled_out() -> float:
            await kubectl("-n", NAMESPACE, "rollout", "status", DEPLOYMENT, within=620)
            return time.time()

        following = asyncio.create_task(follow_rollout(kube, rollout))
        try:
            await asyncio.sleep(0.6)  # the follower reads the holder before the restart
            rollout.restart_at = time.time()
            await kubectl("-n", NAMESPACE, "rollout", "restart", DEPLOYMENT)
            log(f"rollout restart sent; {rollout.leader()} led")
            status = asyncio.create_task(rolled_out())
            await wait_until(
                "every grant to lapse",
                count_done(watch, base, len(due), 1),
                within=rollout.first_expiry + config.expiry_spread + 300 - time.time(),
                progress=lambda: f"{watch.counts()[1] - base[1]}/{len(due)} revoked",
            )
            rollout.rolled_out_at = await status
            log(f"  rolled out after {rollout.rolled_out_at - rollout.restart_at:.1f}s")
            old = {*rollout.pods_before, None}
            await wait_until("a new pod to lead", lambda: rollout.leader() not in old, 120)
            await wait_until("the old pods to go", lambda: len(rollout.gone) == len(old) - 1, 120)
            rollout.settled_at = max([rollout.rolled_out_at, *rollout.gone.values()])
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        after = await operator_pods(kube)
        rollout.pods_after, rollout.images = sorted(after), sorted(set(after.values()))
        for pod in rollout.pods_after:
            text = await kubectl("-n", NAMESPACE, "logs", pod, f"--since-time={since}")
            (workdir / f"{pod}.log").write_text(text)
        seen = watch.snapshot()
        steady.bindings = {s.key: b for s in steady.sent if (b := seen.get(s.key))}
        requests = None
        if tail is None:
            notes.append("no audit log of the API server (BENCH_AUDIT_LOG): requests not counted")
        else:
            last = max((b.deleted for b in steady.bindings.values() if b.deleted), default=0.0)
            quiet = await wait_until(
                "the operator to go quiet",
                lambda: time.time() - max(tail.read(), last) >= QUIET_S,
                within=180,
            )
            until = max(last + AFTER_LAST_S, tail.last)
            await asyncio.sleep(max(0.0, until + 1 - time.time()))
            made = sum(1 for b in steady.bindings.values() if b.added is not None)
            requests = count_requests(tail.path, steady.started, until, made)
            requests = replace(requests, complete=quiet)
        counts = {"events": watch.events, "reconnects": watch.reconnects}
        return Outcome(config, backend, steady, rollout, requests, notes, counts)
    finally:
        if watching:
            watch.stop()
        for process in logs.values():
            _terminate(process, timeout=5)
        if claimed:
            await clean(kubectl, log)


def summarize(outcome: Outcome, host: dict[str, Any]) -> dict[str, Any]:
    """Every figure, as `rollout.json` holds it and `table` shows it."""
    config, steady, rollout = outcome.config, outcome.steady, outcome.rollout
    restart, requests = rollout.restart_at, outcome.requests
    lags: dict[str, list[float]] = {name: [] for name in GROUPS}
    latency, samples, early, ungranted, unrevoked = [], [], 0, 0, 0
    for sent in steady.sent:
        binding = steady.bindings.get(sent.key)
        if binding is None or binding.added is None:
            ungranted += 1
            continue
        latency.append(binding.added - sent.sent)
        due, deleted = binding.expires_at, binding.deleted
        if deleted is None or due is None:
            unrevoked += 1
        elif deleted < due - report.EARLY_TOLERANCE_S:
            early += 1  # access ended too soon: counted apart, so it neither hides nor flatters
        else:
            group = GROUPS[1 if due < restart else 2 if due <= rollout.settled_at else 3]
            lags["all"].append(deleted - due)
            lags[group].append(deleted - due)
            samples.append([round(due - restart, 3), round(deleted - due, 4)])
    worst = stats(lags["all"]).max
    return {
        "n": config.n,
        "backend": outcome.backend,
        "revocation_lag_s": {name: stats(values).to_json() for name, values in lags.items()},
        "revocation_lag_max_s": worst,
        "max_lag_within_1s": verdict("revocation_lag_max_s", worst),
        "grant_latency_s": stats(latency).to_json(),
        "missing_grants": ungranted,
        "missing_revocations": unrevoked,
        "revoked_before_expiry": early,
        "rollout": {
            "restart_at": datetime.fromtimestamp(restart, UTC).isoformat(timespec="milliseconds"),
            "restart_after_first_expiry_s": round(restart - rollout.first_expiry, 3),
            "rolled_out_after_s": round(rollout.rolled_out_at - restart, 3),
            "old_pods_gone_after_s": {p: round(t - restart, 3) for p, t in rollout.gone.items()},
            "rollout_over_after_s": round(rollout.settled_at - restart, 3),
            "pods_before": rollout.pods_before,
            "pods_after": rollout.pods_after,
            "images": rollout.images,
            "lease_holders_after_s": [[round(at - restart, 3), who] for at, who in rollout.holders],
        },
        "requests_per_grant": requests.per_grant if requests else None,
        "requests": requests.to_json() if requests else None,
        "rss_mb": None,
        "not_measured": [RSS, *([] if requests else ["requests per grant (no audit log)"])],
        "config": asdict(config) | {"expiry_spread": config.expiry_spread},
        "watch": outcome.watch,
        "notes": outcome.notes,
        "machine": host,
        "source": report.source_version(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "lag_by_due_after_restart_s": sorted(samples),
    }


def table(entry: dict[str, Any], requests: RequestCount | None) -> str:
    config, host, source, roll = (entry[k] for k in ("config", "machine", "source", "rollout"))
    holders = roll["lease_holders_after_s"] or [[0.0, None]]
    lines = [
        f"Lapse in pods through a rolling restart, N = {entry['n']:,} ({config['namespaces']} "
        f"namespaces, {config['rate']:g}/s offered, expiries over {config['expiry_spread']:g} s)",
        f"machine: {host['cpu']}, {host['cores']} cores, {host['memory_gib']} GiB; backend: "
        f"{entry['backend']}; Lapse's image: {', '.join(roll['images'])} (the benchmark: commit "
        f"{source['commit']}, {source['uncommitted_files']} file(s) changed under operator/, "
        "kubeapi/, crds/)",
        f"`kubectl rollout restart {DEPLOYMENT}` at {roll['restart_at']} (first expiry "
        f"+ {roll['restart_after_first_expiry_s']:.1f} s); `rollout status` done after "
        f"{roll['rolled_out_after_s']:.1f} s, the rollout over (last old pod gone) after "
        f"{roll['rollout_over_after_s']:.1f} s",
        f"pods {', '.join(roll['pods_before'])} before, {', '.join(roll['pods_after'])} after; "
        "old pods gone at "
        + ", ".join(f"+{t:.1f} s ({p})" for p, t in sorted(roll["old_pods_gone_after_s"].items())),
        f"lease lapse-leader: {holders[0][1]} before, {holders[-1][1]} after; changes: "
        + ", ".join(f"+{at:.1f} s {who}" for at, who in holders[1:]),
        f"missing grants: {entry['missing_grants']}; missing revocations: "
        f"{entry['missing_revocations']}; revoked early (before expiry - 1 s): "
        f"{entry['revoked_before_expiry']}",
        "",
        f"{'figure':<44}{'n':>7}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}",
    ]
    rows = [(f"revocation lag, {name} (s)", s) for name, s in entry["revocation_lag_s"].items()]
    for label, s in [*rows, ("grant latency (s)", entry["grant_latency_s"])]:
        cells = "".join(f"{_fmt(s[q]):>9}" for q in ("p50", "p95", "p99", "max"))
        lines.append(f"{label:<44}{s['count']:>7}{cells}")
    lines.append(
        f"{'max revocation lag (s)':<38}{_fmt(entry['revocation_lag_max_s']):>9}  target: no "
        f"grant outlives its expiry by more than 1 s: {entry['max_lag_within_1s']}"
    )
    lines += [*report.requests_lines(requests), RSS, *(f"note: {n}" for n in entry["notes"])]
    return "\n".join(lines)


def write(path: Path, entry: dict[str, Any]) -> None:
    """Into rollout.json: this N's entry replaces an older one; other sizes' are kept."""
    kept: list[dict[str, Any]] = []
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        kept = [e for e in json.loads(path.read_text())["results"] if e["n"] != entry["n"]]
    document = {"results": sorted([*kept, entry], key=lambda e: int(e["n"]))}
    path.write_text(json.dumps(report._finite(document), indent=2, allow_nan=False) + "\n")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes Ctrl-C's path; a second signal must not cut the clean-up short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


async def main_async(config: Config, kubeconfig: Path, out: Path, workdir: Path) -> int:
    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    scratch = workdir / "credentials"
    scratch.mkdir(mode=0o700)
    kube = Kube(Credentials.from_kubeconfig(kubeconfig, scratch=scratch), connections=64)
    try:
        outcome = await run(config, kube, Kubectl(kubeconfig), workdir, log)
    finally:
        await kube.close()
        shutil.rmtree(scratch, ignore_errors=True)
    entry = summarize(outcome, report.machine())
    print("\n" + table(entry, outcome.requests) + "\n", flush=True)
    write(out / "rollout.json", entry)
    print(f"wrote {out / 'rollout.json'}", flush=True)
    return 1 if entry["missing_grants"] or entry["missing_revocations"] else 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    named = os.environ.get("BENCH_KUBECONFIG", "").strip()
    if not named or not Path(named).expanduser().is_file():
        print(
            "rollout: BENCH_KUBECONFIG must name the kubeconfig of a cluster with Lapse installed "
            f"({'not a file: ' + named if named else 'unset'}); KUBECONFIG is never used",
            file=sys.stderr,
        )
        return 2
    try:
        config = config_from_env()
    except ValueError as error:
        print(f"rollout: {error} (BENCH_N is one size here)", file=sys.stderr)
        return 2
    out = Path(os.environ.get("BENCH_OUTPUT_DIR") or HERE)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="lapse-rollout-"))
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    status = 2
    try:
        status = asyncio.run(main_async(config, Path(named).expanduser().resolve(), out, workdir))
    except SetupError as error:
        print(f"rollout: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; the benchmark's objects were removed", file=sys.stderr)
        status = 130
    finally:
        stop_all()
        if not any(workdir.glob("*.log")) or (status == 0 and not os.environ.get("BENCH_KEEP")):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"the operator pods' logs are kept in {workdir}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
