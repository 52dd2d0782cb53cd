"""Part 1 of `bench.history`: retention with a sink outage, on a real cluster and a real rsyslog.

The issue's "done when": with retention of a minute and the syslog server down for five
minutes in the middle of N grants, every record still arrives (N complete streams, none
broken, checked with the operator's key by `kubectl lapse audit verify`), no request begins
to leave the cluster before its last record arrived (rsyslog's receipt time of each stream's
last record against the first watch event that shows the request being deleted), the access
review from the exported file lists all N grants, and etcd holds at the end what it held at
the start (within 5 %). Along the way it measures what an ended grant costs: its object in
etcd (sampled while ended and delivered, before retention) and its records in the SIEM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import etcd
from bench.history import (
    NAMESPACES,
    OPERATOR_NAMESPACE,
    Context,
    Log,
    count_requests,
    lapse_cli,
    list_requests,
    mb,
    signing_key_file,
)
from bench.historyop import HistoryOperator
from bench.measure import Sent, create_request, wait_webhook
from bench.requestwatch import RequestWatch
from bench.syslogd import Rsyslog, make_pki
from lapse.cli.trailinput import read_trail
from lapse.core.trailcheck import compute_entries

# How many ended, delivered requests are weighed for the bytes an ended grant costs.
SAMPLE = 200
# etcd's in-use size at the end may differ from the start by this share.
ETCD_TOLERANCE = 0.05

_SERVERS: list[Rsyslog] = []


def stop_servers() -> None:
    """Stop every rsyslogd this module started (also after a failure or Ctrl-C)."""
    for server in _SERVERS:
        server.stop()


def stored_size(body: dict[str, Any]) -> int:
    """The object as kube-apiserver stores a custom resource in etcd: compact JSON."""
    return len(json.dumps(body, separators=(",", ":")).encode())


def delivered(body: dict[str, Any]) -> bool:
    """Ended, its whole trail delivered to the sink, not yet retired: how it waits out its
    retention (a week by default)."""
    status = body.get("status") or {}
    trail = status.get("trail") or {}
    seq = int(trail.get("seq") or 0)
    covered = trail.get("covered") or {}
    return (
        status.get("phase") == "Expired"
        # The end is in the trail too, not only in the status.
        and int(covered.get("history") or 0) >= len(status.get("history") or [])
        and seq > 0
        and all(int(v) >= seq for v in (trail.get("delivered") or {}).values())
        and bool(trail.get("delivered"))
        and not covered.get("retired")
        and not body["metadata"].get("deletionTimestamp")
    )


class Sampler:
    """Every few seconds, the ended and delivered requests' stored sizes; the first one kept
    whole as part 2's template."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.sizes: dict[str, int] = {}
        self.template: dict[str, Any] | None = None
        self.remaining = -1

    async def run(self, stop: asyncio.Event) -> None:
        kube, log = self.context.kube, self.context.log
        while not stop.is_set():
            try:
                for namespace in NAMESPACES:
                    if len(self.sizes) >= SAMPLE:
                        break
                    for body in await list_requests(kube, namespace):
                        if delivered(body) and len(self.sizes) < SAMPLE:
                            self.sizes[body["metadata"]["uid"]] = stored_size(body)
                            if self.template is None:
                                self.template = body
                                log(f"  template captured: {body['metadata']['name']}")
                self.remaining = await count_requests(kube, NAMESPACES)
            except (OSError, TimeoutError) as error:
                log(f"  sampler: {error}")
            # Every second until the sample is full: with the sink back after a long outage, an
            # owner is delivered and retired within one retention interval.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1 if len(self.sizes) < SAMPLE else 5)


async def outage(
    server: Rsyslog, at: float, down: float, times: dict[str, float], log: Log
) -> None:
    """Stop the server at `at` for `down` seconds, then start it again."""
    await asyncio.sleep(max(0.0, at - time.time()))
    server.stop()
    times["down"] = time.time()
    log(f"  rsyslog stopped for {down:.0f}s")
    await asyncio.sleep(down)
    server.start()
    times["up"] = time.time()
    log("  rsyslog started again (same port, certificates and file)")


async def run(context: Context) -> dict[str, Any]:
    config, kube, log = context.config, context.kube, context.log
    work = context.workdir / "retention"
    pki = make_pki(work / "pki")
    (work / "rsyslog").mkdir(parents=True, exist_ok=True)
    server = Rsyslog(work / "rsyslog", pki)
    _SERVERS.append(server)
    server.start()
    log(f"rsyslog with TLS on 127.0.0.1:{server.port}")
    before = etcd.measure(context.etcd_url) if context.etcd_url else None
    if before:
        log(f"etcd in use at the start: {mb(before.in_use)} ({before.keys} keys)")
    operator = HistoryOperator(
        work / "operator",
        context.kubeconfig,
        OPERATOR_NAMESPACE,
        {
            "LAPSE_RETENTION": config.retention,
            "LAPSE_RETENTION_INTERVAL": config.retention_interval,
            "LAPSE_TRAIL_SYSLOG_ADDRESS": f"127.0.0.1:{server.port}",
            "LAPSE_TRAIL_SYSLOG_CA_FILE": str(pki.ca),
            "LAPSE_TRAIL_RETRY_MAX": config.retry_max,
        },
    )
    watch = RequestWatch(context.credentials, NAMESPACES)
    stop = asyncio.Event()
    sampler = Sampler(context)
    sampling: asyncio.Task[None] | None = None
    times: dict[str, float] = {}
    try:
        operator.start()
        operator.wait_metrics()
        await wait_webhook(kube, operator, NAMESPACES[0], within=120)
        log(f"operator up (pid {operator.pid}), retention {config.retention}")
        watch.start()
        sampling = asyncio.create_task(sampler.run(stop))
        start = time.time() + 0.5
        times["start"] = start
        down = asyncio.create_task(
            outage(server, start + config.sink_down_at, config.sink_down, times, log)
        )
        log(f"{config.n} requests at {config.rate:g}/s, each for {config.duration}")
        sent: list[Sent] = []
        tasks = []
        for i in range(config.n):
            delay = start + i / config.rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            one = Sent((NAMESPACES[i % len(NAMESPACES)], f"hist-{i:05d}"))
            sent.append(one)
            tasks.append(asyncio.create_task(create_request(kube, one, i, config.duration)))
        await asyncio.gather(*tasks)
        times["created"] = time.time()
        failed = [s for s in sent if s.error]
        made = config.n - len(failed)
        log(f"  {made} created ({len(failed)} failed) in {times['created'] - start:.1f}s")
        await down
        deadline = time.monotonic() + config.within
        last = 0.0
        while True:
            operator.check_alive()
            seen, gone = watch.counts()
            if seen >= made and gone >= made:
                break
            if time.monotonic() > deadline:
                log(f"  timed out: {gone}/{made} deleted")
                break
            if time.monotonic() - last > 15:
                last = time.monotonic()
                log(
                    f"  … {gone}/{made} deleted by retention; held "
                    f"{operator.metric('lapse_retention_held'):.0f}, pending records "
                    f"{operator.metric('lapse_trail_pending_records'):.0f}"
                )
            await asyncio.sleep(1)
        times["all_deleted"] = time.time()
        metrics = {
            name: operator.metric(name)
            for name in (
                "lapse_trail_records_total",
                "lapse_trail_delivered_total",
                "lapse_trail_send_failures_total",
                "lapse_retention_deleted_total",
            )
        }
        key_file = signing_key_file(context.kubeconfig, OPERATOR_NAMESPACE, work / "key.b64")
    finally:
        stop.set()
        if sampling is not None:
            await sampling
        watch.stop()
        operator.stop()
        server.stop()
    left = await count_requests(kube, NAMESPACES)
    after = etcd.measure(context.etcd_url) if context.etcd_url else None
    # Lapse's Events (one a transition) stay for kube-apiserver's --event-ttl (an hour):
    # what etcd holds once they have expired is measured with them removed.
    for namespace in NAMESPACES:
        await kube.call("DELETE", f"/api/v1/namespaces/{namespace}/events")
    after_events = etcd.measure(context.etcd_url) if context.etcd_url else None
    if sampler.template is not None:
        context.template_path().write_text(json.dumps(sampler.template, indent=2) + "\n")
    return summarise(
        context,
        server,
        key_file,
        watch,
        sent,
        sampler,
        times,
        metrics,
        (before, after, after_events),
        left,
    )


def summarise(
    context: Context,
    server: Rsyslog,
    key_file: Path,
    watch: RequestWatch,
    sent: list[Sent],
    sampler: Sampler,
    times: dict[str, float],
    metrics: dict[str, float],
    sizes: tuple[etcd.Size | None, etcd.Size | None, etcd.Size | None],
    left: int,
) -> dict[str, Any]:
    log = context.log
    made = sum(1 for s in sent if not s.error)
    seen = watch.snapshot()
    ours = set(seen)
    # Verify, as an auditor would: the plugin, the file, the key.
    code, out, err = lapse_cli(
        "audit", "verify", str(server.received), "--key-file", str(key_file), "-o", "json"
    )
    verdict: dict[str, Any] = json.loads(out) if out.strip() else {"error": err}
    streams: list[dict[str, Any]] = verdict.get("streams", [])
    complete = [s for s in streams if s["verdict"] == "intact-complete" and s["uid"] in ours]
    broken = [s for s in streams if s["verdict"] == "broken"]
    log(f"audit verify: {verdict.get('summary', err.strip())}")
    since = datetime.fromtimestamp(times["start"] - 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rcode, rout, rerr = lapse_cli(
        "audit", "report", "--from", str(server.received), "--since", since, "-o", "json"
    )
    # A JSON array, one row a grant that held access in the period.
    rows = json.loads(rout) if rout.strip() else []
    names = {(s.key[0], s.key[1]) for s in sent if not s.error}
    listed = {
        (str(r.get("namespace")), str(r.get("name")))
        for r in rows
        if (str(r.get("namespace")), str(r.get("name"))) in names
    }
    log(f"audit report --from: {len(rows)} rows, {len(listed)} of the {made} grants")
    # When each stream's records arrived: the first receipt of each seq, the last of those.
    lines = server.lines()
    trail = read_trail([str(server.received)])
    first_at: dict[tuple[str, int], float] = {}
    record_bytes: list[int] = []
    per_stream: dict[str, int] = {}
    for entry in compute_entries(trail.items):
        if entry.uid is None or entry.seq is None or entry.record is None:
            continue
        at = lines[entry.at.line - 1].at
        key = (entry.uid, entry.seq)
        if key not in first_at:
            first_at[key] = at
            record_bytes.append(len(json.dumps(entry.record, separators=(",", ":")).encode()))
            per_stream[entry.uid] = per_stream.get(entry.uid, 0) + 1
        first_at[key] = min(first_at[key], at)
    last_record: dict[str, float] = {}
    for (uid, _), at in first_at.items():
        last_record[uid] = max(last_record.get(uid, 0.0), at)
    margins, early, unseen = [], [], 0
    for uid, request in seen.items():
        leaving = request.leaving
        if leaving is None or uid not in last_record:
            unseen += 1
            continue
        margins.append(leaving - last_record[uid])
        if leaving < last_record[uid]:
            early.append(f"{request.namespace}/{request.name}")
    before, after, after_events = sizes
    ratio = after.in_use / before.in_use if before and after else float("nan")
    ratio_events = after_events.in_use / before.in_use if before and after_events else float("nan")
    object_mean = statistics.fmean(sampler.sizes.values()) if sampler.sizes else float("nan")
    record_mean = statistics.fmean(record_bytes) if record_bytes else float("nan")
    records_per = statistics.fmean(per_stream.values()) if per_stream else float("nan")
    checks = {
        "every request deleted by retention": left == 0 and len(seen) >= made,
        "N complete streams, none broken": len(complete) == made and not broken and code == 0,
        "no request left before its trail arrived": not early and unseen == 0,
        "audit report lists all N": len(listed) == made,
        "etcd in use at the end within 5 %": abs(ratio_events - 1) <= ETCD_TOLERANCE,
    }
    figures: dict[str, Any] = {
        "n": made,
        "failed_creates": len(sent) - made,
        "sink_down_s": round(times.get("up", 0) - times.get("down", 0), 1),
        "sink_down_after_s": round(times.get("down", 0) - times["start"], 1),
        "all_deleted_after_sink_up_s": round(times["all_deleted"] - times.get("up", 0), 1),
        "all_deleted_after_start_s": round(times["all_deleted"] - times["start"], 1),
        "verify": {k: v for k, v in verdict.items() if k != "streams"},
        "verify_exit": code,
        "complete_streams": len(complete),
        "broken_streams": len(broken),
        "report_rows": len(rows),
        "report_grants_of_run": len(listed),
        "report_exit": rcode,
        "report_error": rerr.strip()[-500:],
        "left_before_trail": early[:20],
        "left_before_trail_count": len(early),
        "not_matched": unseen,
        "margin_s": _quantiles(margins),
        "etcd_start": before.to_json() if before else None,
        "etcd_end": after.to_json() if after else None,
        "etcd_end_events_removed": after_events.to_json() if after_events else None,
        "etcd_ratio": round(ratio, 4),
        "etcd_ratio_events_removed": round(ratio_events, 4),
        "object_bytes_mean": round(object_mean) if sampler.sizes else None,
        "object_sample": len(sampler.sizes),
        "record_bytes_mean": round(record_mean),
        "records_per_grant": round(records_per, 2),
        "trail_bytes_per_grant": round(record_mean * records_per),
        "operator_metrics": metrics,
        "checks": checks,
        "passed": all(checks.values()),
    }
    etcd_line = (
        f"{mb(before.in_use)} → {mb(after.in_use)} ({ratio:.3f}); Events removed: "
        f"{mb(after_events.in_use)} ({ratio_events:.3f})"
        if before and after and after_events
        else "not measured"
    )
    figures["table"] = [
        ("grants (N), failed creates", f"{made:,}, {len(sent) - made}"),
        (
            "sink outage",
            f"{figures['sink_down_s']:.0f} s, from {figures['sink_down_after_s']:.0f} s in",
        ),
        (
            "all deleted by retention",
            f"{figures['all_deleted_after_start_s']:.0f} s after the first create, "
            f"{figures['all_deleted_after_sink_up_s']:.0f} s after the sink came back",
        ),
        ("audit verify", verdict.get("summary", err.strip())),
        ("complete / broken streams of the run", f"{len(complete):,} / {len(broken)}"),
        ("audit report --from: grants of the run", f"{len(listed):,} of {made:,}"),
        (
            "left before the last record arrived",
            f"{len(early)} (not matched: {unseen})",
        ),
        (
            "margin: deletion seen - last record received",
            "min / p50 / max " + _margins(figures["margin_s"]),
        ),
        ("etcd in use: start → end (ratio)", etcd_line),
        (
            "an ended grant in etcd (Expired, delivered)",
            f"{object_mean:,.0f} bytes (mean of {len(sampler.sizes)})"
            if sampler.sizes
            else "not sampled (none seen between delivery and retirement)",
        ),
        (
            "its trail in the SIEM",
            f"{records_per:.2f} records x {record_mean:,.0f} bytes = "
            f"{record_mean * records_per:,.0f} bytes",
        ),
        ("checks", ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items())),
    ]
    return figures


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"min": ordered[0], "p50": at(0.5), "p99": at(0.99), "max": ordered[-1]}


def _margins(found: dict[str, float]) -> str:
    return " / ".join(f"{found.get(k, float('nan')):.2f}" for k in ("min", "p50", "max")) + " s"
