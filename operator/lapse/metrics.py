"""Prometheus metrics: the names dashboards and alerts are written against.

Labels are kinds, outcomes and reasons — never users — so cardinality stays bounded however
many people ask for access.
"""

from __future__ import annotations

from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

# `_created` series appear for unlabelled metrics at once and for labelled ones only after
# first use; no alert or panel needs them, so they would only be noise (and drift in the
# metrics contract the deploy tests check).
disable_created_metrics()  # type: ignore[no-untyped-call]

KINDS = ("AccessRequest", "BreakGlass")

requests_total = Counter(
    "lapse_requests_total", "Requests by kind and outcome.", ["kind", "outcome"]
)
active_grants = Gauge("lapse_active_grants", "Grants currently in force.", ["kind"])
grant_latency_seconds = Histogram(
    "lapse_grant_latency_seconds",
    "From the request's admission to its binding's creation.",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
revocation_lag_seconds = Histogram(
    "lapse_revocation_lag_seconds",
    "From expiresAt to the binding's deletion.",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
errors_total = Counter("lapse_errors_total", "Errors by kind.", ["error"])
unadmitted_nudges_total = Counter(
    "lapse_unadmitted_nudges_total",
    "Requests and break-glasses made around the admission webhook that kopf left unhandled, "
    "changed by the leader so that they are handled (lapse.unadmitted).",
)
tamper_total = Counter("lapse_tamper_total", "Answers to tampered bindings.", ["action"])
webhook_quick_total = Counter(
    "lapse_webhook_quick_total",
    "Admission reviews answered before kopf's admission machinery (a caller without a grant, "
    "an update that changes nothing the webhook judges), by webhook.",
    ["hook"],
)
revocations_verified_total = Counter(
    "lapse_revocations_verified_total",
    "Ended grants checked with the API server: AccessGone, HeldElsewhere, AccessRemains.",
    ["result"],
)
revocations_unverified = Gauge(
    "lapse_revocations_unverified",
    "Ended grants whose access the API server still allows through their own bindings.",
)
revocation_checks_waiting = Gauge(
    "lapse_revocation_checks_waiting",
    "Ended grants whose check with the API server has not run yet (they wait while "
    "deadlines are near; none is dropped).",
)
ends_recording = Gauge(
    "lapse_ends_recording",
    "Grants whose bindings are deleted and whose end (status, Event, audit line) is still "
    "being written.",
)
reaper_pressed = Gauge(
    "lapse_reaper_pressed",
    "1 while more binding deletes are due than the reaper has connections (an expiry wave, "
    "start-up's overdue bindings): the records of ends wait, collections are held off.",
)
revocation_checks_deferred_total = Counter(
    "lapse_revocation_checks_deferred_total",
    "Checks of ended grants that waited for a quiet moment before asking the API server.",
)
revocation_reviews_total = Counter(
    "lapse_revocation_reviews_total",
    "SubjectAccessReviews asked to check ended grants (one a place proves an end).",
)
role_drift_total = Counter(
    "lapse_role_drift_total",
    "Changes to a bound role during a grant, by what Lapse did: warned or revoked.",
    ["action"],
)
footholds_total = Counter(
    "lapse_footholds_total",
    "What grantees made under grants: refused, recorded, removed, reported, kept, ended "
    "(a pod connected into, ended with the grant).",
    ["resource", "action"],
)
sweep_removed_total = Counter(
    "lapse_sweep_removed_total", "Bindings the sweep removed, by reason.", ["reason"]
)
scheduled_expiries = Gauge("lapse_scheduled_expiries", "Expiries the scheduler is waiting for.")
pending_requests = Gauge("lapse_pending_requests", "AccessRequests waiting for approval.")
policy_info = Gauge(
    "lapse_policy_info",
    "1 for each AccessPolicy in the operator's policy index: what it judges requests by.",
    ["policy"],
)
policy_exposures = Gauge(
    "lapse_policy_exposures",
    "Ways someone besides administrators can act as a policy's appliers or approvers "
    "(not accepted by the policy).",
    ["policy"],
)
approval_duration_seconds = Histogram(
    "lapse_approval_duration_seconds",
    "From a request's creation to its approval.",
    buckets=(1, 5, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600),
)
decisions_total = Counter(
    "lapse_decisions_total", "Decisions admitted by the webhook, by decision.", ["decision"]
)
notifications_total = Counter(
    "lapse_notifications_total", "Outgoing notifications by event and result.", ["event", "result"]
)
breakglass_active = Gauge("lapse_breakglass_active", "Break-glass grants currently in force.")
webhook_certificate_expiry = Gauge(
    "lapse_webhook_certificate_expiry_timestamp_seconds",
    "When the webhook serving certificate this replica serves ends (Unix time; service mode).",
)
breakglass_unreviewed = Gauge(
    "lapse_breakglass_unreviewed", "Break-glasses past their review deadline without a review."
)
audit_batches_total = Counter(
    "lapse_audit_batches_total",
    "Audit webhook batches from the API server: accepted, refused (unauthenticated).",
    ["result"],
)
audit_events_total = Counter(
    "lapse_audit_events_total",
    "Audit events taken by the sink: matched to a grant, unmatched, unreadable, dropped.",
    ["result"],
)
audit_queue_depth = Gauge("lapse_audit_queue_depth", "Audit events waiting to be folded.")
breakglass_writes_total = Counter(
    "lapse_breakglass_writes_total",
    "Writes (create, update, patch, delete) made under break-glass grants, by resource.",
    ["resource"],
)

for _kind in KINDS:
    active_grants.labels(kind=_kind)


_serving: set[tuple[str, int]] = set()


def serve(addr: str, port: int) -> None:
    """Serve /metrics in a daemon thread; port 0 means no endpoint. Start-up may be retried
    (kopf runs it again after a temporary failure): an endpoint already served stays as it is."""
    if port and (addr, port) not in _serving:
        start_http_server(port, addr=addr)
        _serving.add((addr, port))


scheduled_grants = Gauge(
    "lapse_scheduled_grants", "AccessRequests decided and waiting for their start (or hand-over)."
)
start_lag_seconds = Histogram(
    "lapse_start_lag_seconds",
    "From a scheduled request's startAt (or the end of the grant it extends) to its binding.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
handover_lag_seconds = Histogram(
    "lapse_handover_lag_seconds",
    "From a grant's expiry to its extension bound and its own bindings gone.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
extensions_total = Counter(
    "lapse_extensions_total",
    "Extensions by outcome: scheduled, refused, handed_over, cancelled.",
    ["outcome"],
)

# The audit trail (lapse.exporter) and retention (lapse.retention).
trail_records_total = Counter(
    "lapse_trail_records_total", "Signed records appended to owners' audit trails."
)
trail_delivered_total = Counter(
    "lapse_trail_delivered_total", "Trail records a sink took, by sink.", ["sink"]
)
trail_send_failures_total = Counter(
    "lapse_trail_send_failures_total",
    "Batches a sink did not take, by sink and whether trying again may help.",
    ["sink", "retryable"],
)
trail_sink_up = Gauge(
    "lapse_trail_sink_up", "1 when the sink took the last batch sent to it, else 0.", ["sink"]
)
trail_pending = Gauge(
    "lapse_trail_pending_records", "Trail records waiting for a sink, by sink.", ["sink"]
)
trail_oldest_pending_seconds = Gauge(
    "lapse_trail_oldest_pending_seconds",
    "Age of the oldest trail record a sink has not taken yet, by sink.",
    ["sink"],
)
retention_deleted_total = Counter(
    "lapse_retention_deleted_total", "Ended owners deleted by retention, by kind.", ["kind"]
)
retention_held = Gauge(
    "lapse_retention_held",
    "Ended owners past their retention still kept, by why: undelivered, unreviewed.",
    ["reason"],
)
