"""The sinks the operator's settings name, built once at start-up.

A sink that cannot be built (a certificate file missing, a token file unreadable) stops the
operator with that reason: a trail silently going nowhere would let retention hold every
ended owner forever, or worse, look configured when it is not.
"""

from __future__ import annotations

from lapse.config import ConfigError, Settings
from lapse.sinks.base import Sink
from lapse.sinks.https import HttpsSink
from lapse.sinks.syslog import SyslogSink


def _text(path: object) -> str | None:
    return None if path is None else str(path)


def build_sinks(settings: Settings) -> list[Sink]:
    sinks: list[Sink] = []
    try:
        if (syslog := settings.trail_syslog) is not None:
            sinks.append(
                SyslogSink(
                    name="syslog",
                    host=syslog.host,
                    port=syslog.port,
                    hostname=settings.identity,
                    ca_file=_text(syslog.ca_file),
                    cert_file=_text(syslog.cert_file),
                    key_file=_text(syslog.key_file),
                    server_name=syslog.server_name,
                    max_message=syslog.max_message,
                    timeout=syslog.timeout,
                )
            )
        if (https := settings.trail_https) is not None:
            token = None
            if https.token_file is not None:
                token = https.token_file.read_text().strip()
            sinks.append(
                HttpsSink(
                    name="https",
                    url=https.url,
                    host=settings.identity,
                    token=token,
                    auth_scheme=https.auth_scheme,
                    ca_file=_text(https.ca_file),
                    cert_file=_text(https.cert_file),
                    key_file=_text(https.key_file),
                    index=https.index,
                    timeout=https.timeout,
                )
            )
    except (ValueError, OSError) as error:
        raise ConfigError(f"The audit trail's sink cannot be set up: {error}") from error
    return sinks
