"""A failed webhook call in the words of Go's net/http, net and crypto/x509.

kube-apiserver refuses a write whose webhook it could not reach with the transport's own error
(`dial tcp: lookup … no such host`, `connect: connection refused`, `x509: certificate is valid
for …, not …`), and clients, Lapse's users and its tests read those words. The local API calls
webhooks with aiohttp, whose exceptions say the same things differently; this module translates.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp

# OpenSSL's verify results for a certificate that does not name the host dialled.
_HOSTNAME_MISMATCH = 62
_IP_ADDRESS_MISMATCH = 64
_NOT_FOUND = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
_DIAGNOSIS_TIMEOUT = 5.0


@functools.cache
def _nameserver() -> str:
    """Where Go's resolver asks first (it names the server in its errors), from resolv.conf."""
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            host = fields[1].partition("%")[0]
            return f"[{host}]:53" if ":" in host else f"{host}:53"
    return ""


def _lookup_error(host: str, error: OSError) -> str:
    on = f" on {_nameserver()}" if _nameserver() else ""
    if error.errno in _NOT_FOUND:
        why = "no such host"
    elif error.errno == socket.EAI_AGAIN:
        why = "server misbehaving"
    else:
        why = str(error.strerror or error)
    return f"dial tcp: lookup {host}{on}: {why}"


async def describe(
    exc: aiohttp.ClientError, server_name: str, verify_only: ssl.SSLContext | None
) -> str:
    """The transport error as Go prints it. `server_name` is the name the certificate had to
    carry; `verify_only` checks the chain but not the name, to read a mismatching certificate's
    names (Go prints them; OpenSSL does not)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        code = getattr(error, "verify_code", None)
        if code in (_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH) and verify_only is not None:
            names = await _peer_names(exc.host, exc.port or 443, server_name, verify_only)
            if names is not None:
                return f"tls: failed to verify certificate: {_hostname_error(server_name, names)}"
        if code in (_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH):
            return f"tls: failed to verify certificate: x509: {error}"
        return "tls: failed to verify certificate: x509: certificate signed by unknown authority"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return _lookup_error(exc.host, exc.os_error)
    if isinstance(exc, aiohttp.ClientConnectorError):
        address = f"[{exc.host}]:{exc.port}" if ":" in exc.host else f"{exc.host}:{exc.port}"
        if isinstance(exc.os_error, ConnectionRefusedError):
            return f"dial tcp {address}: connect: connection refused"
        return f"dial tcp {address}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "EOF"
    return str(exc)


async def _peer_names(
    host: str, port: int, server_name: str, verify_only: ssl.SSLContext
) -> dict[str, Any] | None:
    """The certificate the peer presents (its chain verified, not its name); nothing is sent."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=verify_only, server_hostname=server_name),
            _DIAGNOSIS_TIMEOUT,
        )
    except (OSError, TimeoutError):
        return None
    try:
        cert = writer.get_extra_info("peercert")
        return dict(cert) if cert else None
    finally:
        writer.close()


def _hostname_error(host: str, cert: dict[str, Any]) -> str:
    """crypto/x509's HostnameError text."""
    sans = list(cert.get("subjectAltName") or ())
    dns = [str(value) for kind, value in sans if kind == "DNS"]
    ips = [
        str(ipaddress.ip_address(str(value).strip()))
        for kind, value in sans
        if kind == "IP Address"
    ]
    common = [
        str(value) for rdn in cert.get("subject") or () for key, value in rdn if key == "commonName"
    ]
    if not sans and host in common:
        return "x509: certificate relies on legacy Common Name field, use SANs instead"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        valid = ", ".join(dns)
    else:
        if not ips:
            return (
                f"x509: cannot validate certificate for {host} because it doesn't contain any "
                "IP SANs"
            )
        valid = ", ".join(ips)
    if not valid:
        return f"x509: certificate is not valid for any names, but wanted to match {host}"
    return f"x509: certificate is valid for {valid}, not {host}"
