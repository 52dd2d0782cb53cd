"""The operator's settings: read once at start-up from `LAPSE_*` environment variables.

One typed object instead of scattered environment reads, so every knob is listed here with its
default, and tests can start the operator with exactly the settings they need.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lapse.core.durations import parse_duration


def _flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _seconds(value: str | None, default: float) -> float:
    """Seconds from `90`, `1.5` or a duration such as `10m`, `720h`."""
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        return parse_duration(value).total_seconds()


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


@dataclass(frozen=True)
class Settings:
    # Where the admission webhook server listens, and the host the API server dials.
    webhook_addr: str = "0.0.0.0"
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 9443
    # A directory with tls.crt, tls.key (and ca.crt), e.g. mounted from cert-manager; when
    # unset, Lapse generates a CA and a serving certificate at start-up.
    webhook_cert_dir: Path | None = None
    # Whether Lapse registers its webhook configurations itself (off when a chart ships them).
    webhook_managed: bool = True
    # The name of the managed Mutating/ValidatingWebhookConfiguration objects.
    webhook_configuration: str = "lapse.dev"
    metrics_addr: str = "0.0.0.0"
    # 0 turns the metrics endpoint off.
    metrics_port: int = 9090
    # kopf's liveness endpoint (e.g. http://0.0.0.0:8080/healthz) for the Deployment's probes;
    # empty serves none, as when running from a terminal.
    liveness_endpoint: str = ""
    sweep_interval: float = 30.0
    # The namespace Lapse runs in; cluster-scoped owners post their Events here.
    namespace: str = "lapse-system"
    # Members of these groups may revoke any grant (`lapse.dev/revoke`).
    admin_groups: frozenset[str] = frozenset({"lapse-admins"})
    # How long a consumed GitOps approval is remembered: a re-created request within this
    # time is not granted again.
    gitops_ledger_retention: float = 30 * 24 * 3600.0
    # The outgoing notification webhook (Slack-compatible); empty sends none.
    notify_url: str = ""
    notify_timeout: float = 5.0
    notify_retries: int = 3
    # How long before an expiry the "expiring soon" notification goes out.
    notify_expiry_warning: float = 600.0
    # Leader election on a coordination.k8s.io Lease in `namespace`: with it, several replicas
    # may run and only the holder of the lease acts (see lapse.leader and docs/ha.md).
    leader_election: bool = False
    lease_name: str = "lapse-leader"
    # Who this replica is in the lease: the pod name in a cluster, host and pid elsewhere.
    identity: str = ""
    lease_duration: float = 15.0
    lease_renew: float = 5.0
    # Test-only: die at this named step (lapse.crashpoints); empty in every real deployment.
    crash_at: str = ""
    # The audit sink (lapse.activity) at `/audit` on the webhook server: the API server's
    # audit webhook authenticates with this bearer token, or with a client certificate
    # signed by `audit_client_ca` (and, if listed, one of `audit_client_names`). Neither set
    # turns the sink off.
    audit_token_file: Path | None = None
    audit_client_ca: Path | None = None
    audit_client_names: frozenset[str] = frozenset()
    # Events waiting to be folded into records; past it they are dropped (and counted).
    audit_queue_size: int = 50_000
    # How often changed activity records are written to the grants' status.
    audit_flush_interval: float = 2.0
    # Events folded per second at most (a share of one core), so grants and revocations
    # never wait behind a flood; what the queue cannot hold past it is dropped and counted.
    audit_max_rate: int = 5000
    # How long after a grant's end its late audit events are still taken.
    audit_grace: float = 120.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        default = cls()
        cert_dir = env.get("LAPSE_WEBHOOK_CERT_DIR", "")
        return cls(
            webhook_addr=env.get("LAPSE_WEBHOOK_ADDR", default.webhook_addr),
            webhook_host=env.get("LAPSE_WEBHOOK_HOST", default.webhook_host),
            webhook_port=int(env.get("LAPSE_WEBHOOK_PORT", default.webhook_port)),
            webhook_cert_dir=Path(cert_dir) if cert_dir else None,
            webhook_managed=_flag(env.get("LAPSE_WEBHOOK_MANAGED", "true")),
            webhook_configuration=env.get(
                "LAPSE_WEBHOOK_CONFIGURATION", default.webhook_configuration
            ),
            metrics_addr=env.get("LAPSE_METRICS_ADDR", default.metrics_addr),
            metrics_port=int(env.get("LAPSE_METRICS_PORT", default.metrics_port)),
            liveness_endpoint=env.get("LAPSE_LIVENESS_ENDPOINT", default.liveness_endpoint),
            sweep_interval=float(env.get("LAPSE_SWEEP_INTERVAL", default.sweep_interval)),
            namespace=env.get("LAPSE_NAMESPACE", default.namespace),
            admin_groups=frozenset(
                g.strip()
                for g in env.get("LAPSE_ADMIN_GROUPS", ",".join(default.admin_groups)).split(",")
                if g.strip()
            ),
            gitops_ledger_retention=_seconds(
                env.get("LAPSE_GITOPS_LEDGER_RETENTION"), default.gitops_ledger_retention
            ),
            notify_url=env.get("LAPSE_NOTIFY_URL", default.notify_url),
            notify_timeout=_seconds(env.get("LAPSE_NOTIFY_TIMEOUT"), default.notify_timeout),
            notify_retries=int(env.get("LAPSE_NOTIFY_RETRIES", default.notify_retries)),
            notify_expiry_warning=_seconds(
                env.get("LAPSE_NOTIFY_EXPIRY_WARNING"), default.notify_expiry_warning
            ),
            leader_election=_flag(env.get("LAPSE_LEADER_ELECTION", "false")),
            lease_name=env.get("LAPSE_LEASE_NAME", default.lease_name),
            identity=env.get("LAPSE_IDENTITY", "")
            or env.get("POD_NAME", "")
            or f"{socket.gethostname()}-{os.getpid()}",
            lease_duration=_seconds(env.get("LAPSE_LEASE_DURATION"), default.lease_duration),
            lease_renew=_seconds(env.get("LAPSE_LEASE_RENEW"), default.lease_renew),
            crash_at=env.get("LAPSE_CRASH_AT", default.crash_at),
            audit_token_file=_path(env.get("LAPSE_AUDIT_TOKEN_FILE")),
            audit_client_ca=_path(env.get("LAPSE_AUDIT_CLIENT_CA")),
            audit_client_names=frozenset(
                n.strip() for n in env.get("LAPSE_AUDIT_CLIENT_NAMES", "").split(",") if n.strip()
            ),
            audit_queue_size=int(env.get("LAPSE_AUDIT_QUEUE_SIZE", default.audit_queue_size)),
            audit_flush_interval=_seconds(
                env.get("LAPSE_AUDIT_FLUSH_INTERVAL"), default.audit_flush_interval
            ),
            audit_grace=_seconds(env.get("LAPSE_AUDIT_GRACE"), default.audit_grace),
            audit_max_rate=int(env.get("LAPSE_AUDIT_MAX_RATE", default.audit_max_rate)),
        )
