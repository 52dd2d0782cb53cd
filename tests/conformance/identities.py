"""Acting as service accounts in the conformance tests, the same way on the local API and on a
real cluster: tokens from `kubectl create token` (TokenRequest), requests that carry nothing but
such a token (and maybe impersonation headers), and what the API server says the caller is.

Everything these tests make on a shared real cluster is named `cf-…` (namespaces, ClusterRoles,
ClusterRoleBindings) and deleted afterwards.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import ssl
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
from kubernetes.client.rest import ApiException

from tests.cluster import Cluster, write_token_kubeconfig
from tests.conformance.conftest import raw, wait_for

PREFIX = "cf-"
EXTRA = "authentication.kubernetes.io/"
CREDENTIAL_ID = EXTRA + "credential-id"
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
PAUSE = "registry.k8s.io/pause:3.10"
SELF_REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


def unique(stem: str) -> str:
    """A fresh `cf-…` name (a DNS label) for one test's namespace or cluster-scoped object."""
    clean = "".join(c if c.isalnum() else "-" for c in stem.lower()).strip("-")[:40].strip("-")
    return f"{PREFIX}{clean}-{secrets.token_hex(3)}"


def make_namespace(cluster: Cluster, stem: str) -> Iterator[str]:
    """A `cf-…` namespace whose `default` ServiceAccount exists (a controller makes it a moment
    after the namespace), deleted afterwards."""
    core = kubernetes.client.CoreV1Api(cluster.api())
    name = unique(stem)
    core.create_namespace({"metadata": {"name": name}})
    try:
        wait_for(lambda: _exists(core.read_namespaced_service_account, "default", name))
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def _exists(read: Any, *args: str) -> bool:
    try:
        read(*args)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


class ClusterObjects:
    """ClusterRoles and ClusterRoleBindings a test makes (named `cf-…`), deleted at its end."""

    def __init__(self, cluster: Cluster) -> None:
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.api())
        self.made: list[tuple[str, str]] = []

    def role(self, rules: list[dict[str, Any]]) -> str:
        name = unique("role")
        self.rbac.create_cluster_role({"metadata": {"name": name}, "rules": rules})
        self.made.append(("role", name))
        return name

    def bind(self, role: str, namespace: str, account: str) -> str:
        """A ClusterRoleBinding of `role` to a ServiceAccount."""
        name = unique("binding")
        self.rbac.create_cluster_role_binding(
            {
                "metadata": {"name": name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
            }
        )
        self.made.append(("binding", name))
        return name

    def remove(self) -> None:
        for kind, name in reversed(self.made):
            delete = (
                self.rbac.delete_cluster_role
                if kind == "role"
                else self.rbac.delete_cluster_role_binding
            )
            try:
                delete(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def bind_in_namespace(
    cluster: Cluster, namespace: str, role: str, account: str, kind: str = "ClusterRole"
) -> None:
    """A RoleBinding of `role` to a ServiceAccount of the namespace."""
    kubernetes.client.RbacAuthorizationV1Api(cluster.api()).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": unique("binding")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    )


def service_account(cluster: Cluster, namespace: str, name: str, **fields: Any) -> dict[str, Any]:
    core = kubernetes.client.CoreV1Api(cluster.api())
    made = core.create_namespaced_service_account(namespace, {"metadata": {"name": name}, **fields})
    plain: dict[str, Any] = cluster.api().sanitize_for_serialization(made)  # type: ignore[no-untyped-call]
    return plain


def create_token(cluster: Cluster, namespace: str, account: str, *flags: str) -> str:
    """`kubectl create token ACCOUNT` with `flags`: the token."""
    made = cluster.kubectl("create", "token", account, "-n", namespace, *flags).stdout.strip()
    assert made.count(".") == 2, made
    return made


def claims(token: str) -> dict[str, Any]:
    """A JWT's claims, read without checking it."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def _context(cluster: Cluster) -> ssl.SSLContext:
    """The cluster's CA and no client certificate: a request carries its token alone."""
    return ssl.create_default_context(cafile=cluster.api().configuration.ssl_ca_cert or None)


def call(
    cluster: Cluster,
    token: str,
    method: str,
    path: str,
    body: Any = None,
    headers: list[tuple[str, str]] | None = None,
) -> tuple[int, Any]:
    """One request with `token` as its only credential: (status, decoded body). Headers may
    repeat (each `Impersonate-Group` is a line of its own, as client-go sends them)."""
    url = urllib.parse.urlsplit(cluster.server)
    connection = http.client.HTTPSConnection(
        url.hostname or "", url.port, context=_context(cluster), timeout=30
    )
    data = b"" if body is None else json.dumps(body).encode()
    try:
        connection.putrequest(method, path)
        connection.putheader("Authorization", f"Bearer {token}")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(data)))
        for key, value in headers or ():
            connection.putheader(key, value)
        connection.endheaders(data)
        response = connection.getresponse()
        status, text = response.status, response.read()
    finally:
        connection.close()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text.decode()


def whoami(
    cluster: Cluster, token: str, headers: list[tuple[str, str]] | None = None
) -> tuple[int, Any]:
    """(status, userInfo or the error Status) of a SelfSubjectReview made with `token`."""
    status, body = call(
        cluster,
        token,
        "POST",
        SELF_REVIEW,
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        headers,
    )
    if status == 201:
        return status, body["status"]["userInfo"]
    return status, body


def wait_unauthorized(cluster: Cluster, token: str, timeout: float = 30) -> None:
    """Until the token no longer authenticates: a real API server caches a token's success
    for about ten seconds."""
    wait_for(lambda: whoami(cluster, token)[0] == 401, timeout=timeout, interval=0.5)


def token_kubeconfig(cluster: Cluster, workdir: Path, token: str, namespace: str) -> Path:
    """A kubeconfig holding `token` alone, for kubectl as that service account."""
    path = workdir / f"{secrets.token_hex(4)}.kubeconfig"
    write_token_kubeconfig(path, cluster.kubeconfig, token, "sa", namespace)
    return path


def node_names(cluster: Cluster) -> list[str]:
    """The cluster's nodes (the local API serves none)."""
    status, body = raw(cluster, "GET", "/api/v1/nodes")
    if status != 200:
        return []
    return [item["metadata"]["name"] for item in body.get("items") or ()]
