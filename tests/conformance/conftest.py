"""Fixtures shared by the local API's conformance tests: a test CRD served for the session.

The CRD belongs to a group of its own so these tests never touch Lapse's resources.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from tests.cluster import Cluster

GROUP = "conformance.lapse.dev"
VERSION = "v1"
PLURAL = "widgets"
CLUSTER_PLURAL = "gadgets"


def widget_crd(plural: str, kind: str, scope: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "plural": plural,
                "singular": kind.lower(),
                "kind": kind,
                "listKind": f"{kind}List",
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


def wait_established(ext: kubernetes.client.ApiextensionsV1Api, name: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition(name)
        conditions = {c.type: c.status for c in (crd.status.conditions or [])}
        if conditions.get("Established") == "True":
            return
        time.sleep(0.1)
    raise AssertionError(f"CRD {name} never became Established")


@pytest.fixture(scope="session")
def widgets(cluster: Cluster) -> Iterator[str]:
    """A namespaced `Widget` and a cluster-scoped `Gadget` kind, both with status."""
    ext = kubernetes.client.ApiextensionsV1Api(cluster.api())
    for plural, kind, scope in (
        (PLURAL, "Widget", "Namespaced"),
        (CLUSTER_PLURAL, "Gadget", "Cluster"),
    ):
        try:
            ext.create_custom_resource_definition(widget_crd(plural, kind, scope))
        except ApiException as exc:
            if exc.status != 409:
                raise
        wait_established(ext, f"{plural}.{GROUP}")
    yield PLURAL


def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.05) -> Any:
    """Poll until predicate() is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(interval)


def admin_tls(cluster: Cluster) -> ssl.SSLContext | None:
    """TLS as the admin's kubeconfig does it: its CA, and its client certificate if it has
    one. A real cluster's admin (kubeadm's admin.conf, say) is usually a certificate, not a
    token; and a request that carries both is the certificate's user."""
    config = cluster.api().configuration
    if not config.ssl_ca_cert and not config.cert_file:
        return None
    context = ssl.create_default_context(cafile=config.ssl_ca_cert or None)
    if config.cert_file:
        context.load_cert_chain(config.cert_file, config.key_file)
    return context


def as_admin(cluster: Cluster, request: urllib.request.Request) -> None:
    """The admin's bearer token on `request`, when the admin has one rather than a
    certificate (which `admin_tls` presents)."""
    token = cluster.api().configuration.auth_settings().get("BearerToken", {}).get("value")
    if token:
        request.add_header("Authorization", token)


def raw(
    cluster: Cluster,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, Any]:
    """One HTTP request with the admin's credentials: (status, decoded JSON body)."""
    context = admin_tls(cluster)
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(cluster.server + path, data=data, method=method)
    as_admin(cluster, request)
    request.add_header("Content-Type", content_type)
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, context=context, timeout=timeout) as response:
            text = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        text = exc.read()
        status = exc.code
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text.decode()


@pytest.fixture
def cf_namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh `cf-…` namespace for one test (the only names these tests make on a shared real
    cluster), with its `default` ServiceAccount; deleted afterwards."""
    from tests.conformance.identities import make_namespace

    yield from make_namespace(cluster, request.node.name)


@pytest.fixture
def cluster_objects(cluster: Cluster) -> Iterator[Any]:
    """The test's `cf-…` ClusterRoles and ClusterRoleBindings, deleted at its end."""
    from tests.conformance.identities import ClusterObjects

    made = ClusterObjects(cluster)
    try:
        yield made
    finally:
        made.remove()
