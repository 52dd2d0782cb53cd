"""The admission webhook server: its TLS certificate and kopf's server settings.

kopf's own self-signed certificate needs oscrypto, which fails on OpenSSL 3, so Lapse makes a
CA and a serving certificate with `cryptography` at start-up — or uses the files a certificate
manager mounted in `LAPSE_WEBHOOK_CERT_DIR`. The CA goes into the webhook configuration's
caBundle, so the API server verifies the operator it calls. The same server takes the API
server's audit webhook batches at `/audit` (see `lapse.activity`).
"""

from __future__ import annotations

import ipaddress
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp.web
import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lapse.config import Settings

CERT_VALIDITY = timedelta(days=365)


@dataclass(frozen=True)
class CertificatePaths:
    ca: Path
    cert: Path
    key: Path


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def generate_certificates(directory: Path, hosts: list[str], now: datetime) -> CertificatePaths:
    """A fresh CA and a serving certificate for `hosts`, written to `directory`."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lapse-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([_alt_name(h) for h in dict.fromkeys(hosts)]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = CertificatePaths(
        ca=directory / "ca.crt", cert=directory / "tls.crt", key=directory / "tls.key"
    )
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths.key.chmod(0o600)
    return paths


def ensure_certificates(settings: Settings, now: datetime) -> CertificatePaths:
    """The mounted certificate if there is one, else a freshly generated one."""
    directory = settings.webhook_cert_dir
    if directory is not None and (directory / "tls.crt").exists():
        ca = directory / "ca.crt"
        return CertificatePaths(
            ca=ca if ca.exists() else directory / "tls.crt",
            cert=directory / "tls.crt",
            key=directory / "tls.key",
        )
    target = directory or Path(tempfile.mkdtemp(prefix="lapse-webhook-"))
    hosts = [settings.webhook_host, "localhost", "127.0.0.1"]
    return generate_certificates(target, hosts, now)


@dataclass(frozen=True)
class AdmissionTarget:
    """What an admission request names in its own fields: kopf hands handlers the object, and a
    TokenRequest or an exec's options say nothing of the ServiceAccount or pod they are for."""

    name: str
    namespace: str | None


_TARGET: ContextVar[AdmissionTarget | None] = ContextVar("lapse_admission_target", default=None)


def admission_target() -> AdmissionTarget | None:
    """The name and namespace of the admission request being answered, if any."""
    return _TARGET.get()


# The path of the audit sink on the webhook server: the API server's audit webhook posts there.
AUDIT_PATH = "audit"
# The audit sink's door: (headers, the client certificate, a way to read the body) → the answer.
AuditReceiver = Callable[
    [Mapping[str, str], Any, Callable[[], Awaitable[bytes]]], Awaitable[Mapping[str, Any]]
]


class WebhookServer(kopf.WebhookServer):
    """kopf's webhook server, noting each request's name and namespace for its handlers, and
    serving the audit sink at `/audit` beside the admission webhooks (kopf routes every POST
    path to its webhooks by id; `audit` is no handler's id). The sink's requests are taken
    before kopf reads them, so a caller is refused, or a full queue answered, before the
    body is parsed."""

    def __init__(self, *args: Any, audit: AuditReceiver | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.audit = audit

    async def _serve(self, fn: Any, request: aiohttp.web.Request) -> aiohttp.web.Response:  # type: ignore[override]
        if request.match_info.get("id") != AUDIT_PATH:
            return await super()._serve(fn, request)
        if self.audit is None:
            raise aiohttp.web.HTTPNotFound()
        transport = request.transport
        peercert = transport.get_extra_info("peercert") if transport else None
        answer = await self.audit(request.headers, peercert, request.read)
        return aiohttp.web.json_response(dict(answer))

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async def noting(request: Any, **kwargs: Any) -> Any:
            review = (request or {}).get("request") or {}
            target = AdmissionTarget(str(review.get("name") or ""), review.get("namespace") or None)
            token = _TARGET.set(target)
            try:
                return await fn(request, **kwargs)
            finally:
                _TARGET.reset(token)

        async for config in super().__call__(noting):
            yield config


def build_webhook_server(
    settings: Settings, audit: AuditReceiver | None = None
) -> kopf.WebhookServer:
    paths = ensure_certificates(settings, datetime.now(UTC))
    # A client certificate is asked for (never required: admission callers send none) only
    # when the audit sink trusts one.
    client_ca = settings.audit_client_ca
    return WebhookServer(
        addr=settings.webhook_addr,
        port=settings.webhook_port,
        host=settings.webhook_host,
        certfile=str(paths.cert),
        pkeyfile=str(paths.key),
        cafile=str(paths.ca),
        verify_mode=ssl.CERT_OPTIONAL if client_ca else None,
        verify_cafile=str(client_ca) if client_ca else None,
        audit=audit,
    )
