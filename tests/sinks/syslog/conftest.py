"""A real rsyslog for the syslog sink's tests: Debian's rsyslogd, run in the foreground with a
configuration of its own in the test's directory.

Each server listens with TLS (RFC 5425) on a free port, with certificates made here, and writes
every message it receives to a file as it came (`%rawmsg%`), one a line, next to a second file
with rsyslog's own reading of the RFC 5424 fields. It loads no module that touches the machine's
logging (no imuxsock, no imklog) and keeps its state in the test's directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lapse.core.certificates import KeyPair, build_authority, build_serving

RSYSLOGD = shutil.which("rsyslogd") or next(
    (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if os.path.exists(p)), None
)
# Debian's rsyslog-gnutls; rsyslog-openssl ("ossl") serves the same tests.
DRIVER = os.environ.get("LAPSE_TEST_RSYSLOG_DRIVER", "gtls")
# rsyslog's own limit on a whole message (header and MSG), set explicitly rather than left to
# its 8k default; the sink's max_message in the tests leaves room for the header.
SERVER_MAX_MESSAGE = 4096
CLIENT_NAME = "lapse-operator"
# The fields rsyslog parsed, separated by a byte no message carries.
FIELDS_SEPARATOR = "\x1f"
STARTUP = 10.0


@dataclass(frozen=True)
class Pki:
    """The files the tests' servers and sinks use."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    # A server certificate for the same names, issued by an authority the sink does not trust.
    rogue_cert: Path
    rogue_key: Path


def build_client(authority: KeyPair, name: str, now: datetime) -> KeyPair:
    """A client certificate (clientAuth) for `name`, signed by `authority`."""
    ca = x509.load_pem_x509_certificate(authority.cert)
    ca_key = serialization.load_pem_private_key(authority.key, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return KeyPair(cert=cert.public_bytes(serialization.Encoding.PEM), key=pem_key)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    now = datetime.now(UTC)
    directory = tmp_path_factory.mktemp("syslog-pki")
    authority = build_authority(now)
    server = build_serving(authority, ["localhost", "127.0.0.1"], now)
    client = build_client(authority, CLIENT_NAME, now)
    rogue = build_serving(build_authority(now), ["localhost", "127.0.0.1"], now)
    files = {
        "ca.pem": authority.cert,
        "server.pem": server.cert,
        "server-key.pem": server.key,
        "client.pem": client.cert,
        "client-key.pem": client.key,
        "rogue.pem": rogue.cert,
        "rogue-key.pem": rogue.key,
    }
    for name, content in files.items():
        (directory / name).write_bytes(content)
    return Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
        rogue_cert=directory / "rogue.pem",
        rogue_key=directory / "rogue-key.pem",
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Rsyslog:
    """One rsyslogd listening on `port`; started and stopped by the test."""

    def __init__(
        self,
        directory: Path,
        *,
        pki: Pki,
        port: int,
        rogue: bool = False,
        require_client_cert: bool = False,
        tls: bool = True,
    ) -> None:
        self.directory = directory
        self.port = port
        self.raw = directory / "received.log"
        self.fields = directory / "fields.log"
        self.config = directory / "rsyslog.conf"
        self.pidfile = directory / "rsyslogd.pid"
        self.output = directory / "rsyslogd.out"
        self.process: subprocess.Popen[bytes] | None = None
        work = directory / "work"
        work.mkdir(exist_ok=True)
        cert, key = (pki.rogue_cert, pki.rogue_key) if rogue else (pki.server_cert, pki.server_key)
        # anon: the server proves itself, asks nothing of the client. x509/name: the client
        # must show a certificate from the CA naming a permitted peer.
        auth = (
            f'streamDriver.authMode="x509/name" permittedPeer=["{CLIENT_NAME}"]'
            if require_client_cert
            else 'streamDriver.authMode="anon"'
        )
        listener = (
            f'module(load="imtcp" streamDriver.name="{DRIVER}" streamDriver.mode="1" {auth})'
            if tls
            else 'module(load="imtcp")'
        )
        self.config.write_text(
            f"""
global(
  workDirectory="{work}"
  maxMessageSize="{SERVER_MAX_MESSAGE}"
  defaultNetstreamDriver="{DRIVER}"
  defaultNetstreamDriverCAFile="{pki.ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}"
)
{listener}
template(name="raw" type="string" string="%rawmsg%\\n")
template(name="fields" type="list") {{
  property(name="pri") constant(value="{FIELDS_SEPARATOR}")
  property(name="protocol-version") constant(value="{FIELDS_SEPARATOR}")
  property(name="timereported" dateFormat="rfc3339") constant(value="{FIELDS_SEPARATOR}")
  property(name="hostname") constant(value="{FIELDS_SEPARATOR}")
  property(name="app-name") constant(value="{FIELDS_SEPARATOR}")
  property(name="procid") constant(value="{FIELDS_SEPARATOR}")
  property(name="msgid") constant(value="{FIELDS_SEPARATOR}")
  property(name="structured-data") constant(value="{FIELDS_SEPARATOR}")
  property(name="msg") constant(value="\\n")
}}
ruleset(name="lapse") {{
  action(type="omfile" file="{self.raw}" template="raw")
  action(type="omfile" file="{self.fields}" template="fields")
}}
input(type="imtcp" port="{port}" address="127.0.0.1" ruleset="lapse")
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

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def lines(self) -> list[str]:
        return self.raw.read_text(encoding="utf-8").splitlines() if self.raw.exists() else []

    def field_lines(self) -> list[list[str]]:
        if not self.fields.exists():
            return []
        text = self.fields.read_text(encoding="utf-8")
        return [line.split(FIELDS_SEPARATOR) for line in text.splitlines()]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[str]:
        """The messages received, once there are at least `count` in both files."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            written = min(len(lines), len(self.field_lines()))
            if written >= count or time.monotonic() > deadline:
                assert written >= count, f"{written} of {count} messages arrived: {lines}"
                return lines
            time.sleep(0.05)


@dataclass
class Servers:
    """Makes rsyslog servers for a test and stops them all at its end."""

    directory: Path
    pki: Pki
    made: list[Rsyslog]

    def make(
        self,
        *,
        port: int | None = None,
        rogue: bool = False,
        require_client_cert: bool = False,
        tls: bool = True,
        start: bool = True,
    ) -> Rsyslog:
        directory = self.directory / f"rsyslog-{len(self.made)}"
        directory.mkdir()
        server = Rsyslog(
            directory,
            pki=self.pki,
            port=port or free_port(),
            rogue=rogue,
            require_client_cert=require_client_cert,
            tls=tls,
        )
        self.made.append(server)
        if start:
            server.start()
        return server


@pytest.fixture
def servers(tmp_path: Path, pki: Pki) -> Iterator[Servers]:
    if RSYSLOGD is None:
        pytest.skip("rsyslogd is not installed (Debian: apt-get install rsyslog rsyslog-gnutls)")
    made = Servers(tmp_path, pki, [])
    try:
        yield made
    finally:
        for server in made.made:
            server.stop()
