"""Admission webhooks of the local API, called for real over HTTPS.

The webhook is the peer here: a small aiohttp HTTPS server with a certificate from a generated
CA, as kopf serves Lapse's webhooks. `admission.Admission` is exercised through its public
`mutate` and `validate`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from kubeapi import errors, tls
from kubeapi.admission import Admission, AdmissionAttributes
from kubeapi.identity import UserInfo

ALICE = UserInfo("alice", ("devs", "system:authenticated"), "uid-1", (("team", ("pay",)),))
CERTS = tls.generate()
CA_BUNDLE = base64.b64encode(CERTS.ca_pem).decode()

Reply = Callable[[dict[str, Any]], Awaitable[dict[str, Any]] | dict[str, Any]]


def allow(request: dict[str, Any], **response: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": request["uid"], "allowed": True, **response},
    }


def deny(request: dict[str, Any], message: str, code: int = 403) -> dict[str, Any]:
    review = allow(request)
    review["response"]["allowed"] = False
    review["response"]["status"] = {"code": code, "message": message}
    return review


def json_patch(ops: list[dict[str, Any]]) -> dict[str, str]:
    return {"patchType": "JSONPatch", "patch": base64.b64encode(json.dumps(ops).encode()).decode()}


class Peer:
    """An HTTPS webhook server; records each AdmissionReview and its query string."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.reviews: list[dict[str, Any]] = []
        self.queries: list[str] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.reviews.append(review)
        self.queries.append(request.query_string)
        answer = self.reply(review["request"])
        if asyncio.iscoroutine(answer):
            answer = await answer
        return web.json_response(answer)


@asynccontextmanager
async def serving(reply: Reply) -> AsyncIterator[Peer]:
    peer = Peer(reply)
    app = web.Application()
    app.router.add_post("/{path:.*}", peer.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=CERTS.server_context())
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    peer.url = f"https://127.0.0.1:{port}/hook"
    try:
        yield peer
    finally:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hook(name: str, url: str, **overrides: Any) -> dict[str, Any]:
    webhook: dict[str, Any] = {
        "name": name,
        "clientConfig": {"url": url, "caBundle": CA_BUNDLE},
        "rules": [
            {
                "operations": ["CREATE", "UPDATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["configmaps"],
            }
        ],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "failurePolicy": "Fail",
    }
    webhook.update(overrides)
    return webhook


def config(name: str, *hooks: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "webhooks": list(hooks)}


def admission(
    mutating: list[dict[str, Any]] | None = None,
    validating: list[dict[str, Any]] | None = None,
    namespaces: dict[str, dict[str, str]] | None = None,
) -> Admission:
    known = namespaces if namespaces is not None else {"payments": {"team": "pay"}}
    return Admission(lambda: (mutating or [], validating or []), known.get)


def configmap_create(**overrides: Any) -> AdmissionAttributes:
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": "payments", "labels": {"app": "web"}},
        "data": {"a": "1"},
    }
    values: dict[str, Any] = {
        "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
        "resource": {"group": "", "version": "v1", "resource": "configmaps"},
        "operation": "CREATE",
        "user_info": ALICE,
        "name": "cm",
        "namespace": "payments",
        "object": obj,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }
    values.update(overrides)
    return AdmissionAttributes(**values)


def test_mutating_webhook_gets_a_v1_review_and_its_patch_is_applied() -> None:
    async def scenario() -> None:
        def reply(request: dict[str, Any]) -> dict[str, Any]:
            ops = [{"op": "add", "path": "/metadata/labels/stamped-by", "value": "lapse"}]
            return allow(request, **json_patch(ops))

        async with serving(reply) as peer:
            adm = admission(mutating=[config("m", hook("stamp.lapse.dev", peer.url))])
            req = configmap_create()
            result = await adm.mutate(req)
            assert result is not None
            assert result["metadata"]["labels"] == {"app": "web", "stamped-by": "lapse"}
            assert req.object == result
            review = peer.reviews[0]
            assert review["apiVersion"] == "admission.k8s.io/v1"
            assert review["kind"] == "AdmissionReview"
            request = review["request"]
            assert request["userInfo"] == {
                "username": "alice",
                "groups": ["devs", "system:authenticated"],
                "uid": "uid-1",
                "extra": {"team": ["pay"]},
            }
            assert request["operation"] == "CREATE"
            assert request["dryRun"] is False
            assert request["oldObject"] is None
            assert request["kind"] == {"group": "", "version": "v1", "kind": "ConfigMap"}
            assert request["requestResource"]["resource"] == "configmaps"
            assert request["namespace"] == "payments"
            assert peer.queries == ["timeout=10s"]

    asyncio.run(scenario())


def test_update_sends_the_old_object() -> None:
    async def scenario() -> None:
        async with serving(lambda r: allow(r)) as peer:
            adm = admission(validating=[config("v", hook("check.lapse.dev", peer.url))])
            old = configmap_create().object
            await adm.validate(configmap_create(operation="UPDATE", old_object=old))
            assert peer.reviews[0]["request"]["oldObject"] == old

    asyncio.run(scenario())


def test_denial_carries_the_webhook_message_and_code() -> None:
    async def scenario() -> None:
        async with serving(lambda r: deny(r, "requester must not approve")) as peer:
            adm = admission(validating=[config("v", hook("approvals.lapse.dev", peer.url))])
            with pytest.raises(errors.ApiError) as caught:
                await adm.validate(configmap_create())
            assert caught.value.code == 403
            assert caught.value.message == (
                'admission webhook "approvals.lapse.dev" denied the request: '
                "requester must not approve"
            )

        def bare(request: dict[str, Any]) -> dict[str, Any]:
            review = allow(request)
            review["response"]["allowed"] = False
            return review

        async with serving(bare) as peer:
            adm = admission(validating=[config("v", hook("bare.lapse.dev", peer.url))])
            with pytest.raises(errors.ApiError) as caught:
                await adm.validate(configmap_create())
            assert caught.value.code == 400
            assert caught.value.message.endswith("denied the request without explanation")

    asyncio.run(scenario())


def test_failure_policy_when_the_webhook_is_down() -> None:
    async def scenario() -> None:
        down = f"https://127.0.0.1:{free_port()}/hook"
        failing = admission(validating=[config("v", hook("down.lapse.dev", down))])
        with pytest.raises(errors.ApiError) as caught:
            await failing.validate(configmap_create())
        assert caught.value.code == 500
        assert caught.value.message.startswith(
            'Internal error occurred: failed calling webhook "down.lapse.dev": '
            f'failed to call webhook: Post "{down}?timeout=10s": dial tcp '
            f"{down.split('/')[2]}: connect: connection refused"
        )
        ignoring = admission(
            validating=[config("v", hook("down.lapse.dev", down, failurePolicy="Ignore"))]
        )
        await ignoring.validate(configmap_create())
        mutating = admission(
            mutating=[config("m", hook("down.lapse.dev", down, failurePolicy="Ignore"))]
        )
        req = configmap_create()
        assert await mutating.mutate(req) == configmap_create().object

    asyncio.run(scenario())


def test_timeout_seconds_is_honoured() -> None:
    async def scenario() -> None:
        async def slow(request: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(2.5)
            return allow(request)

        async with serving(slow) as peer:
            strict = admission(
                validating=[config("v", hook("slow.lapse.dev", peer.url, timeoutSeconds=1))]
            )
            with pytest.raises(errors.ApiError) as caught:
                await strict.validate(configmap_create())
            assert caught.value.message.endswith('?timeout=1s": context deadline exceeded')
            lenient = admission(
                validating=[
                    config(
                        "v",
                        hook("slow.lapse.dev", peer.url, timeoutSeconds=1, failurePolicy="Ignore"),
                    )
                ]
            )
            await lenient.validate(configmap_create())

    asyncio.run(scenario())


def test_certificate_must_chain_to_the_ca_bundle() -> None:
    async def scenario() -> None:
        async with serving(lambda r: allow(r)) as peer:
            other_ca = base64.b64encode(tls.generate().ca_pem).decode()
            hooked = hook("tls.lapse.dev", peer.url)
            hooked["clientConfig"]["caBundle"] = other_ca
            adm = admission(validating=[config("v", hooked)])
            with pytest.raises(errors.ApiError) as caught:
                await adm.validate(configmap_create())
            assert caught.value.message.endswith("x509: certificate signed by unknown authority")
            assert peer.reviews == []

    asyncio.run(scenario())


def test_validating_webhooks_run_in_parallel() -> None:
    async def scenario() -> None:
        arrived = 0
        both = asyncio.Event()

        async def rendezvous(request: dict[str, Any]) -> dict[str, Any]:
            nonlocal arrived
            arrived += 1
            if arrived == 2:
                both.set()
            # Called one after the other, the first would wait here until its timeout.
            await asyncio.wait_for(both.wait(), 5)
            return allow(request)

        async with serving(rendezvous) as peer:
            adm = admission(
                validating=[
                    config("a", hook("one.lapse.dev", peer.url, timeoutSeconds=8)),
                    config("b", hook("two.lapse.dev", peer.url, timeoutSeconds=8)),
                ]
            )
            await adm.validate(configmap_create())
            assert arrived == 2

    asyncio.run(scenario())


def test_mutating_webhooks_run_in_configuration_name_order() -> None:
    async def scenario() -> None:
        def add(value: str) -> Reply:
            def reply(request: dict[str, Any]) -> dict[str, Any]:
                seen = request["object"]["metadata"]["labels"].get("order", "")
                ops = [{"op": "add", "path": "/metadata/labels/order", "value": seen + value}]
                return allow(request, **json_patch(ops))

            return reply

        async with serving(add("a")) as first, serving(add("b")) as second:
            adm = admission(
                mutating=[
                    config("z-second", hook("b.lapse.dev", second.url)),
                    config("a-first", hook("a.lapse.dev", first.url)),
                ]
            )
            result = await adm.mutate(configmap_create())
            assert result is not None
            assert result["metadata"]["labels"]["order"] == "ab"

    asyncio.run(scenario())


def test_rules_selectors_and_scope_decide_who_is_called() -> None:
    async def scenario() -> None:
        async with serving(lambda r: allow(r)) as peer:

            async def calls(webhook: dict[str, Any], req: AdmissionAttributes, **ns: Any) -> bool:
                before = len(peer.reviews)
                await admission(validating=[config("v", webhook)], **ns).validate(req)
                return len(peer.reviews) > before

            url = peer.url
            rule = {"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"]}
            assert await calls(
                hook("h", url, rules=[{**rule, "resources": ["*"]}]), configmap_create()
            )
            assert not await calls(
                hook("h", url, rules=[{**rule, "resources": ["*"]}]),
                configmap_create(sub_resource="status"),
            )
            assert await calls(
                hook("h", url, rules=[{**rule, "resources": ["*/*"]}]),
                configmap_create(sub_resource="status"),
            )
            assert await calls(
                hook("h", url, rules=[{**rule, "resources": ["configmaps/status"]}]),
                configmap_create(sub_resource="status"),
            )
            assert not await calls(hook("h", url), configmap_create(operation="DELETE"))
            assert not await calls(
                hook("h", url, rules=[{**rule, "resources": ["*"], "scope": "Cluster"}]),
                configmap_create(),
            )
            assert await calls(
                hook("h", url, namespaceSelector={"matchLabels": {"team": "pay"}}),
                configmap_create(),
            )
            assert not await calls(
                hook("h", url, namespaceSelector={"matchLabels": {"team": "ops"}}),
                configmap_create(),
            )
            assert not await calls(
                hook(
                    "h",
                    url,
                    namespaceSelector={
                        "matchExpressions": [
                            {"key": "team", "operator": "NotIn", "values": ["pay"]}
                        ]
                    },
                ),
                configmap_create(),
            )
            assert await calls(
                hook("h", url, objectSelector={"matchLabels": {"app": "web"}}), configmap_create()
            )
            assert not await calls(
                hook("h", url, objectSelector={"matchLabels": {"app": "db"}}), configmap_create()
            )
            # The admission configurations themselves are never sent to webhooks.
            exempt = configmap_create(
                resource={
                    "group": "admissionregistration.k8s.io",
                    "version": "v1",
                    "resource": "validatingwebhookconfigurations",
                },
                namespace="",
            )
            assert not await calls(hook("h", url, rules=[{**rule, "resources": ["*"]}]), exempt)
            # A Namespace is matched by its own labels.
            namespace = configmap_create(
                kind={"group": "", "version": "v1", "kind": "Namespace"},
                resource={"group": "", "version": "v1", "resource": "namespaces"},
                name="fresh",
                namespace="",
                object={"metadata": {"name": "fresh", "labels": {"team": "pay"}}},
            )
            assert await calls(
                hook(
                    "h",
                    url,
                    rules=[{**rule, "resources": ["namespaces"]}],
                    namespaceSelector={"matchLabels": {"team": "pay"}},
                ),
                namespace,
            )

    asyncio.run(scenario())


def test_dry_run_skips_nothing_but_refuses_webhooks_with_side_effects() -> None:
    async def scenario() -> None:
        async with serving(lambda r: allow(r)) as peer:
            safe = admission(validating=[config("v", hook("safe.lapse.dev", peer.url))])
            await safe.validate(configmap_create(dry_run=True))
            assert peer.reviews[-1]["request"]["dryRun"] is True
            unsafe = admission(
                validating=[config("v", hook("effects.lapse.dev", peer.url, sideEffects="Some"))]
            )
            with pytest.raises(errors.ApiError) as caught:
                await unsafe.validate(configmap_create(dry_run=True))
            assert caught.value.code == 400
            assert caught.value.message == (
                'admission webhook "effects.lapse.dev" does not support dry run'
            )

    asyncio.run(scenario())


def test_a_response_for_another_request_is_a_failure() -> None:
    async def scenario() -> None:
        def wrong(request: dict[str, Any]) -> dict[str, Any]:
            return allow({"uid": "not-" + request["uid"]})

        async with serving(wrong) as peer:
            adm = admission(validating=[config("v", hook("uid.lapse.dev", peer.url))])
            with pytest.raises(errors.ApiError) as caught:
                await adm.validate(configmap_create())
            assert caught.value.code == 500
            assert "expected response.uid" in caught.value.message

    asyncio.run(scenario())


def test_service_references_fail_by_failure_policy() -> None:
    async def scenario() -> None:
        svc = {"service": {"name": "lapse", "namespace": "lapse-system", "path": "/validate"}}
        adm = admission(validating=[config("v", hook("svc.lapse.dev", "", clientConfig=svc))])
        with pytest.raises(errors.ApiError) as caught:
            await adm.validate(configmap_create())
        # Nothing is stored here: the Service cannot be found, in kube-apiserver's words.
        assert caught.value.message.endswith(
            'failed to call webhook: Post "https://lapse.lapse-system.svc:443/validate'
            '?timeout=10s": service "lapse" not found'
        )

    asyncio.run(scenario())
