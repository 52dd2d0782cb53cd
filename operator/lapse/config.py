"""The operator's settings: read once at start-up from `LAPSE_*` environment variables.

One typed object instead of scattered environment reads, so every knob is listed here with its
default, and tests can start the operator with exactly the settings they need.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

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


class ConfigError(ValueError):
    """A setting that cannot work: said in one line at start-up, and the operator stops."""


class WebhookMode(Enum):
    # The API server dials https://LAPSE_WEBHOOK_HOST:PORT: an operator run from a terminal.
    URL = "url"
    # The API server dials the webhook Service, resolved to the replicas' endpoints by itself:
    # an operator in pods, however the cluster's control plane is run.
    SERVICE = "service"


class CertificateIssuer(Enum):
    # Lapse makes the authority and the serving certificate into Secrets and writes caBundle.
    LAPSE = "lapse"
    # cert-manager writes the serving Secret and its cainjector the caBundle; Lapse only serves.
    CERT_MANAGER = "cert-manager"


def _choice(enum: type[Enum], name: str, value: str) -> Any:
    try:
        return enum(value.strip().lower())
    except ValueError:
        allowed = " or ".join(repr(m.value) for m in enum)
        raise ConfigError(f"{name} must be {allowed}, not {value!r}.") from None


def _configuration_name(value: str) -> str:
    """The webhook configurations' name: each webhook is named `<id>.<name>`, which the API
    server accepts only as a domain of three labels or more, so the name needs a dot."""
    if "." not in value.strip(".") or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", value):
        raise ConfigError(
            f"LAPSE_WEBHOOK_CONFIGURATION must be a domain such as lapse.dev (the webhooks are "
            f"named <id>.<it>), not {value!r}."
        )
    return value


def _number(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "")
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        # The kubelet's service links name a Service `lapse-webhook` LAPSE_WEBHOOK_PORT=tcp://…
        # in every pod of its namespace that does not turn them off.
        hint = (
            " (a Service's link variable: set enableServiceLinks: false in the pod)"
            if value.startswith(("tcp://", "udp://"))
            else ""
        )
        raise ConfigError(f"{name} must be a whole number, not {value!r}{hint}.") from None


def in_a_pod(env: Mapping[str, str]) -> bool:
    """The kubelet gives every container the API server's Service address."""
    return bool(env.get("KUBERNETES_SERVICE_HOST"))


def _is_service_name(host: str) -> bool:
    return host.endswith((".svc", ".svc.cluster.local")) or ".svc." in host


@dataclass(frozen=True)
class SyslogSettings:
    """The syslog sink: RFC 5424 over TCP with TLS (RFC 5425), certificates verified."""

    host: str
    port: int
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    max_message: int = 8192
    timeout: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SyslogSettings | None:
        address = env.get("LAPSE_TRAIL_SYSLOG_ADDRESS", "").strip()
        if not address:
            return None
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"LAPSE_TRAIL_SYSLOG_ADDRESS must be host:port, not {address!r}.")
        return cls(
            host=host.strip("[]"),
            port=int(port),
            ca_file=_path(env.get("LAPSE_TRAIL_SYSLOG_CA_FILE")),
            cert_file=_path(env.get("LAPSE_TRAIL_SYSLOG_CERT_FILE")),
            key_file=_path(env.get("LAPSE_TRAIL_SYSLOG_KEY_FILE")),
            server_name=env.get("LAPSE_TRAIL_SYSLOG_SERVER_NAME") or None,
            max_message=_number(env, "LAPSE_TRAIL_SYSLOG_MAX_MESSAGE", cls.max_message),
            timeout=_seconds(env.get("LAPSE_TRAIL_SYSLOG_TIMEOUT"), cls.timeout),
        )


@dataclass(frozen=True)
class HttpsSettings:
    """The HTTPS sink: JSON batches in Splunk HEC's shape, certificates verified."""

    url: str
    token_file: Path | None = None
    auth_scheme: str = "Splunk"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    index: str | None = None
    timeout: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HttpsSettings | None:
        url = env.get("LAPSE_TRAIL_HTTPS_URL", "").strip()
        if not url:
            return None
        if not url.startswith("https://"):
            raise ConfigError(
                f"LAPSE_TRAIL_HTTPS_URL must be an https:// URL (the trail is never sent in "
                f"the clear), not {url!r}."
            )
        return cls(
            url=url,
            token_file=_path(env.get("LAPSE_TRAIL_HTTPS_TOKEN_FILE")),
            auth_scheme=env.get("LAPSE_TRAIL_HTTPS_AUTH_SCHEME", cls.auth_scheme),
            ca_file=_path(env.get("LAPSE_TRAIL_HTTPS_CA_FILE")),
            cert_file=_path(env.get("LAPSE_TRAIL_HTTPS_CERT_FILE")),
            key_file=_path(env.get("LAPSE_TRAIL_HTTPS_KEY_FILE")),
            index=env.get("LAPSE_TRAIL_HTTPS_INDEX") or None,
            timeout=_seconds(env.get("LAPSE_TRAIL_HTTPS_TIMEOUT"), cls.timeout),
        )


@dataclass(frozen=True)
class Settings:
    # How the API server reaches the webhooks: by URL (a terminal) or through the Service
    # (in a pod; the default there).
    webhook_mode: WebhookMode = WebhookMode.URL
    # Where the admission webhook server listens, and the host the API server dials (url mode).
    webhook_addr: str = "0.0.0.0"
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 9443
    # url mode: a directory with tls.crt, tls.key (and ca.crt); when unset, Lapse generates a
    # CA and a serving certificate at start-up.
    webhook_cert_dir: Path | None = None
    # service mode: the Service in `namespace` the API server dials, and its port.
    webhook_service: str = "lapse-webhook"
    webhook_service_port: int = 443
    # service mode: who issues the serving certificate, the Secret (kubernetes.io/tls, with
    # ca.crt) every replica serves from, and the Secret of Lapse's own authority.
    webhook_certificate: CertificateIssuer = CertificateIssuer.LAPSE
    webhook_secret: str = "lapse-webhook-tls"
    webhook_ca_secret: str = "lapse-webhook-ca"
    # How often a replica reads the Secret (a renewal reaches every replica within this), and
    # the leader checks the certificate and the webhook configurations.
    webhook_check_interval: float = 30.0
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
    # The Deployment running these replicas, in `namespace`: when it (or the namespace) goes
    # away, a stopping replica ends every grant (lapse.uninstall). Service mode names
    # `lapse-operator` unless told otherwise; empty (a terminal) checks nothing.
    deployment: str = ""
    # How long a stopping replica may spend ending grants at an uninstall; the pod's
    # terminationGracePeriodSeconds must cover it and the preStop sleep.
    uninstall_timeout: float = 40.0
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

    # Ended requests and break-glasses are deleted this long after they end (0 keeps them):
    # long enough for the people who look back at a grant in the cluster (a week of on-call,
    # a weekend's sink outage caught up), short enough that etcd holds weeks, not years.
    # An unreviewed break-glass is kept until reviewed; nothing goes before every sink has it.
    retention: float = 7 * 24 * 3600.0
    # How often the leader looks for ended objects past their retention.
    retention_interval: float = 60.0
    # The audit trail's sinks (lapse.exporter): syslog over TLS (host:port) and HTTPS JSON
    # batches (a Splunk HEC-shaped endpoint). Neither set: no trail is written.
    trail_syslog: SyslogSettings | None = None
    trail_https: HttpsSettings | None = None
    # A sink that fails is tried again after 1 s, doubling up to this.
    trail_retry_max: float = 60.0

    @property
    def trail_sinks(self) -> tuple[str, ...]:
        """The configured sinks' names, the keys of each owner's `status.trail.delivered`."""
        names = []
        if self.trail_syslog is not None:
            names.append("syslog")
        if self.trail_https is not None:
            names.append("https")
        return tuple(names)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        default = cls()
        cert_dir = env.get("LAPSE_WEBHOOK_CERT_DIR", "")
        mode_name = env.get("LAPSE_WEBHOOK_MODE", "") or ("service" if in_a_pod(env) else "url")
        mode: WebhookMode = _choice(WebhookMode, "LAPSE_WEBHOOK_MODE", mode_name)
        host = env.get("LAPSE_WEBHOOK_HOST", default.webhook_host)
        if mode is WebhookMode.URL and _is_service_name(host):
            raise ConfigError(
                f"LAPSE_WEBHOOK_HOST={host} names a Service, and the API server resolves webhook "
                "URLs with its own resolver, not the cluster's DNS: in a pod use "
                "LAPSE_WEBHOOK_MODE=service (the default there), which calls the Service "
                "LAPSE_WEBHOOK_SERVICE."
            )
        if mode is WebhookMode.SERVICE and (env.get("LAPSE_WEBHOOK_HOST") or cert_dir):
            print(
                "lapse-operator: warning: LAPSE_WEBHOOK_HOST and LAPSE_WEBHOOK_CERT_DIR are for "
                "url mode and ignored in service mode (the Service LAPSE_WEBHOOK_SERVICE is "
                "called, with the certificate in Secret LAPSE_WEBHOOK_SECRET).",
                file=sys.stderr,
            )
        return cls(
            webhook_mode=mode,
            webhook_service=env.get("LAPSE_WEBHOOK_SERVICE", default.webhook_service),
            webhook_service_port=_number(
                env, "LAPSE_WEBHOOK_SERVICE_PORT", default.webhook_service_port
            ),
            webhook_certificate=_choice(
                CertificateIssuer,
                "LAPSE_WEBHOOK_CERTIFICATE",
                env.get("LAPSE_WEBHOOK_CERTIFICATE", default.webhook_certificate.value),
            ),
            webhook_secret=env.get("LAPSE_WEBHOOK_SECRET", default.webhook_secret),
            webhook_ca_secret=env.get("LAPSE_WEBHOOK_CA_SECRET", default.webhook_ca_secret),
            webhook_check_interval=_seconds(
                env.get("LAPSE_WEBHOOK_CHECK_INTERVAL"), default.webhook_check_interval
            ),
            webhook_addr=env.get("LAPSE_WEBHOOK_ADDR", default.webhook_addr),
            webhook_host=host,
            webhook_port=_number(env, "LAPSE_WEBHOOK_PORT", default.webhook_port),
            webhook_cert_dir=Path(cert_dir) if cert_dir else None,
            webhook_managed=_flag(env.get("LAPSE_WEBHOOK_MANAGED", "true")),
            webhook_configuration=_configuration_name(
                env.get("LAPSE_WEBHOOK_CONFIGURATION", default.webhook_configuration)
            ),
            metrics_addr=env.get("LAPSE_METRICS_ADDR", default.metrics_addr),
            metrics_port=_number(env, "LAPSE_METRICS_PORT", default.metrics_port),
            liveness_endpoint=env.get("LAPSE_LIVENESS_ENDPOINT", default.liveness_endpoint),
            sweep_interval=float(env.get("LAPSE_SWEEP_INTERVAL", default.sweep_interval)),
            namespace=env.get("LAPSE_NAMESPACE", default.namespace),
            deployment=env.get("LAPSE_DEPLOYMENT", "")
            or ("lapse-operator" if mode is WebhookMode.SERVICE else ""),
            uninstall_timeout=_seconds(
                env.get("LAPSE_UNINSTALL_TIMEOUT"), default.uninstall_timeout
            ),
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
            notify_retries=_number(env, "LAPSE_NOTIFY_RETRIES", default.notify_retries),
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
            audit_queue_size=_number(env, "LAPSE_AUDIT_QUEUE_SIZE", default.audit_queue_size),
            audit_flush_interval=_seconds(
                env.get("LAPSE_AUDIT_FLUSH_INTERVAL"), default.audit_flush_interval
            ),
            audit_grace=_seconds(env.get("LAPSE_AUDIT_GRACE"), default.audit_grace),
            audit_max_rate=_number(env, "LAPSE_AUDIT_MAX_RATE", default.audit_max_rate),
            retention=_seconds(env.get("LAPSE_RETENTION"), default.retention),
            retention_interval=_seconds(
                env.get("LAPSE_RETENTION_INTERVAL"), default.retention_interval
            ),
            trail_syslog=SyslogSettings.from_env(env),
            trail_https=HttpsSettings.from_env(env),
            trail_retry_max=_seconds(env.get("LAPSE_TRAIL_RETRY_MAX"), default.trail_retry_max),
        )
