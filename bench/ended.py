"""Part 2 of `bench.history`: the operator's start-up with 100,000 ended requests, and
retention clearing them.

A cluster that ran Lapse for a long time with retention off (`LAPSE_RETENTION=0`), or before
retention existed, holds every request it ever saw; every start of the operator lists them
all, and kopf hands each one to its handlers. This part measures what that costs and what
turning retention on does about it. The requests are written straight into the cluster in
the shape of an ended request captured in part 1 (its spec, annotations and finalizer, and its
status through the status subresource: phase Expired, history, conditions, risk summary,
delivered trail), names and uids changed and the requester's stamp signed again with the
operator's key, as the webhook would have. No Lapse webhook may be registered while they are
written (the webhooks would refuse a stamped requester and an edited status): the
configurations are deleted first, and the operator registers its own when it starts.

Then three starts of the operator: retention off (start-up and RSS with all of them), retention
of one second (how fast they are deleted, and RSS meanwhile), and retention on with nothing
left. etcd's in-use size before the fill, after it, and after retention (`bench.etcd`).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import secrets
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import etcd
from bench.history import (
    NAMESPACES,
    OPERATOR_NAMESPACE,
    WEBHOOK_CONFIGURATION,
    Context,
    count_requests,
    delete_webhook_configurations,
    mb,
)
from bench.historyop import (
    INDEX_LOADED,
    SETTLED_CPU,
    SETTLED_WINDOW,
    HistoryOperator,
    RssSampler,
    cpu_seconds,
)
from bench.install import GROUP
from bench.kube import ApiError, Kube
from bench.measure import request_manifest, user_of
from lapse.core.actions import REQUESTER_SIGNATURE_ANNOTATION, sign_requester
from lapse.core.admission import ADMITTED_AT_ANNOTATION
from lapse.core.bindings import format_time
from lapse.core.requester import signable_spec

COLLECTION = "/apis/lapse.dev/v1alpha1/namespaces/{}/accessrequests"
# Fields of the captured object that the API server sets for each object itself.
LAST_HANDLED = "kopf.zalando.org/last-handled-configuration"
SERVER_SET = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")


def load_template(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RuntimeError(
            f"{path} is missing: part 'retention' captures the ended request copied here "
            "(BENCH_HISTORY_PARTS=retention,startup, or run it once before)"
        )
    return dict(json.loads(path.read_text()))


async def signing_key(kube: Kube) -> bytes:
    """The operator's signing key, made here before the operator's first start if there is
    none (the operator then uses it, as it would a predecessor's)."""
    path = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets/lapse-signing-key"
    try:
        found = await kube.call("GET", path)
        return base64.b64decode(found["data"]["key"])
    except ApiError as error:
        if error.status != 404:
            raise
    key = secrets.token_bytes(32)
    await kube.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": "lapse-signing-key",
                "namespace": OPERATOR_NAMESPACE,
                "labels": {"app.kubernetes.io/name": "lapse"},
            },
            "data": {"key": base64.b64encode(key).decode()},
        }
    )
    return key


class Filler:
    """Writes ended requests like the template: create, then the status subresource."""

    def __init__(self, kube: Kube, template: dict[str, Any], key: bytes) -> None:
        self.kube = kube
        self.key = key
        metadata = template["metadata"]
        self.old = (str(metadata["namespace"]), str(metadata["name"]), str(metadata["uid"]))
        self.metadata = {
            k: v for k, v in metadata.items() if k not in SERVER_SET and k != "deletionTimestamp"
        }
        self.spec = template["spec"]
        self.status_text = json.dumps(template.get("status") or {})
        self.made = 0
        self.failed = 0
        self.error = ""

    def manifest(self, namespace: str, name: str) -> dict[str, Any]:
        metadata = copy.deepcopy(self.metadata)
        metadata.update(name=name, namespace=namespace)
        annotations = metadata.setdefault("annotations", {})
        admitted = format_time(datetime.now(UTC))
        annotations[ADMITTED_AT_ANNOTATION] = admitted
        stamped = signable_spec("AccessRequest", self.spec)
        if stamped is not None:
            annotations[REQUESTER_SIGNATURE_ANNOTATION] = sign_requester(
                "AccessRequest", namespace, name, stamped, admitted, self.key
            )
        # kopf's record of what it last handled names the annotations too: written as kopf
        # would have, or kopf would take every object for an edited one at start-up.
        handled = annotations.get(LAST_HANDLED)
        if handled:
            last = json.loads(handled)
            kept = (last.get("metadata") or {}).get("annotations") or {}
            last.setdefault("metadata", {})["annotations"] = {
                k: annotations.get(k, v) for k, v in kept.items()
            }
            annotations[LAST_HANDLED] = json.dumps(last, separators=(",", ":")) + "\n"
        return {
            "apiVersion": "lapse.dev/v1alpha1",
            "kind": "AccessRequest",
            "metadata": metadata,
            "spec": self.spec,
        }

    def status(self, namespace: str, name: str, uid: str) -> dict[str, Any]:
        old_namespace, old_name, old_uid = self.old
        text = self.status_text.replace(old_uid, uid).replace(old_name, name)
        text = text.replace(f'"{old_namespace}"', f'"{namespace}"')
        return dict(json.loads(text))

    async def one(self, namespace: str, name: str) -> None:
        for attempt in range(5):
            try:
                try:
                    created = await self.kube.create(self.manifest(namespace, name))
                except ApiError as error:
                    if error.status != 409:
                        raise
                    created = await self.kube.call("GET", f"{COLLECTION.format(namespace)}/{name}")
                uid = created["metadata"]["uid"]
                await self.kube.call(
                    "PATCH",
                    f"{COLLECTION.format(namespace)}/{name}/status",
                    {"status": self.status(namespace, name, uid)},
                    content_type="application/merge-patch+json",
                )
                self.made += 1
                return
            except (ApiError, OSError, TimeoutError) as error:
                self.error = str(error)[:300]
                await asyncio.sleep(0.5 * (attempt + 1))
        self.failed += 1


async def fill(context: Context, filler: Filler) -> tuple[int, float, bool]:
    """As many as `BENCH_ENDED` within `BENCH_FILL_WITHIN`; (written, seconds, all of them)."""
    config, log = context.config, context.log
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(config.ended):
        queue.put_nowait(i)
    started = time.monotonic()
    deadline = started + config.fill_within

    async def worker() -> None:
        while time.monotonic() < deadline:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await filler.one(NAMESPACES[i % len(NAMESPACES)], f"ended-{i:06d}")

    async def progress() -> None:
        while True:
            await asyncio.sleep(15)
            rate = filler.made / (time.monotonic() - started)
            log(f"  … {filler.made:,} written ({rate:.0f}/s), {filler.failed} failed")

    reporter = asyncio.create_task(progress())
    await asyncio.gather(*(worker() for _ in range(config.fill_concurrency)))
    reporter.cancel()
    if filler.error:
        log(f"  last write error: {filler.error}")
    return filler.made, time.monotonic() - started, queue.empty()


async def probe_webhook(kube: Kube) -> bool:
    """Whether the operator's admission webhook stamps a (dry-run) request now."""
    probe = request_manifest((NAMESPACES[0], "bench-readiness-probe"), "1m")
    try:
        created = await kube.call(
            "POST",
            COLLECTION.format(NAMESPACES[0]),
            probe,
            params={"dryRun": "All"},
            as_user=user_of(0),
            as_groups=(GROUP,),
        )
    except (ApiError, OSError, TimeoutError):
        return False
    return bool(((created.get("spec") or {}).get("requester") or {}).get("username"))


def metrics_up(operator: HistoryOperator) -> bool:
    try:
        with urllib.request.urlopen(operator.metrics_url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def start_up(
    context: Context,
    operator: HistoryOperator,
    steps: dict[str, float],
    *,
    watch_count: bool = False,
    within: float | None = None,
) -> dict[str, Any]:
    """Start the operator and time its steps from the spawn (see `bench.historyop`); with
    `watch_count`, also until the namespaces hold no request (retention's work). `steps` is
    filled as they are reached, so a caller keeps them when the operator exits midway."""
    kube, log = context.kube, context.log
    within = within or context.config.startup_within
    spawn = operator.start()
    rss = RssSampler(operator.pid)
    cpu: list[tuple[float, float]] = []
    counts: list[tuple[float, int]] = []
    deadline = time.monotonic() + within
    last_report = last_count = 0.0
    while time.monotonic() < deadline:
        operator.check_alive()
        now = time.time()
        cpu.append((now, cpu_seconds(operator.pid)))
        if not rss.samples or now - rss.samples[-1][0] >= 1:
            rss.sample()
            steps["rss_peak_mb"] = round(rss.peak_mb, 1)
        if "metrics" not in steps and metrics_up(operator):
            steps["metrics"] = time.time() - spawn
        if "index" not in steps and operator.log_has(INDEX_LOADED):
            steps["index"] = time.time() - spawn
        if "index" in steps and "webhook" not in steps and await probe_webhook(kube):
            steps["webhook"] = time.time() - spawn
        if "webhook" in steps and "settled" not in steps:
            window = [c for c in cpu if c[0] >= now - SETTLED_WINDOW]
            span = window[-1][0] - window[0][0] if window else 0
            if span >= SETTLED_WINDOW - 0.5:
                busy = 100 * (window[-1][1] - window[0][1]) / span
                if busy < SETTLED_CPU:
                    steps["settled"] = window[0][0] - spawn
                    steps["rss_settled_mb"] = rss.sample() / 2**20
        if watch_count and now - last_count >= 1:
            last_count = now
            counts.append((now, await count_requests(kube, NAMESPACES)))
        if time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            left = f", {counts[-1][1]:,} left" if counts else ""
            log(
                f"  … {time.time() - spawn:.0f}s: steps {sorted(steps)}, "
                f"RSS {rss.last_mb:.0f} MB{left}"
            )
        done = "settled" in steps and (not watch_count or (counts and counts[-1][1] == 0))
        if done:
            break
        await asyncio.sleep(0.25)
    result: dict[str, Any] = {k: round(v, 2) for k, v in steps.items()}
    result["rss_peak_mb"] = round(rss.peak_mb, 1)
    result["timed_out"] = time.monotonic() >= deadline
    if watch_count and counts:
        first = counts[0][1]
        falling = [t for t, c in counts if c < first]
        result["at_start"] = first
        result["left"] = counts[-1][1]
        if falling:
            begun = falling[0]
            result["first_delete_s"] = round(begun - spawn, 1)
            gone = first - counts[-1][1]
            span = counts[-1][0] - begun
            result["deleted"] = gone
            result["delete_span_s"] = round(span, 1)
            result["deletes_per_s"] = round(gone / span, 1) if span > 0 else None
        result["retention_deleted_total"] = operator.metric("lapse_retention_deleted_total")
    return result


def stop_timed(operator: HistoryOperator) -> float:
    started = time.monotonic()
    operator.stop()
    return round(time.monotonic() - started, 2)


async def run(context: Context) -> dict[str, Any]:
    config, kube, log = context.config, context.kube, context.log
    template = load_template(context.template_path())
    removed = await delete_webhook_configurations(kube, ["lapse.dev", WEBHOOK_CONFIGURATION])
    log(f"webhook configurations deleted before the fill: {', '.join(removed) or 'none'}")
    key = await signing_key(kube)
    sizes: dict[str, etcd.Size] = {}
    if context.etcd_url:
        sizes["before_fill"] = etcd.measure(context.etcd_url)
        log(f"etcd in use before the fill: {mb(sizes['before_fill'].in_use)}")
    filler = Filler(kube, template, key)
    log(
        f"writing {config.ended:,} ended requests ({config.fill_concurrency} in flight, "
        f"at most {config.fill_within:.0f}s)"
    )
    written, fill_s, whole = await fill(context, filler)
    log(f"  {written:,} written in {fill_s:.0f}s ({written / fill_s:.0f}/s)")
    held = await count_requests(kube, NAMESPACES)
    if context.etcd_url:
        sizes["after_fill"] = etcd.measure(context.etcd_url)
        log(f"etcd in use after the fill: {mb(sizes['after_fill'].in_use)}")
    runs: dict[str, dict[str, Any]] = {}
    phases = (
        ("kept", {"LAPSE_RETENTION": "0"}, False),
        ("retention", {"LAPSE_RETENTION": "1s", "LAPSE_RETENTION_INTERVAL": "5s"}, True),
        ("empty", {"LAPSE_RETENTION": "1s", "LAPSE_RETENTION_INTERVAL": "5s"}, False),
    )
    for label, settings, counting in phases:
        operator = HistoryOperator(
            context.workdir / "ended" / f"operator-{label}",
            context.kubeconfig,
            OPERATOR_NAMESPACE,
            settings,
        )
        log(f"operator start ({label}): {settings}")
        progress: dict[str, float] = {}
        try:
            runs[label] = await start_up(context, operator, progress, watch_count=counting)
        except RuntimeError as error:
            # The operator exited (out of memory, say): what it reached is kept, and the
            # starts after it would measure nothing comparable.
            runs[label] = {**progress, "error": str(error)[-1500:]}
            log(f"  {label}: the operator exited; steps reached {progress}")
            break
        finally:
            runs.setdefault(label, {})["stop_s"] = stop_timed(operator)
        log(f"  {label}: {runs[label]}")
    if context.etcd_url:
        sizes["after_retention"] = etcd.measure(context.etcd_url)
        log(f"etcd in use after retention: {mb(sizes['after_retention'].in_use)}")
    per_object = (
        (sizes["after_fill"].in_use - sizes["before_fill"].in_use) / written
        if "after_fill" in sizes and written
        else float("nan")
    )
    figures: dict[str, Any] = {
        "ended_asked": config.ended,
        "ended_written": written,
        "held_after_fill": held,
        "fill_complete": whole,
        "fill_s": round(fill_s, 1),
        "fill_per_s": round(written / fill_s, 1) if fill_s else None,
        "fill_failed": filler.failed,
        "webhook_configurations_deleted": removed,
        "runs": runs,
        "etcd": {k: v.to_json() for k, v in sizes.items()},
        "etcd_bytes_per_object": round(per_object),
        "passed": runs.get("retention", {}).get("left") == 0 and "empty" in runs,
    }
    figures["table"] = table(figures, sizes)
    return figures


def _step(run: dict[str, Any], name: str) -> str:
    value = run.get(name)
    return f"{value:.1f} s" if isinstance(value, int | float) else "—"


def table(figures: dict[str, Any], sizes: dict[str, etcd.Size]) -> list[tuple[str, str]]:
    runs = figures["runs"]
    rows = [
        (
            "ended requests written",
            f"{figures['ended_written']:,} of {figures['ended_asked']:,} in "
            f"{figures['fill_s']:.0f} s ({figures['fill_per_s']}/s)",
        ),
        (
            "Lapse webhook configurations deleted first",
            ", ".join(figures["webhook_configurations_deleted"]) or "none",
        ),
    ]
    for label, said in (
        ("kept", "retention off, all held"),
        ("retention", "retention 1s"),
        ("empty", "retention on, none left"),
    ):
        run = runs.get(label, {})
        rows.append(
            (
                f"start ({said}): metrics / index / webhook / settled",
                " / ".join(_step(run, s) for s in ("metrics", "index", "webhook", "settled")),
            )
        )
        rows.append(
            (
                f"  RSS settled / peak ({said})",
                f"{run.get('rss_settled_mb', float('nan')):.0f} / "
                f"{run.get('rss_peak_mb', float('nan')):.0f} MB; stop {run.get('stop_s')} s",
            )
        )
    deleting = runs.get("retention", {})
    rows.append(
        (
            "retention deleting them",
            f"{deleting.get('deleted', 0):,} in {deleting.get('delete_span_s')} s = "
            f"{deleting.get('deletes_per_s')}/s (first after {deleting.get('first_delete_s')} s"
            f" from spawn; {deleting.get('left')} left)",
        )
    )
    if sizes:
        rows.append(
            (
                "etcd in use: before fill / after fill / after retention",
                " / ".join(
                    mb(sizes[k].in_use)
                    for k in ("before_fill", "after_fill", "after_retention")
                    if k in sizes
                ),
            )
        )
        rows.append(("etcd bytes per ended object (fill)", f"{figures['etcd_bytes_per_object']:,}"))
    return rows
