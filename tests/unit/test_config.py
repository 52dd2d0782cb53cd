"""A setting that cannot work stops `lapse-operator` with one line saying which and why."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lapse.config import CertificateIssuer, ConfigError, Settings, WebhookMode


def start(**env: str) -> subprocess.CompletedProcess[str]:
    """`lapse-operator` as a Deployment would start it, with `env` on top of a clean one."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LAPSE_", "KUBERNETES_"))}
    return subprocess.run(
        [sys.executable, "-m", "lapse.main"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "said"),
    [
        (
            {"LAPSE_WEBHOOK_HOST": "lapse-webhook.lapse-system.svc", "LAPSE_WEBHOOK_MODE": "url"},
            "LAPSE_WEBHOOK_HOST=lapse-webhook.lapse-system.svc names a Service",
        ),
        ({"LAPSE_WEBHOOK_MODE": "ingress"}, "LAPSE_WEBHOOK_MODE must be 'url' or 'service'"),
        (
            {"LAPSE_WEBHOOK_CERTIFICATE": "vault"},
            "LAPSE_WEBHOOK_CERTIFICATE must be 'lapse' or 'cert-manager'",
        ),
        (
            {"LAPSE_WEBHOOK_PORT": "tcp://10.96.82.28:443"},
            "set enableServiceLinks: false in the pod",
        ),
    ],
)
def test_a_setting_that_cannot_work_is_one_line_and_a_stop(env: dict[str, str], said: str) -> None:
    result = start(**env)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("lapse-operator: error: ")
    assert said in line


def test_the_mode_follows_where_lapse_runs() -> None:
    assert Settings.from_env({}).webhook_mode is WebhookMode.URL
    in_pod = Settings.from_env({"KUBERNETES_SERVICE_HOST": "10.96.0.1"})
    assert in_pod.webhook_mode is WebhookMode.SERVICE
    assert in_pod.webhook_certificate is CertificateIssuer.LAPSE
    assert in_pod.webhook_service == "lapse-webhook" and in_pod.webhook_service_port == 443
    chosen = Settings.from_env(
        {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "LAPSE_WEBHOOK_MODE": "url"}
    )
    assert chosen.webhook_mode is WebhookMode.URL


@pytest.mark.parametrize("value", ["lapse", "t-uninstall-3103bc", "Lapse.Dev", ".dev"])
def test_a_webhook_configuration_name_without_a_dot_stops_with_one_line(value: str) -> None:
    # Webhooks are named <id>.<configuration>: the API server wants three labels.
    with pytest.raises(ConfigError, match="LAPSE_WEBHOOK_CONFIGURATION must be a domain"):
        Settings.from_env({"LAPSE_WEBHOOK_CONFIGURATION": value})


def test_the_trail_sinks_and_retention_are_read_once_with_clear_errors() -> None:
    settings = Settings.from_env(
        {
            "LAPSE_RETENTION": "36h",
            "LAPSE_TRAIL_SYSLOG_ADDRESS": "siem.example.com:6514",
            "LAPSE_TRAIL_HTTPS_URL": "https://hec.example.com:8088/services/collector/event",
            "LAPSE_TRAIL_HTTPS_TOKEN_FILE": "/etc/lapse/trail/https-token/token",
        }
    )
    assert settings.retention == 36 * 3600
    assert settings.trail_sinks == ("syslog", "https")
    assert settings.trail_syslog is not None and settings.trail_syslog.port == 6514
    assert Settings.from_env({}).trail_sinks == ()
    assert Settings.from_env({}).retention == 7 * 24 * 3600
    assert Settings.from_env({"LAPSE_RETENTION": "0"}).retention == 0
    with pytest.raises(ConfigError, match="host:port"):
        Settings.from_env({"LAPSE_TRAIL_SYSLOG_ADDRESS": "siem.example.com"})
    # The trail never goes in the clear.
    with pytest.raises(ConfigError, match="https://"):
        Settings.from_env({"LAPSE_TRAIL_HTTPS_URL": "http://hec.example.com/collector"})
