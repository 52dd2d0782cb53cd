"""Admission webhooks through the local API with real kubectl: the API server calls an HTTPS
webhook (served by the test, certificate from a generated CA) with AdmissionReview v1, as it
calls Lapse's kopf webhooks."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from kubeapi import tls
from lapse.core.admission import build_relevant_update_condition
from lapse.core.kinds import FINALIZER
from tests.cluster import Cluster

CERTS = tls.generate()
CA_BUNDLE = base64.b64encode(CERTS.ca_pem).decode()


class WebhookPeer:
    """An HTTPS webhook on its own event loop thread: `/stamp` labels ConfigMaps with the
    requester's name, `/guard` refuses ConfigMaps labelled `forbidden: "yes"`."""

    def __init__(self) -> None:
        self.reviews: list[dict[str, Any]] = []
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
        app.router.add_post("/stamp", self._stamp)
        app.router.add_post("/guard", self._guard)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=CERTS.server_context())
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @staticmethod
    def _answer(request: dict[str, Any], **response: Any) -> web.Response:
        return web.json_response(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": request["uid"], "allowed": True, **response},
            }
        )

    async def _stamp(self, http: web.Request) -> web.Response:
        review = await http.json()
        self.reviews.append(review)
        request = review["request"]
        labels = (request["object"].get("metadata") or {}).get("labels")
        ops: list[dict[str, Any]] = []
        if labels is None:
            ops.append({"op": "add", "path": "/metadata/labels", "value": {}})
        user = request["userInfo"]["username"].replace(":", ".")
        ops.append({"op": "add", "path": "/metadata/labels/requested-by", "value": user})
        patch = base64.b64encode(json.dumps(ops).encode()).decode()
        return self._answer(request, patchType="JSONPatch", patch=patch)

    async def _guard(self, http: web.Request) -> web.Response:
        review = await http.json()
        self.reviews.append(review)
        request = review["request"]
        labels = (request["object"].get("metadata") or {}).get("labels") or {}
        if labels.get("forbidden") == "yes":
            return self._answer(
                request,
                allowed=False,
                status={"code": 403, "message": "ConfigMaps labelled forbidden are refused"},
            )
        return self._answer(request)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def peer() -> Iterator[WebhookPeer]:
    server = WebhookPeer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def webhook(name: str, url: str, namespace: str, **overrides: Any) -> dict[str, Any]:
    hook: dict[str, Any] = {
        "name": name,
        "clientConfig": {"url": url, "caBundle": CA_BUNDLE},
        "rules": [
            {
                "operations": ["CREATE", "UPDATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["configmaps"],
                "scope": "Namespaced",
            }
        ],
        # Only this test's namespace: the session's other tests never meet these webhooks.
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 5,
    }
    hook.update(overrides)
    return hook


def configuration(kind: str, name: str, *hooks: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": list(hooks),
    }


@pytest.fixture
def configured(cluster: Cluster) -> Iterator[list[tuple[str, str]]]:
    """Webhook configurations to delete after the test: (kind, name)."""
    created: list[tuple[str, str]] = []
    yield created
    for kind, name in created:
        cluster.kubectl("delete", kind, name, "--ignore-not-found")


def apply(cluster: Cluster, created: list[tuple[str, str]], obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
    created.append((obj["kind"].lower(), obj["metadata"]["name"]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_mutating_webhook_stamps_the_requester(
    cluster: Cluster, namespace: str, peer: WebhookPeer, configured: list[tuple[str, str]]
) -> None:
    apply(
        cluster,
        configured,
        configuration(
            "MutatingWebhookConfiguration",
            f"stamp-{namespace}",
            webhook("stamp.lapse.dev", peer.url("/stamp"), namespace),
        ),
    )
    cluster.kubectl(
        "create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice", "-n", namespace
    )
    cluster.kubectl(
        "create", "configmap", "from-alice", "--from-literal=a=1", "-n", namespace, as_user="alice"
    )
    labels = json.loads(
        cluster.kubectl("get", "configmap", "from-alice", "-n", namespace, "-o", "json").stdout
    )["metadata"]["labels"]
    assert labels == {"requested-by": "alice"}
    request = peer.reviews[-1]["request"]
    assert request["userInfo"]["username"] == "alice"
    assert "system:authenticated" in request["userInfo"]["groups"]
    assert request["operation"] == "CREATE"
    assert request["namespace"] == namespace
    assert request["dryRun"] is False
    # Updates carry the old object; a server-side dry run says so.
    cluster.kubectl(
        "label", "configmap", "from-alice", "extra=1", "--dry-run=server", "-n", namespace
    )
    update = peer.reviews[-1]["request"]
    assert update["operation"] == "UPDATE"
    assert update["dryRun"] is True
    assert update["oldObject"]["metadata"]["name"] == "from-alice"
    # Other namespaces are not selected.
    before = len(peer.reviews)
    cluster.kubectl("create", "configmap", f"elsewhere-{namespace}", "-n", "default")
    cluster.kubectl("delete", "configmap", f"elsewhere-{namespace}", "-n", "default")
    assert len(peer.reviews) == before


def test_validating_webhook_denial_is_shown_by_kubectl(
    cluster: Cluster, namespace: str, peer: WebhookPeer, configured: list[tuple[str, str]]
) -> None:
    apply(
        cluster,
        configured,
        configuration(
            "ValidatingWebhookConfiguration",
            f"guard-{namespace}",
            webhook("guard.lapse.dev", peer.url("/guard"), namespace, failurePolicy="Fail"),
        ),
    )
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "bad", "namespace": namespace, "labels": {"forbidden": "yes"}},
    }
    result = cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert result.returncode == 1
    assert (
        'admission webhook "guard.lapse.dev" denied the request: ConfigMaps labelled forbidden '
        "are refused"
    ) in result.stderr
    cluster.kubectl("create", "configmap", "good", "-n", namespace)


def test_failure_policy_when_the_webhook_is_down(
    cluster: Cluster, namespace: str, configured: list[tuple[str, str]]
) -> None:
    down = f"https://127.0.0.1:{free_port()}/guard"
    apply(
        cluster,
        configured,
        configuration(
            "ValidatingWebhookConfiguration",
            f"down-{namespace}",
            webhook("down.lapse.dev", down, namespace, failurePolicy="Fail"),
        ),
    )
    failed = cluster.kubectl("create", "configmap", "a", "-n", namespace, check=False)
    assert failed.returncode == 1
    address = down.split("/")[2]
    assert failed.stderr.strip().endswith(
        'Internal error occurred: failed calling webhook "down.lapse.dev": failed to call '
        f'webhook: Post "{down}?timeout=5s": dial tcp {address}: connect: connection refused'
    )
    ignore = configuration(
        "ValidatingWebhookConfiguration",
        f"down-{namespace}",
        webhook("down.lapse.dev", down, namespace, failurePolicy="Ignore"),
    )
    cluster.kubectl("apply", "-f", "-", input=json.dumps(ignore))
    cluster.kubectl("create", "configmap", "a", "-n", namespace)


def test_match_conditions_decide_whether_the_webhook_is_called(
    cluster: Cluster, namespace: str, configured: list[tuple[str, str]]
) -> None:
    """Lapse's own condition for its UPDATE webhooks (called only for an update they judge),
    in front of a webhook that is down and fails closed: whatever is refused was sent to it."""
    cluster.kubectl("create", "configmap", "judged", "-n", namespace)
    cluster.kubectl(
        "annotate", "configmap", "judged", "lapse.dev/decisions=x", "other=1", "-n", namespace
    )
    finalizer = json.dumps({"metadata": {"finalizers": [FINALIZER]}})
    cluster.kubectl(
        "patch", "configmap", "judged", "--type=merge", "-p", finalizer, "-n", namespace
    )
    down = f"https://127.0.0.1:{free_port()}/guard"
    condition = {"name": "judged", "expression": build_relevant_update_condition()}
    hook = webhook("judged.lapse.dev", down, namespace, failurePolicy="Fail")
    hook["matchConditions"] = [condition]
    apply(cluster, configured, configuration("ValidatingWebhookConfiguration", namespace, hook))

    def sent(*args: str) -> bool:
        result = cluster.kubectl(*args, "-n", namespace, check=False)
        if result.returncode == 0:
            return False
        assert 'failed calling webhook "judged.lapse.dev"' in result.stderr
        return True

    assert sent("create", "configmap", "another")
    assert not sent("label", "configmap", "judged", "x=1")
    assert not sent("annotate", "configmap", "judged", "other=2", "--overwrite")
    assert not sent("patch", "configmap", "judged", "--type=merge", "-p", '{"data":{"k":"v"}}')
    two = json.dumps({"metadata": {"finalizers": [FINALIZER, "other.dev/g"]}})
    assert not sent("patch", "configmap", "judged", "--type=merge", "-p", two)
    assert sent("annotate", "configmap", "judged", "lapse.dev/decisions=y", "--overwrite")
    assert sent("annotate", "configmap", "judged", "lapse.dev/decisions-")
    assert sent("annotate", "configmap", "judged", "lapse.dev/approve=yes")
    one = '{"metadata":{"finalizers":["other.dev/g"]}}'
    assert sent("patch", "configmap", "judged", "--type=merge", "-p", one)
    assert not sent("patch", "configmap", "judged", "--type=merge", "-p", finalizer)
    # A condition that cannot be evaluated fails closed, and open under Ignore.
    broken = {"name": "broken", "expression": "object.metadata.labels['absent'] == 'x'"}
    for policy, refused in (("Fail", True), ("Ignore", False)):
        hook = webhook("judged.lapse.dev", down, namespace, failurePolicy=policy)
        hook["matchConditions"] = [broken]
        apply(cluster, configured, configuration("ValidatingWebhookConfiguration", namespace, hook))
        result = cluster.kubectl(
            "label", "configmap", "judged", f"y={policy}", "-n", namespace, check=False
        )
        assert (result.returncode != 0) is refused, result.stderr
        if refused:
            assert 'configmaps "judged" is forbidden' in result.stderr
    # The namespace can go.
    cluster.kubectl(
        "patch",
        "configmap",
        "judged",
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
        "-n",
        namespace,
    )
