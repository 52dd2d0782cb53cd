"""The operator's settings: read once at start-up from `LAPSE_*` environment variables.

One typed object instead of scattered environment reads, so every knob is listed here with its
default, and tests can start the operator with exactly the settings they need.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


def _flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


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
        )
