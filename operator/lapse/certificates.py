"""Service mode's certificate: one serving certificate for every replica, and one writer of trust.

Each replica making its own CA and writing it into the webhook configurations means the last
writer wins and the API server refuses every other replica. So here:

- the serving certificate lives in one `kubernetes.io/tls` Secret (tls.crt, tls.key, ca.crt —
  cert-manager's shape); every replica reads it (at start-up every second until it exists, then
  every `LAPSE_WEBHOOK_CHECK_INTERVAL`) and swaps it into its server in place;
- only the leader writes: it keeps Lapse's authority in a second Secret, writes the webhook
  configurations with the bundle of every valid authority, and only then issues a serving
  certificate from the newest — so no replica ever serves a certificate the API server does
  not yet trust, and renewal (a third of the lifetime before the end) fails no admission;
- with `LAPSE_WEBHOOK_CERTIFICATE=cert-manager`, cert-manager writes the Secret and its
  cainjector the bundle; Lapse writes no CA anywhere and keeps the bundle the injector set.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from lapse import metrics
from lapse.config import CertificateIssuer, Settings
from lapse.core.certificates import (
    KeyPair,
    ServingMaterial,
    build_authority,
    build_bundle,
    build_serving,
    compute_authority_renewal,
    compute_served_until,
    compute_service_hosts,
    compute_serving_renewal,
)
from lapse.kube import ApiError, ConflictError, KubeApi
from lapse.registration import KINDS, compute_configuration
from lapse.webhooks import WebhookServer

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# How often a replica that serves nothing yet looks for the Secret.
WAITING_INTERVAL = 1.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _field(secret: Mapping[str, Any] | None, key: str) -> bytes:
    data = (secret or {}).get("data") or {}
    value = data.get(key)
    return base64.b64decode(value) if isinstance(value, str) else b""


def parse_serving(secret: Mapping[str, Any] | None) -> ServingMaterial | None:
    cert, key = _field(secret, "tls.crt"), _field(secret, "tls.key")
    if not cert or not key:
        return None
    return ServingMaterial(cert=cert, key=key, ca=_field(secret, "ca.crt") or cert)


def _secret(
    name: str, namespace: str, data: Mapping[str, bytes], live: Mapping[str, Any] | None
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {"app.kubernetes.io/name": "lapse", "app.kubernetes.io/component": "webhook"},
    }
    if live is not None:
        metadata["resourceVersion"] = live["metadata"]["resourceVersion"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": metadata,
        "data": {k: base64.b64encode(v).decode("ascii") for k, v in data.items()},
    }


class CertificateKeeper:
    def __init__(
        self,
        kube: KubeApi,
        settings: Settings,
        server: WebhookServer,
        leading: Callable[[], bool],
        clock: Clock = _utcnow,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.server = server
        self.leading = leading
        self.clock = clock
        self.namespace = settings.namespace
        self.hosts = compute_service_hosts(settings.webhook_service, settings.namespace)
        self.issuing = settings.webhook_certificate is CertificateIssuer.LAPSE
        self._waiting_logged = False

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as error:
                logger.warning("Could not check the webhook certificate: %s", error)
            serving = self.server.material is not None
            await asyncio.sleep(
                self.settings.webhook_check_interval if serving else WAITING_INTERVAL
            )

    async def step(self) -> None:
        """One round: the leader makes what is missing or ending; every replica serves what the
        Secret holds."""
        secret = await self.kube.get_namespaced(
            "secrets", self.namespace, self.settings.webhook_secret
        )
        if self.leading():
            secret = await self.lead(secret)
        material = parse_serving(secret)
        if material is None:
            if not self._waiting_logged:
                logger.info(
                    "Waiting for the webhook certificate in Secret %s/%s%s.",
                    self.namespace,
                    self.settings.webhook_secret,
                    "" if self.issuing else " (issued by cert-manager)",
                )
                self._waiting_logged = True
            return
        if material != self.server.material:
            self.server.install(material)
            until = compute_served_until(material)
            if until is not None:
                metrics.webhook_certificate_expiry.set(until.timestamp())
            logger.info(
                "Serving the webhook certificate from Secret %s/%s (valid until %s).",
                self.namespace,
                self.settings.webhook_secret,
                until.isoformat() if until else "unknown",
            )

    async def lead(self, serving: dict[str, Any] | None) -> dict[str, Any] | None:
        """Authority first, then the configurations that trust it, then the certificate it
        signs: each step only once the one before it is written."""
        now = self.clock()
        if not self.issuing:
            await self.register(None)
            return serving
        issuer, bundle = await self.ensure_authority(now)
        await self.register(bundle)
        current = parse_serving(serving)
        renew = compute_serving_renewal(current, issuer, self.hosts, now)
        if current is not None and not renew and current.ca == bundle:
            return serving
        if current is None or renew:
            pair = build_serving(issuer, self.hosts, now)
            logger.info("Issued a webhook serving certificate for %s.", self.hosts[0])
        else:
            # Only the bundle changed (an authority joined or ended): same certificate.
            pair = KeyPair(cert=current.cert, key=current.key)
        data = {"tls.crt": pair.cert, "tls.key": pair.key, "ca.crt": bundle}
        manifest = _secret(self.settings.webhook_secret, self.namespace, data, serving)
        try:
            if serving is None:
                return await self.kube.create_namespaced("secrets", self.namespace, manifest)
            return await self.kube.replace_namespaced(
                "secrets", self.namespace, self.settings.webhook_secret, manifest
            )
        except ConflictError:
            # Written meanwhile (a leader before this one): read again next round.
            return await self.kube.get_namespaced(
                "secrets", self.namespace, self.settings.webhook_secret
            )

    async def ensure_authority(self, now: datetime) -> tuple[KeyPair, bytes]:
        """The authority that signs (the newest) and the bundle of every valid one."""
        name = self.settings.webhook_ca_secret
        live = await self.kube.get_namespaced("secrets", self.namespace, name)
        current = KeyPair(cert=_field(live, "tls.crt"), key=_field(live, "tls.key"))
        known = _field(live, "ca.crt") or current.cert
        if current.cert and current.key and not compute_authority_renewal([current.cert], now):
            return current, build_bundle([known], now)
        fresh = build_authority(now)
        bundle = build_bundle([fresh.cert, known], now)
        data = {"tls.crt": fresh.cert, "tls.key": fresh.key, "ca.crt": bundle}
        manifest = _secret(name, self.namespace, data, live)
        try:
            if live is None:
                await self.kube.create_namespaced("secrets", self.namespace, manifest)
            else:
                await self.kube.replace_namespaced("secrets", self.namespace, name, manifest)
        except ConflictError:
            return await self.ensure_authority(now)
        logger.info(
            "Made a new webhook certificate authority (Secret %s/%s).", self.namespace, name
        )
        return fresh, bundle

    async def register(self, bundle: bytes | None) -> None:
        """Both webhook configurations as they should be: created when missing, replaced when
        they say anything else (an edit is put back within a check interval)."""
        for reason, kind in KINDS.items():
            name = self.settings.webhook_configuration
            live = await self.kube.get_webhook_configuration(kind, name)
            wanted = compute_configuration(self.settings, reason, live, bundle)
            if wanted is None:
                continue
            try:
                if live is None:
                    await self.kube.create_webhook_configuration(kind, wanted)
                else:
                    await self.kube.replace_webhook_configuration(kind, name, wanted)
            except ConflictError:
                continue
            logger.info(
                "Wrote the %s %s (Service %s/%s).",
                kind,
                name,
                self.namespace,
                self.settings.webhook_service,
            )
