"""The audit webhook backend: what an API server POSTs, checked field by field.

The same test runs against the local API (started with the recommended policy and a webhook
configuration pointing at the test's receiver) and against a real kube-apiserver configured
the same way (LAPSE_TEST_AUDIT_*): Lapse's activity records are only as good as the events.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.cluster import AuditWebhook, Cluster

MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
AUDIT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class Receiver:
    """An HTTPS endpoint at the audit webhook's address that keeps what it is sent."""

    def __init__(self, webhook: AuditWebhook) -> None:
        self.webhook = webhook
        self.posts: list[tuple[dict[str, str], dict[str, Any]]] = []
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    async def _take(self, request: web.Request) -> web.Response:
        self.posts.append((dict(request.headers), await request.json()))
        return web.json_response({})

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/audit", self._take)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(
            self.webhook.cert_dir / "tls.crt", self.webhook.cert_dir / "tls.key"
        )
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.webhook.port, ssl_context=context).start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except OSError as error:
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> None:
        threading.Thread(target=self._serve, daemon=True).start()
        self._ready.wait(10)
        if self._error is not None:
            pytest.skip(f"the audit webhook's port is taken (an operator runs?): {self._error}")

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def events(self, namespace: str) -> list[dict[str, Any]]:
        return [
            item
            for _, body in list(self.posts)
            for item in body.get("items") or ()
            if (item.get("objectRef") or {}).get("namespace") == namespace
        ]


@pytest.fixture
def receiver(audit_webhook: AuditWebhook | None) -> Iterator[Receiver]:
    if audit_webhook is None:
        pytest.skip("this cluster's API server sends no audit events here (LAPSE_TEST_AUDIT_*)")
    taking = Receiver(audit_webhook)
    taking.start()
    try:
        yield taking
    finally:
        taking.stop()


def _one(events: list[dict[str, Any]], verb: str, resource: str, **ref: str) -> dict[str, Any]:
    found = [
        e
        for e in events
        if e["verb"] == verb
        and e["objectRef"]["resource"] == resource
        and all(e["objectRef"].get(k) == v for k, v in ref.items())
    ]
    assert len(found) == 1, f"{verb} {resource} {ref}: {json.dumps(events, indent=1)}"
    return found[0]


def test_audit_events_as_a_real_api_server_sends_them(
    cluster: Cluster, namespace: str, receiver: Receiver, audit_webhook: AuditWebhook
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.9"}]},
            },
        },
    }
    cluster.kubectl("create", "configmap", "plain", "-n", namespace, "--from-literal=a=b")
    cluster.kubectl("get", "configmap", "plain", "-n", namespace)
    cluster.kubectl("create", "secret", "generic", "hidden", "-n", namespace, "--from-literal=a=b")
    refused = cluster.kubectl(
        "get", "secret", "hidden", "-n", namespace, as_user="auditee", groups=("t-auditors",),
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    cluster.kubectl(
        "create", "configmap", "as-someone", "-n", namespace,
        as_user="auditee", groups=("system:masters",),
    )  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input=json.dumps(deployment))
    cluster.kubectl("scale", "deployment", "web", "-n", namespace, "--replicas=2")

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(receiver.events(namespace)) < 6:
        time.sleep(0.2)
    time.sleep(1.5)  # a straggler in the next batch would show here
    events = receiver.events(namespace)

    headers, body = next(p for p in receiver.posts if p[1].get("items"))
    assert headers.get("Authorization") == f"Bearer {audit_webhook.token_file.read_text().strip()}"
    assert headers.get("Content-Type", "").startswith("application/json")
    assert body["kind"] == "EventList" and body["apiVersion"] == "audit.k8s.io/v1"
    # Items of an EventList carry no kind or apiVersion of their own.
    assert all("kind" not in e and "apiVersion" not in e for e in events)
    # Batched: a second's worth of events goes in one POST.
    assert max(len(b.get("items") or ()) for _, b in receiver.posts) >= 2

    for event in events:
        assert event["level"] == "Metadata" and event["stage"] == "ResponseComplete", event
        assert AUDIT_ID.match(event["auditID"]), event
        assert MICRO_TIME.match(event["requestReceivedTimestamp"]), event
        assert MICRO_TIME.match(event["stageTimestamp"]), event
        assert event["stageTimestamp"] >= event["requestReceivedTimestamp"]
        assert event["user"]["username"] and "system:authenticated" in event["user"]["groups"]
        assert event["sourceIPs"] and event["userAgent"].startswith("kubectl/")
        assert event["annotations"]["authorization.k8s.io/decision"] in ("allow", "forbid")
        assert "requestObject" not in event and "responseObject" not in event

    # Reads of anything but Secrets are not in the recommended policy.
    reads = [e for e in events if e["verb"] in ("get", "list")]
    assert all(e["objectRef"]["resource"] == "secrets" for e in reads), reads

    made = _one(events, "create", "configmaps", name="plain")
    assert made["requestURI"].startswith(f"/api/v1/namespaces/{namespace}/configmaps")
    assert made["objectRef"] == {
        "resource": "configmaps", "namespace": namespace, "name": "plain", "apiVersion": "v1",
    }  # fmt: skip
    assert made["responseStatus"] == {"metadata": {}, "code": 201}
    assert made["annotations"]["authorization.k8s.io/decision"] == "allow"
    assert "impersonatedUser" not in made

    denied = _one(events, "get", "secrets", name="hidden")
    assert denied["responseStatus"]["code"] == 403
    assert denied["responseStatus"]["status"] == "Failure"
    assert denied["responseStatus"]["reason"] == "Forbidden"
    assert denied["annotations"]["authorization.k8s.io/decision"] == "forbid"
    assert denied["impersonatedUser"]["username"] == "auditee"
    assert set(denied["impersonatedUser"]["groups"]) == {"t-auditors", "system:authenticated"}
    assert denied["user"]["username"] != "auditee"

    impersonated = _one(events, "create", "configmaps", name="as-someone")
    assert impersonated["impersonatedUser"]["username"] == "auditee"
    assert impersonated["responseStatus"]["code"] == 201

    scaled = _one(events, "patch", "deployments", name="web", subresource="scale")
    assert scaled["objectRef"]["apiGroup"] == "apps" and scaled["objectRef"]["apiVersion"] == "v1"
    assert scaled["responseStatus"]["code"] == 200
    assert scaled["requestURI"].startswith(
        f"/apis/apps/v1/namespaces/{namespace}/deployments/web/scale"
    )
