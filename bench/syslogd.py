"""A real syslog server for the history benchmark: Debian's rsyslogd with a TLS listener.

The trail's promise is about a receiver that goes away and comes back: nothing a sink missed
may be lost, and no owner may leave the cluster before its last record arrived. A stand-in
written here would prove only what it was written to accept, so the benchmark runs the server
security teams run. rsyslogd runs in the foreground with a configuration of its own in the
run's directory (no imuxsock, no imklog: it touches nothing of the machine's logging), listens
with TLS (RFC 5425) on 127.0.0.1 with certificates made here, and appends each message to one
file as it came (`%rawmsg%`), prefixed with the moment rsyslog received it
(`%timegenerated%`, microseconds): what `kubectl lapse audit verify` reads, and when each record
arrived. Stopped and started again, it listens on the same port with the same certificates
and appends to the same file.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lapse.core.certificates import build_authority, build_serving

RSYSLOGD = shutil.which("rsyslogd") or next(
    (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if os.path.exists(p)), None
)
# Debian's rsyslog-gnutls.
DRIVER = "gtls"
# Above the sink's default LAPSE_TRAIL_SYSLOG_MAX_MESSAGE (8192) and its header: no record is
# cut by the server (the sink splits longer ones into parts itself).
SERVER_MAX_MESSAGE = 16384
STARTUP = 10.0


@dataclass(frozen=True)
class Pki:
    """The CA the operator's sink trusts, and the server's certificate and key it issued."""

    ca: Path
    server_cert: Path
    server_key: Path


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    authority = build_authority(now)
    server = build_serving(authority, ["localhost", "127.0.0.1"], now)
    files = {"ca.pem": authority.cert, "server.pem": server.cert, "server-key.pem": server.key}
    for name, content in files.items():
        (directory / name).write_bytes(content)
    (directory / "server-key.pem").chmod(0o600)
    return Pki(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Received:
    """One line of the server's file: when rsyslog received it (epoch seconds) and the line."""

    at: float
    line: str


class Rsyslog:
    """One rsyslogd listening with TLS on 127.0.0.1:`port`."""

    def __init__(self, directory: Path, pki: Pki, port: int | None = None) -> None:
        if RSYSLOGD is None:
            raise RuntimeError(
                "rsyslogd is not installed (Debian: apt-get install rsyslog rsyslog-gnutls)"
            )
        self.directory = directory
        self.port = port or free_port()
        self.received = directory / "received.log"
        self.config = directory / "rsyslog.conf"
        self.pidfile = directory / "rsyslogd.pid"
        self.output = directory / "rsyslogd.out"
        self.process: subprocess.Popen[bytes] | None = None
        work = directory / "work"
        work.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"""
global(
  workDirectory="{work}"
  maxMessageSize="{SERVER_MAX_MESSAGE}"
  defaultNetstreamDriver="{DRIVER}"
  defaultNetstreamDriverCAFile="{pki.ca}"
  defaultNetstreamDriverCertFile="{pki.server_cert}"
  defaultNetstreamDriverKeyFile="{pki.server_key}"
)
module(load="imtcp" streamDriver.name="{DRIVER}" streamDriver.mode="1"
       streamDriver.authMode="anon")
template(name="received" type="string"
         string="%timegenerated:::date-rfc3339% %rawmsg%\\n")
ruleset(name="lapse") {{
  action(type="omfile" file="{self.received}" template="received")
}}
input(type="imtcp" port="{self.port}" address="127.0.0.1" ruleset="lapse")
"""
        )

    def start(self) -> None:
        assert RSYSLOGD is not None
        with self.output.open("ab") as out:
            self.process = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", str(self.config), "-i", str(self.pidfile)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + STARTUP
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {self.output.read_text()}")
            try:
                # A plain connect proves the listener is up; rsyslog logs the aborted
                # handshake and goes on.
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"rsyslogd did not listen on {self.port}: {self.output.read_text()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM: rsyslogd writes what it has received and exits; the port closes."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def lines(self) -> list[Received]:
        """Every line received so far, with its receipt time."""
        if not self.received.exists():
            return []
        found = []
        for line in self.received.read_text(encoding="utf-8", errors="replace").splitlines():
            stamp, _, rest = line.partition(" ")
            try:
                at = datetime.fromisoformat(stamp).timestamp()
            except ValueError:
                continue
            found.append(Received(at, rest))
        return found
