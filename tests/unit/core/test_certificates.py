"""When the webhook certificate and its authority are renewed, and what the bundle trusts."""

from __future__ import annotations

import contextlib
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from lapse.core.certificates import (
    AUTHORITY_RENEW_BEFORE,
    AUTHORITY_VALIDITY,
    SERVING_RENEW_BEFORE,
    SERVING_VALIDITY,
    ServingMaterial,
    build_authority,
    build_bundle,
    build_serving,
    compute_authority_renewal,
    compute_service_hosts,
    compute_serving_renewal,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
HOSTS = compute_service_hosts("lapse-webhook", "lapse-system")


def test_the_service_name_the_api_server_dials_comes_first() -> None:
    assert HOSTS[0] == "lapse-webhook.lapse-system.svc"


def test_a_serving_certificate_is_renewed_a_third_of_its_life_before_its_end() -> None:
    authority = build_authority(NOW)
    pair = build_serving(authority, HOSTS, NOW)
    served = ServingMaterial(cert=pair.cert, key=pair.key, ca=authority.cert)
    assert not compute_serving_renewal(served, authority, HOSTS, NOW)
    almost = NOW + SERVING_VALIDITY - SERVING_RENEW_BEFORE - timedelta(minutes=1)
    assert not compute_serving_renewal(served, authority, HOSTS, almost)
    assert compute_serving_renewal(served, authority, HOSTS, almost + timedelta(minutes=2))


def test_a_serving_certificate_for_other_names_or_another_authority_is_renewed() -> None:
    authority = build_authority(NOW)
    pair = build_serving(authority, ["other.example"], NOW)
    served = ServingMaterial(cert=pair.cert, key=pair.key, ca=authority.cert)
    assert compute_serving_renewal(served, authority, HOSTS, NOW)
    mine = build_serving(authority, HOSTS, NOW)
    served = ServingMaterial(cert=mine.cert, key=mine.key, ca=authority.cert)
    # Same subject name, another key: the newest authority must have signed it.
    assert compute_serving_renewal(served, build_authority(NOW), HOSTS, NOW)
    assert compute_serving_renewal(None, authority, HOSTS, NOW)


def test_an_authority_is_replaced_two_years_before_its_end_and_both_stay_trusted() -> None:
    old = build_authority(NOW)
    assert not compute_authority_renewal([old.cert], NOW)
    late = NOW + AUTHORITY_VALIDITY - AUTHORITY_RENEW_BEFORE + timedelta(days=1)
    assert compute_authority_renewal([old.cert], late)
    new = build_authority(late)
    bundle = build_bundle([new.cert, old.cert], late)
    starts = [c.not_valid_before_utc for c in x509.load_pem_x509_certificates(bundle)]
    assert len(starts) == 2 and starts[0] > starts[1]
    # Once the old one has ended it leaves the bundle.
    after = NOW + AUTHORITY_VALIDITY + timedelta(days=1)
    assert len(x509.load_pem_x509_certificates(build_bundle([new.cert, old.cert], after))) == 1


def test_a_client_trusting_the_bundle_verifies_the_serving_certificate(tmp_path: Path) -> None:
    """What the API server does with caBundle: a TLS handshake verifying the Service's name."""
    old = build_authority(NOW)
    new = build_authority(NOW)
    pair = build_serving(new, HOSTS, NOW)
    bundle = build_bundle([new.cert, old.cert], NOW)
    (tmp_path / "tls.crt").write_bytes(pair.cert)
    (tmp_path / "tls.key").write_bytes(pair.key)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client = ssl.create_default_context(cadata=bundle.decode())
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    back_in, back_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    talking = client.wrap_bio(incoming, outgoing, server_hostname=HOSTS[0])
    answering = server.wrap_bio(back_in, back_out, server_side=True)
    for _ in range(10):
        for side in (talking, answering):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        back_in.write(outgoing.read())
        incoming.write(back_out.read())
    assert talking.getpeercert()["subject"][0][0][1] == HOSTS[0]
