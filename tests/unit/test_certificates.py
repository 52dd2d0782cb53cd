"""Service mode's certificate keeper over years of renewals: at every moment the API server could
look, the certificate in the Secret is signed by an authority both webhook configurations
trust — so no replica ever serves what the API server would refuse — and only the leader
writes.

The real keeper, webhook server and core run against the in-memory API; a clock is passed in.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

import lapse.main  # noqa: F401  (registers the webhook handlers whose configurations are written)
from lapse.certificates import CertificateKeeper, parse_serving
from lapse.config import Settings, WebhookMode
from lapse.registration import KINDS
from lapse.webhooks import build_webhook_server
from tests.unit.memory_kube import MemoryKube

START = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
SETTINGS = Settings(webhook_mode=WebhookMode.SERVICE, namespace="lapse-system")


class WatchedKube(MemoryKube):
    """Checks, after every write, what the API server would then see."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def trusted(self) -> None:
        secret = self.objects.get(("secrets", "lapse-system", SETTINGS.webhook_secret))
        material = parse_serving(secret)
        configurations = [self.objects.get((kind, None, "lapse.dev")) for kind in KINDS.values()]  # type: ignore[call-overload]
        if material is None or None in configurations:
            return
        served = x509.load_pem_x509_certificate(material.cert)
        for configuration in configurations:
            for hook in configuration["webhooks"]:
                bundle = base64.b64decode(hook["clientConfig"]["caBundle"])
                authorities = x509.load_pem_x509_certificates(bundle)
                assert any(
                    served.verify_directly_issued_by(a) is None
                    for a in _issuers(served, authorities)
                )

    async def create_namespaced(
        self, plural: str, namespace: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any]:
        created = await super().create_namespaced(plural, namespace, manifest)
        self.writes += 1
        self.trusted()
        return created

    async def replace_namespaced(
        self, plural: str, namespace: str, name: str, manifest: Mapping[str, Any]
    ) -> dict[str, Any]:
        replaced = await super().replace_namespaced(plural, namespace, name, manifest)
        self.writes += 1
        self.trusted()
        return replaced


def _issuers(
    served: x509.Certificate, authorities: list[x509.Certificate]
) -> list[x509.Certificate]:
    """The bundle's authorities that really signed `served` (verification raises otherwise)."""
    found = []
    for authority in authorities:
        try:
            served.verify_directly_issued_by(authority)
        except (InvalidSignature, ValueError, TypeError):
            continue
        found.append(authority)
    return found


def keeper(kube: MemoryKube, clock: list[datetime], *, leading: bool) -> CertificateKeeper:
    server = build_webhook_server(SETTINGS)
    return CertificateKeeper(
        kube, SETTINGS, server, leading=lambda: leading, clock=lambda: clock[0]
    )


def bundle_of(kube: MemoryKube) -> list[x509.Certificate]:
    configuration = kube.objects[("ValidatingWebhookConfiguration", None, "lapse.dev")]  # type: ignore[index]
    pem = base64.b64decode(configuration["webhooks"][0]["clientConfig"]["caBundle"])
    return x509.load_pem_x509_certificates(pem)


def test_ten_years_of_renewals_never_serve_an_untrusted_certificate() -> None:
    async def scenario() -> None:
        kube = WatchedKube()
        clock = [START]
        leader = keeper(kube, clock, leading=True)
        standby = keeper(kube, clock, leading=False)

        await standby.step()
        assert standby.server.material is None and kube.writes == 0
        await leader.step()
        first = leader.server.material
        assert first is not None and len(bundle_of(kube)) == 1
        # The service's names, as the API server verifies them.
        names = (
            x509.load_pem_x509_certificate(first.cert)
            .extensions.get_extension_for_class(x509.SubjectAlternativeName)
            .value.get_values_for_type(x509.DNSName)
        )
        assert "lapse-webhook.lapse-system.svc" in names
        await standby.step()
        assert standby.server.material == first

        # Nothing is due: nothing is written.
        writes = kube.writes
        clock[0] = START + timedelta(days=30)
        await leader.step()
        assert kube.writes == writes and leader.server.material == first

        # A third of its life before the end, the serving certificate is renewed.
        clock[0] = START + timedelta(days=61)
        await leader.step()
        second = leader.server.material
        assert second is not None and second.cert != first.cert
        assert len(bundle_of(kube)) == 1

        # Two years before the authority ends, a new one joins the bundle, then signs.
        for day in range(61, 365 * 10 + 30, 45):
            clock[0] = START + timedelta(days=day)
            await leader.step()
            await standby.step()
            assert standby.server.material == leader.server.material
            served = x509.load_pem_x509_certificate(leader.server.material.cert)  # type: ignore[union-attr]
            assert served.not_valid_after_utc > clock[0]
        assert len(bundle_of(kube)) == 1  # the first authority has ended and left
        assert bundle_of(kube)[0].not_valid_before_utc > START + timedelta(days=365 * 7)

    asyncio.run(scenario())
