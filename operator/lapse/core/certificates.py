"""The admission webhooks' certificates: an authority, serving certificates, and when to renew.

The API server calls Lapse's webhooks over TLS and trusts only the CA bundle in the webhook
configurations. Every replica must serve a certificate that bundle trusts, and a renewal must
never leave the API server calling a replica it cannot verify. So the rules here keep three
things apart: the authority (long-lived; a new one joins the bundle before it signs anything),
the bundle (every authority still valid), and the serving certificate (short-lived, renewed well
before it ends, always signed by an authority already in the bundle).

Plain functions over PEM bytes and a clock passed in: no I/O, so every rule is tested with time
as a parameter.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

AUTHORITY_VALIDITY = timedelta(days=3650)
# A new authority is made when the current one has less than this left: the bundle then
# carries both for years, far longer than any replica takes to pick up a new certificate.
AUTHORITY_RENEW_BEFORE = timedelta(days=730)
SERVING_VALIDITY = timedelta(days=90)
# cert-manager's default proportion: renew with a third of the lifetime left.
SERVING_RENEW_BEFORE = timedelta(days=30)
# Clocks differ between the API server and the operator; a certificate valid from "now" may be
# refused by a server a little behind.
BACKDATE = timedelta(minutes=5)
AUTHORITY_NAME = "lapse-webhook-ca"


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert: bytes
    key: bytes


@dataclass(frozen=True)
class ServingMaterial:
    """What a replica serves with, and the bundle that trusts it: the shape of a
    `kubernetes.io/tls` Secret as cert-manager writes it (tls.crt, tls.key, ca.crt)."""

    cert: bytes
    key: bytes
    ca: bytes


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def build_authority(now: datetime) -> KeyPair:
    """A fresh self-signed CA that may sign serving certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, AUTHORITY_NAME)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + AUTHORITY_VALIDITY)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert=cert.public_bytes(serialization.Encoding.PEM), key=_pem_key(key))


def build_serving(
    authority: KeyPair, hosts: list[str], now: datetime, validity: timedelta = SERVING_VALIDITY
) -> KeyPair:
    """A serving certificate for `hosts` (DNS names or IPs), signed by `authority`."""
    ca = x509.load_pem_x509_certificate(authority.cert)
    ca_key = serialization.load_pem_private_key(authority.key, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    names = list(dict.fromkeys(hosts))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + validity, ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_alt_name(h) for h in names]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert=cert.public_bytes(serialization.Encoding.PEM), key=_pem_key(key))


def compute_service_hosts(service: str, namespace: str) -> list[str]:
    """The names the API server may verify a Service's webhook by: it dials
    `<service>.<namespace>.svc` for a `service:` reference."""
    return [
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        f"{service}.{namespace}",
        service,
    ]


def parse_bundle(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; none for empty or unreadable input."""
    try:
        return list(x509.load_pem_x509_certificates(pem)) if pem.strip() else []
    except ValueError:
        return []


def build_bundle(authorities: list[bytes], now: datetime) -> bytes:
    """The CA bundle the API server trusts: every authority still valid, newest first."""
    certs = [c for pem in authorities for c in parse_bundle(pem) if c.not_valid_after_utc > now]
    certs.sort(key=lambda c: c.not_valid_before_utc, reverse=True)
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def compute_authority_renewal(authorities: list[bytes], now: datetime) -> bool:
    """Whether a new authority must be made: none exists, or the newest ends soon."""
    certs = [c for pem in authorities for c in parse_bundle(pem)]
    if not certs:
        return True
    newest = max(certs, key=lambda c: c.not_valid_after_utc)
    return newest.not_valid_after_utc - now < AUTHORITY_RENEW_BEFORE


def newest_authority(authorities: list[KeyPair]) -> KeyPair | None:
    dated = [(x509.load_pem_x509_certificate(a.cert).not_valid_before_utc, a) for a in authorities]
    return max(dated, key=lambda pair: pair[0])[1] if dated else None


def compute_serving_renewal(
    serving: ServingMaterial | None, issuer: KeyPair, hosts: list[str], now: datetime
) -> bool:
    """Whether the serving certificate must be issued again by `issuer`."""
    if serving is None:
        return True
    certs = parse_bundle(serving.cert)
    if not certs:
        return True
    cert = certs[0]
    if cert.not_valid_after_utc - now < SERVING_RENEW_BEFORE or cert.not_valid_before_utc > now:
        return True
    if cert.issuer != x509.load_pem_x509_certificate(issuer.cert).subject:
        return True
    try:
        issued_by = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        issuer_key = x509.SubjectKeyIdentifier.from_public_key(
            x509.load_pem_x509_certificate(issuer.cert).public_key()
        )
    except x509.ExtensionNotFound:
        return True
    if issued_by.key_identifier != issuer_key.digest:
        return True
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return True
    return not set(hosts) <= {str(n.value) for n in names}


def compute_served_until(serving: ServingMaterial) -> datetime | None:
    certs = parse_bundle(serving.cert)
    return certs[0].not_valid_after_utc if certs else None
