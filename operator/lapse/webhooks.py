"""The admission webhook server: its TLS, its client configuration, and kopf's server settings.

kopf's own self-signed certificate needs oscrypto, which fails on OpenSSL 3, so Lapse makes its
certificates with `cryptography` (`lapse.core.certificates`). Two ways to be called:

- **url** (a terminal, `make run`): the API server dials `https://LAPSE_WEBHOOK_HOST:PORT`;
  the certificate is made at start-up (or read from `LAPSE_WEBHOOK_CERT_DIR`) and kopf writes
  the webhook configurations with its CA.
- **service** (in a pod): the API server dials the webhook Service, which it resolves to the
  replicas' endpoints itself; every replica serves the one certificate kept in a Secret
  (`lapse.certificates`), swapped in place when it changes — one SSL context for the life of
  the process, so a renewal never closes the port.

`/readyz` answers only once a certificate is served: the readiness probe calls it over HTTPS,
so a replica joins the Service only when the API server could talk to it. The same server
takes the API server's audit webhook batches at `/audit` (see `lapse.activity`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web
import kopf

from lapse import metrics
from lapse.config import Settings, WebhookMode
from lapse.core.certificates import ServingMaterial, build_authority, build_serving

logger = logging.getLogger(__name__)

READY_PATH = "/readyz"
# After the operator is told to stop, how long the port keeps answering, each answer closing
# its connection: the API server keeps connections to a replica open between calls, and one
# closed under a call it is sending fails that admission (Go does not send a POST again).
DRAIN_SECONDS = 3.0


@dataclass(frozen=True)
class CertificatePaths:
    ca: Path
    cert: Path
    key: Path


def generate_certificates(directory: Path, hosts: list[str], now: datetime) -> CertificatePaths:
    """A fresh CA and a serving certificate for `hosts`, written to `directory`."""
    authority = build_authority(now)
    serving = build_serving(authority, hosts, now)
    directory.mkdir(parents=True, exist_ok=True)
    paths = CertificatePaths(
        ca=directory / "ca.crt", cert=directory / "tls.crt", key=directory / "tls.key"
    )
    paths.ca.write_bytes(authority.cert)
    paths.cert.write_bytes(serving.cert)
    paths.key.write_bytes(serving.key)
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


def read_material(paths: CertificatePaths) -> ServingMaterial:
    return ServingMaterial(
        cert=paths.cert.read_bytes(), key=paths.key.read_bytes(), ca=paths.ca.read_bytes()
    )


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
# Allows an admission review at once (True) or leaves it to kopf's handlers (False): called
# with the webhook's id and the review, before kopf sees it.
QuickAllow = Callable[[str, Mapping[str, Any]], bool]
# The audit sink's door: (headers, the client certificate, a way to read the body) → the answer.
AuditReceiver = Callable[
    [Mapping[str, str], Any, Callable[[], Awaitable[bytes]]], Awaitable[Mapping[str, Any]]
]


class WebhookServer(kopf.WebhookServer):
    """kopf's webhook server, serving from one SSL context whose certificate can be swapped
    in place (`install`), noting each request's name and namespace for its handlers, and
    serving the audit sink at `/audit` beside the admission webhooks (kopf routes every POST
    path to its webhooks by id; `audit` is no handler's id). The sink's requests are taken
    before kopf reads them, so a caller is refused, or a full queue answered, before the
    body is parsed."""

    def __init__(
        self,
        *,
        context: ssl.SSLContext,
        audit: AuditReceiver | None = None,
        service: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(context=context, **kwargs)
        self.audit = audit
        # The Service the API server dials in service mode (clientConfig.service), else None.
        self.service = dict(service) if service else None
        self._material: ServingMaterial | None = None
        self._installed = asyncio.Event()
        self._draining = False
        self._keydir = Path(tempfile.mkdtemp(prefix="lapse-serving-"))
        # Set once what it answers from is loaded (lapse.handlers.handle_footholds).
        self.quick: QuickAllow | None = None

    @property
    def material(self) -> ServingMaterial | None:
        """What is served now, if anything."""
        return self._material

    def install(self, material: ServingMaterial) -> None:
        """Serve `material` from the next TLS handshake on; connections open stay as they are.
        OpenSSL reads a key pair from files only, so it passes through a private directory."""
        if material == self._material:
            return
        assert self.context is not None
        cert, key = self._keydir / "tls.crt", self._keydir / "tls.key"
        key.touch(mode=0o600)
        key.write_bytes(material.key)
        cert.write_bytes(material.cert)
        try:
            self.context.load_cert_chain(cert, key)
        finally:
            key.unlink()
        self._material = material
        self._installed.set()

    async def _serve(self, fn: Any, request: aiohttp.web.Request) -> aiohttp.web.Response:  # type: ignore[override]
        response = await self._answer(fn, request)
        if self._draining:
            response.force_close()
        return response

    async def _answer(self, fn: Any, request: aiohttp.web.Request) -> aiohttp.web.Response:
        hook = str(request.match_info.get("id") or "")
        if hook != AUDIT_PATH:
            quick = self.quick
            if quick is not None:
                # The foothold webhook sees every pod, Secret, token and binding created in
                # the cluster, nearly all by callers without a grant: answered here, those
                # cost a JSON parse, not kopf's whole admission machinery (a copy and a diff
                # of the object among it), which took half the operator's CPU at 50 grants/s.
                review = await _review(request)
                if review is not None and quick(hook, review):
                    metrics.webhook_quick_total.labels(hook=hook).inc()
                    return aiohttp.web.json_response(build_allowed(review))
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

        async def serve(request: aiohttp.web.Request) -> aiohttp.web.Response:
            return await self._serve(noting, request)

        async def ready(_: aiohttp.web.Request) -> aiohttp.web.Response:
            if self._draining:
                raise aiohttp.web.HTTPServiceUnavailable(reason="stopping")
            return aiohttp.web.json_response({"serving": True})

        # Nothing listens before a certificate exists: a probe or an API server that reached
        # the port would only meet a handshake failure.
        await self._installed.wait()
        app = aiohttp.web.Application()
        app.add_routes([aiohttp.web.get(READY_PATH, ready), aiohttp.web.post("/{id:.*}", serve)])
        runner = aiohttp.web.AppRunner(app, handle_signals=False)
        await runner.setup()
        try:
            port = self.port or self._allocate_free_port()
            site = aiohttp.web.TCPSite(
                runner, self.addr or None, port, ssl_context=self.context, reuse_address=True
            )
            await site.start()
            logger.info("Serving admission webhooks on %s:%s.", self.addr or "*", port)
            # kopf writes this into the webhook configurations it manages (url mode only).
            config: dict[str, Any] = (
                {"service": dict(self.service)}
                if self.service
                else {"url": self._build_url("https", self.host or "127.0.0.1", port, "")}
            )
            assert self._material is not None
            config["caBundle"] = base64.b64encode(self._material.ca).decode("ascii")
            yield config
            await asyncio.Event().wait()
        finally:
            self._draining = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(DRAIN_SECONDS)
            await runner.cleanup()


async def _review(request: aiohttp.web.Request) -> Mapping[str, Any] | None:
    """The AdmissionReview posted, or None if it is not one (kopf then answers as it does).
    The body is kept by aiohttp: kopf reads the same bytes again."""
    try:
        review = json.loads(await request.read())
    except ValueError:
        return None
    return review if isinstance(review, dict) else None


def build_allowed(review: Mapping[str, Any]) -> dict[str, Any]:
    """The answer that lets the request through, as kopf would build it."""
    return {
        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": review.get("kind", "AdmissionReview"),
        "response": {"uid": (review.get("request") or {}).get("uid", ""), "allowed": True},
    }


def build_context(settings: Settings) -> ssl.SSLContext:
    """The server's SSL context: a client certificate is asked for (never required: admission
    callers send none) only when the audit sink trusts one."""
    context = ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH)
    if settings.audit_client_ca:
        context.load_verify_locations(cafile=str(settings.audit_client_ca))
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def build_webhook_server(settings: Settings, audit: AuditReceiver | None = None) -> WebhookServer:
    """The server; in url mode it serves a certificate made (or read) now, in service mode the
    one `lapse.certificates` installs from the Secret."""
    service = None
    if settings.webhook_mode is WebhookMode.SERVICE:
        service = {
            "namespace": settings.namespace,
            "name": settings.webhook_service,
            "port": settings.webhook_service_port,
        }
    server = WebhookServer(
        addr=settings.webhook_addr,
        port=settings.webhook_port,
        host=settings.webhook_host,
        context=build_context(settings),
        audit=audit,
        service=service,
    )
    if service is None:
        server.install(read_material(ensure_certificates(settings, datetime.now(UTC))))
    return server
