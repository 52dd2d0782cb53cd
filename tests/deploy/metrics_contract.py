"""The metric names Lapse's alerts and dashboard may use: the contract with the operator.

The PrometheusRule and the Grafana dashboard are checked against this list, and a test of the
running operator compares it with the live `/metrics`, so an alert can never watch a metric
that nobody exports.
"""

from __future__ import annotations

import re

COUNTERS = frozenset(
    {
        "lapse_requests_total",
        "lapse_errors_total",
        # The audit sink (lapse.activity).
        "lapse_audit_batches_total",
        "lapse_audit_events_total",
        "lapse_breakglass_writes_total",
        "lapse_tamper_total",
        "lapse_unadmitted_nudges_total",
        "lapse_webhook_quick_total",
        "lapse_footholds_total",
        "lapse_revocations_verified_total",
        # Checks of ended grants: reviews asked, and checks that waited for a quiet moment.
        "lapse_revocation_reviews_total",
        "lapse_revocation_checks_deferred_total",
        "lapse_role_drift_total",
        "lapse_sweep_removed_total",
        "lapse_decisions_total",
        "lapse_notifications_total",
        "lapse_extensions_total",
        # The audit trail (lapse.exporter) and retention.
        "lapse_trail_records_total",
        "lapse_trail_delivered_total",
        "lapse_trail_send_failures_total",
        "lapse_retention_deleted_total",
    }
)
GAUGES = frozenset(
    {
        "lapse_active_grants",
        "lapse_audit_queue_depth",
        "lapse_scheduled_expiries",
        "lapse_pending_requests",
        "lapse_policy_exposures",
        "lapse_policy_info",
        "lapse_breakglass_active",
        "lapse_breakglass_unreviewed",
        "lapse_revocations_unverified",
        "lapse_revocation_checks_waiting",
        "lapse_ends_recording",
        "lapse_reaper_pressed",
        "lapse_scheduled_grants",
        "lapse_webhook_certificate_expiry_timestamp_seconds",
        "lapse_trail_sink_up",
        "lapse_trail_pending_records",
        "lapse_trail_oldest_pending_seconds",
        "lapse_retention_held",
    }
)
HISTOGRAMS = frozenset(
    {
        "lapse_grant_latency_seconds",
        "lapse_revocation_lag_seconds",
        "lapse_approval_duration_seconds",
        "lapse_start_lag_seconds",
        "lapse_handover_lag_seconds",
    }
)

#: Every metric family the operator exports, by its family name.
METRICS = COUNTERS | GAUGES | HISTOGRAMS

#: The series names a query may write: histograms expose _bucket, _sum and _count series.
SERIES = (
    COUNTERS
    | GAUGES
    | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)

_NAME = re.compile(r"\blapse_[a-z_]+\b")


def referenced(expression: str) -> set[str]:
    """The `lapse_*` series names a PromQL expression mentions."""
    return set(_NAME.findall(expression))
