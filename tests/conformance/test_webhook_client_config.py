"""How the API server reaches an admission webhook, for both kinds of `clientConfig`.

kube-apiserver resolves a `url:` with its own host's resolver, never cluster DNS, so a URL naming
a Service (`https://x.ns.svc/...`) cannot be called even when that Service works; a `service:`
it calls on one ready endpoint from the Service's EndpointSlices (aggregator routing, as the
real test cluster runs it), verifying the serving certificate for `<name>.<namespace>.svc`.
Lapse's webhook configurations rely on exactly this, so the local API must do the same and
refuse in the same words.

The webhook is an HTTPS server this test runs, on an address of this machine the API server can
dial: not loopback, which no EndpointSlice may name. Like the other admission tests, this needs
an API server on this machine.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.cluster import Cluster
from tests.conformance.conftest import wait_for
from tests.conformance.test_admission import apply, configuration, webhook

SERVICE = "hook"
PORT_NAME = "https"
PATH = "/validate"
# Only ConfigMaps carrying this label are sent to the webhooks here, so kube-controller-manager
# can still publish `kube-root-ca.crt` into the namespace on a real cluster.
PROBE_LABEL = {"lapse.dev/webhook-probe": "yes"}


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def serving_certificate(dns_name: str) -> tuple[str, ssl.SSLContext]:
    """A new CA (as a webhook's caBundle) and a server context whose certificate, signed by
    it, names `dns_name` only."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("webhook-test-ca"))
        .issuer_name(_name("webhook-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context.load_cert_chain(cert_file, key_file)
    bundle = base64.b64encode(ca.public_bytes(serialization.Encoding.PEM)).decode()
    return bundle, context


def endpoint_address() -> str:
    """This machine's address on its route outwards: one an EndpointSlice may name (both
    kube-apiserver and the local API refuse loopback endpoints) and an API server on this
    machine can dial."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            # UDP connect sends nothing; it only chooses the source address (TEST-NET-1).
            probe.connect(("192.0.2.1", 9))
            address = str(probe.getsockname()[0])
        except OSError:
            address = ""
    if not address or ipaddress.ip_address(address).is_loopback:
        pytest.skip("this machine has no address but loopback for an endpoint")
    return address


class Peer:
    """An HTTPS admission webhook on its own event loop thread that allows everything and
    records what it was sent: the AdmissionReview, the path with its query, the Host."""

    def __init__(self, address: str, context: ssl.SSLContext) -> None:
        self.address = address
        self.context = context
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._review)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address, 0, ssl_context=self.context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _review(self, http: web.Request) -> web.Response:
        review = await http.json()
        self.calls.append((http.path_qs, http.headers.get("Host", ""), review))
        return web.json_response(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": review["request"]["uid"], "allowed": True},
            }
        )

    def saw(self, configmap: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [call for call in self.calls if call[2]["request"].get("name") == configmap]


@pytest.fixture
def configured(cluster: Cluster) -> Iterator[list[tuple[str, str]]]:
    """Webhook configurations to delete after the test: (kind, name)."""
    created: list[tuple[str, str]] = []
    yield created
    for kind, name in created:
        cluster.kubectl("delete", kind, name, "--ignore-not-found")


@pytest.fixture
def peers() -> Iterator[Callable[[str], tuple[str, Peer]]]:
    """Starts webhooks: given the name its certificate carries, (caBundle, running Peer)."""
    started: list[Peer] = []
    address = endpoint_address()

    def start(dns_name: str) -> tuple[str, Peer]:
        bundle, context = serving_certificate(dns_name)
        peer = Peer(address, context)
        peer.start()
        started.append(peer)
        return bundle, peer

    yield start
    for peer in started:
        peer.stop()


def service_dns(namespace: str) -> str:
    return f"{SERVICE}.{namespace}.svc"


def route_service(cluster: Cluster, namespace: str, peer: Peer | None) -> None:
    """A Service without a selector, and (given a peer) the EndpointSlice an operator would
    write by hand for it: one ready endpoint, the peer."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": namespace},
        "spec": {"ports": [{"name": PORT_NAME, "port": 443, "protocol": "TCP"}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(service))
    if peer is None:
        return
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{SERVICE}-1",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": SERVICE},
        },
        "addressType": "IPv4",
        "ports": [{"name": PORT_NAME, "port": peer.port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [peer.address], "conditions": {"ready": True}}],
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(endpoint_slice))


def guard(
    cluster: Cluster, created: list[tuple[str, str]], namespace: str, client: dict[str, Any]
) -> None:
    """A fail-closed validating webhook for this namespace's probe ConfigMaps."""
    hook = webhook(
        "client.lapse.dev",
        "",
        namespace,
        clientConfig=client,
        failurePolicy="Fail",
        objectSelector={"matchLabels": PROBE_LABEL},
    )
    apply(
        cluster,
        created,
        configuration("ValidatingWebhookConfiguration", f"client-{namespace}", hook),
    )


class Probes:
    """Creates labelled ConfigMaps, a new name each time, in one namespace."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.count = 0
        self.last = ""

    def create(self) -> tuple[bool, str]:
        """(created, kubectl's stderr)"""
        self.count += 1
        self.last = f"probe-{self.count}"
        manifest = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": self.last, "namespace": self.namespace, "labels": PROBE_LABEL},
        }
        done = self.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
        return done.returncode == 0, done.stderr.strip()

    def refusal(self, containing: str) -> str:
        """kubectl's error once a write is refused with `containing`; a real API server takes
        a moment to see new webhook configurations, Services and EndpointSlices."""
        seen: list[str] = []

        def refused() -> str:
            created, stderr = self.create()
            seen.append(stderr)
            return "" if created or containing not in stderr else stderr

        try:
            return str(wait_for(refused, timeout=30, interval=0.5))
        except AssertionError:
            raise AssertionError(f"never refused with {containing!r}; last: {seen[-1:]}") from None

    def allowed(self) -> str:
        """The name of the first probe the API server let through."""
        seen: list[str] = []

        def created() -> str:
            ok, stderr = self.create()
            seen.append(stderr)
            return self.last if ok else ""

        try:
            return str(wait_for(created, timeout=30, interval=0.5))
        except AssertionError:
            raise AssertionError(f"never allowed; last refusal: {seen[-1:]}") from None


def refusal_text(namespace: str, why: str, path: str = PATH) -> str:
    """kube-apiserver's refusal of a write whose webhook it could not call on the Service."""
    return (
        'Internal error occurred: failed calling webhook "client.lapse.dev": failed to call '
        f'webhook: Post "https://{service_dns(namespace)}:443{path}?timeout=5s": {why}'
    )


def test_a_url_naming_a_service_is_not_resolved_through_it(
    cluster: Cluster,
    namespace: str,
    peers: Callable[[str], tuple[str, Peer]],
    configured: list[tuple[str, str]],
) -> None:
    """The Service works (the next test calls it), yet its DNS name in a `url:` is looked up
    by the API server's host, which knows nothing of cluster names."""
    bundle, peer = peers(service_dns(namespace))
    route_service(cluster, namespace, peer)
    url = f"https://{service_dns(namespace)}:443{PATH}"
    guard(cluster, configured, namespace, {"url": url, "caBundle": bundle})
    stderr = Probes(cluster, namespace).refusal("failed calling webhook")
    # What follows `lookup <host>` is the resolver's own (` on 10.0.0.53:53: no such host`).
    assert (
        'Internal error occurred: failed calling webhook "client.lapse.dev": failed to call '
        f'webhook: Post "{url}?timeout=5s": dial tcp: lookup {service_dns(namespace)}'
    ) in stderr
    assert peer.calls == []


def test_a_service_is_called_on_its_ready_endpoint(
    cluster: Cluster,
    namespace: str,
    peers: Callable[[str], tuple[str, Peer]],
    configured: list[tuple[str, str]],
) -> None:
    bundle, peer = peers(service_dns(namespace))
    route_service(cluster, namespace, peer)
    service = {"namespace": namespace, "name": SERVICE, "path": PATH, "port": 443}
    guard(cluster, configured, namespace, {"service": service, "caBundle": bundle})
    name = Probes(cluster, namespace).allowed()
    calls = peer.saw(name)
    assert len(calls) == 1
    path, host, review = calls[0]
    # Dialled at the endpoint, addressed (and verified) as the Service.
    assert path == f"{PATH}?timeout=5s"
    assert host == f"{service_dns(namespace)}:443"
    assert review["request"]["operation"] == "CREATE"
    assert review["request"]["namespace"] == namespace


def test_a_service_without_ready_endpoints_refuses_writes(
    cluster: Cluster, namespace: str, configured: list[tuple[str, str]]
) -> None:
    bundle, _ = serving_certificate(service_dns(namespace))
    service = {"namespace": namespace, "name": SERVICE, "path": PATH}
    guard(cluster, configured, namespace, {"service": service, "caBundle": bundle})
    probes = Probes(cluster, namespace)
    missing = probes.refusal("failed calling webhook")
    assert missing.endswith(refusal_text(namespace, f'service "{SERVICE}" not found'))
    route_service(cluster, namespace, None)
    empty = probes.refusal("no endpoints available")
    assert empty.endswith(
        refusal_text(namespace, f'no endpoints available for service "{SERVICE}"')
    )


def test_a_certificate_not_naming_the_service_is_refused(
    cluster: Cluster,
    namespace: str,
    peers: Callable[[str], tuple[str, Peer]],
    configured: list[tuple[str, str]],
) -> None:
    bundle, peer = peers("elsewhere.example")
    route_service(cluster, namespace, peer)
    service = {"namespace": namespace, "name": SERVICE, "path": PATH}
    guard(cluster, configured, namespace, {"service": service, "caBundle": bundle})
    stderr = Probes(cluster, namespace).refusal("x509")
    assert stderr.endswith(
        refusal_text(
            namespace,
            "tls: failed to verify certificate: x509: certificate is valid for "
            f"elsewhere.example, not {service_dns(namespace)}",
        )
    )
    assert peer.calls == []


def test_an_endpoint_may_not_be_loopback(cluster: Cluster, namespace: str) -> None:
    """Why the webhook above listens on a routable address rather than 127.0.0.1."""
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "loopback", "namespace": namespace},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"]}],
    }
    refused = cluster.kubectl("apply", "-f", "-", input=json.dumps(endpoint_slice), check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        'The EndpointSlice "loopback" is invalid: endpoints[0].addresses[0]: Invalid value: '
        '"127.0.0.1": may not be in the loopback range (127.0.0.0/8, ::1/128)'
    )


def test_endpoints_of_a_service_without_selector_are_called_too(
    cluster: Cluster,
    namespace: str,
    peers: Callable[[str], tuple[str, Peer]],
    configured: list[tuple[str, str]],
) -> None:
    """kube-controller-manager mirrors them into an EndpointSlice, which the API server uses."""
    bundle, peer = peers(service_dns(namespace))
    route_service(cluster, namespace, None)
    endpoints = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": SERVICE, "namespace": namespace},
        "subsets": [
            {
                "addresses": [{"ip": peer.address}],
                "ports": [{"name": PORT_NAME, "port": peer.port, "protocol": "TCP"}],
            }
        ],
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(endpoints))
    service = {"namespace": namespace, "name": SERVICE, "path": PATH}
    guard(cluster, configured, namespace, {"service": service, "caBundle": bundle})
    name = Probes(cluster, namespace).allowed()
    assert len(peer.saw(name)) == 1


def test_only_a_ready_endpoint_on_the_service_port_is_called(
    cluster: Cluster,
    namespace: str,
    peers: Callable[[str], tuple[str, Peer]],
    configured: list[tuple[str, str]],
) -> None:
    bundle, peer = peers(service_dns(namespace))
    route_service(cluster, namespace, peer)
    probes = Probes(cluster, namespace)
    # A port the Service does not have.
    service = {"namespace": namespace, "name": SERVICE, "path": PATH, "port": 8443}
    guard(cluster, configured, namespace, {"service": service, "caBundle": bundle})
    wrong_port = probes.refusal("no service port")
    assert wrong_port.endswith(
        f'Post "https://{service_dns(namespace)}:8443{PATH}?timeout=5s": '
        f'no service port 8443 found for service "{SERVICE}"'
    )
    # The endpoint stops being ready.
    service["port"] = 443
    guard(cluster, configured, namespace, {"service": service, "caBundle": bundle})
    not_ready = {"endpoints": [{"addresses": [peer.address], "conditions": {"ready": False}}]}
    cluster.kubectl(
        "patch", "endpointslice", f"{SERVICE}-1", "-n", namespace, "--type=merge",
        "-p", json.dumps(not_ready),
    )  # fmt: skip
    unready = probes.refusal("no endpoints available")
    assert unready.endswith(
        refusal_text(namespace, f'no endpoints available for service "{SERVICE}"')
    )
    # A Service of a type the API server cannot route to.
    outside = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "outside", "namespace": namespace},
        "spec": {"type": "ExternalName", "externalName": "example.com"},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(outside))
    service["name"] = "outside"
    guard(cluster, configured, namespace, {"service": service, "caBundle": bundle})
    external = probes.refusal("unsupported service type")
    assert external.endswith(
        f'Post "https://outside.{namespace}.svc:443{PATH}?timeout=5s": '
        'unsupported service type "ExternalName"'
    )
    assert peer.calls == []
