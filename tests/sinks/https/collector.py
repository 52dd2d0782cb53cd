"""A real HTTPS collector (`hec_server.py` in its own process) and its certificates.

The HTTPS sink's tests and the end-to-end trail tests both deliver to it: the authority and the
serving certificate the sink trusts, a second authority it does not, and a client certificate
for mutual TLS, made with `cryptography`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lapse.core.certificates import KeyPair, build_authority, build_serving

SERVER_SCRIPT = Path(__file__).with_name("hec_server.py")
TOKEN = "6b1a8c2e-5f1d-4c43-9a4e-2f8d1e7c0b11"
STARTUP_SECONDS = 15.0


@dataclass(frozen=True)
class Pki:
    """Every PEM file the tests use, by role."""

    ca: Path
    server_cert: Path
    server_key: Path
    other_ca: Path
    client_ca: Path
    client_cert: Path
    client_key: Path


def build_client(authority: KeyPair, name: str, now: datetime) -> KeyPair:
    """A client certificate signed by `authority`: the serving ones carry serverAuth only,
    which a server verifying a client refuses."""
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
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return KeyPair(cert=cert.public_bytes(serialization.Encoding.PEM), key=pem_key)


def build_pki(root: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Pki:
    """Every PEM file a collector and its clients need, written under `root`."""
    now = datetime.now(UTC)
    authority = build_authority(now)
    serving = build_serving(authority, list(hosts), now)
    other = build_authority(now)
    client_authority = build_authority(now)
    client = build_client(client_authority, "lapse-operator", now)
    files = {
        "ca.pem": authority.cert,
        "server.pem": serving.cert,
        "server-key.pem": serving.key,
        "other-ca.pem": other.cert,
        "client-ca.pem": client_authority.cert,
        "client.pem": client.cert,
        "client-key.pem": client.key,
    }
    for name, content in files.items():
        (root / name).write_bytes(content)
    return Pki(
        ca=root / "ca.pem",
        server_cert=root / "server.pem",
        server_key=root / "server-key.pem",
        other_ca=root / "other-ca.pem",
        client_ca=root / "client-ca.pem",
        client_cert=root / "client.pem",
        client_key=root / "client-key.pem",
    )


class HecServer:
    """One `hec_server.py` process and its state directory."""

    def __init__(
        self,
        *,
        pki: Pki,
        state: Path,
        client_ca: Path | None = None,
        listen: str = "127.0.0.1",
        address: str = "127.0.0.1",
    ) -> None:
        # Where it listens, and the address its clients dial (its certificate names both).
        self.listen = listen
        self.address = address
        self.pki = pki
        self.state = state
        self.client_ca = client_ca
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.port}/services/collector/event"

    def start(self) -> None:
        """Start the collector, on the port it had before if it ran already."""
        assert self.process is None
        (self.state / "port").unlink(missing_ok=True)
        command = [
            sys.executable,
            str(SERVER_SCRIPT),
            "--state", str(self.state),
            "--cert", str(self.pki.server_cert),
            "--key", str(self.pki.server_key),
            "--token", TOKEN,
            "--port", str(self.port),
            "--host", self.listen,
        ]  # fmt: skip
        if self.client_ca is not None:
            command += ["--client-ca", str(self.client_ca)]
        with (self.state / "server.log").open("ab") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_SECONDS
        while not (self.state / "port").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.state / "server.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"the HEC stand-in did not start:\n{log}")
            time.sleep(0.02)
        self.port = int((self.state / "port").read_text())

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def reset(self) -> None:
        for name in ("events.jsonl", "requests.jsonl", "control.json"):
            (self.state / name).unlink(missing_ok=True)

    def control(
        self, *, answers: list[dict[str, Any]] | None = None, max_body: int | None = None
    ) -> None:
        """Queue one-shot answers for the next requests and set the body limit (413)."""
        control = {"answers": answers or [], "max_body": max_body}
        scratch = self.state / "control.tmp"
        scratch.write_text(json.dumps(control))
        os.replace(scratch, self.state / "control.json")

    def _read(self, name: str) -> list[dict[str, Any]]:
        path = self.state / name
        if not path.exists():
            return []
        text = path.read_text()
        # Read while the collector writes: a last line without its newline is not whole yet.
        lines = text.split("\n")[:-1]
        return [json.loads(line) for line in lines if line]

    def envelopes(self) -> list[dict[str, Any]]:
        """Every envelope accepted, in the order it arrived."""
        return self._read("events.jsonl")

    def requests(self) -> list[dict[str, Any]]:
        """Every request, with its size, status and how many events it carried."""
        return self._read("requests.jsonl")
