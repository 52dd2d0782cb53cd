"""Start-up and shutdown: kopf settings, the webhook server, metrics, the services."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp.web
import kopf

from lapse import metrics, registration
from lapse.activity import AuditBusy, AuditRefused
from lapse.config import Settings, WebhookMode
from lapse.essence import LeanDiffBaseStorage
from lapse.handlers.handle_admission import quick_update
from lapse.handlers.handle_footholds import quick_allow
from lapse.kube import ApiError, KubeClient, NotFoundError
from lapse.notify import Notifier
from lapse.services import Services, build_services
from lapse.webhooks import AuditReceiver, build_webhook_server


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = memo.settings
    assert isinstance(config, Settings)
    # Lapse posts its own Events, one per transition; kopf's log-to-Events would add noise
    # and an API call per handler run.
    settings.posting.enabled = False
    # kopf logs every handler run at INFO: thousands of lines a minute under load, a few
    # per cent of the CPU, and nothing Lapse's own log and audit lines do not say better.
    # Its warnings and errors still show.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # Replicas elect a leader with Lapse's own Lease (lapse.leader), not kopf peering, which
    # pauses operators rather than electing one (docs/ha.md).
    settings.peering.standalone = True
    # A handler that failed (the API was away longer than a call's retries) tries again soon:
    # kopf's default minute would leave a request waiting for its grant that long.
    settings.execution.default_backoff = 2
    # kopf waits this long to coalesce bursts of events per object; a grant should not wait
    # a tenth of a second for that.
    settings.batching.batch_window = 0.01
    # kopf retries a failed call (a watch included) with these waits, then gives up on it. Its
    # default grows to 21 s a wait: a restarted kube-apiserver answers watches 429 "storage is
    # (re)initializing" for a few seconds, and kopf then heard of new requests up to 21 s after
    # the server was back. Never more than 5 s a wait here; as long in all (about a minute).
    settings.networking.error_backoffs = (1, 1, 1, 2, 2, 2, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5)
    # kopf's record of what it last handled, built without copying every grant's status and
    # managed fields first (lapse.essence): the same annotation, a fifth of the lock's time less.
    settings.persistence.diffbase_storage = LeanDiffBaseStorage()
    # A dropped watch must be noticed and re-established, not hang silently.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # The API server calls the webhooks over TLS with Lapse's own CA (see lapse.webhooks).
    server = build_webhook_server(config, audit=_audit_receiver(memo))
    settings.admission.server = server
    # In url mode kopf writes the webhook configurations (and empties them when it stops);
    # in service mode the leader does, through lapse.certificates, and nobody empties them.
    url_mode = config.webhook_mode is WebhookMode.URL
    managed = url_mode and config.webhook_managed
    settings.admission.managed = config.webhook_configuration if managed else None

    try:
        metrics.serve(config.metrics_addr, config.metrics_port)
    except OSError as error:
        raise kopf.PermanentError(
            f"Cannot serve metrics on {config.metrics_addr}:{config.metrics_port} "
            f"(LAPSE_METRICS_PORT): {error}"
        ) from None
    kube = KubeClient.connect()
    try:
        # Lapse's own writes (a grant's binding) need not reach its foothold webhooks.
        registration.use_in_kopf(await _whoami(kube))
        services = await build_services(config, kube, server=server)
    except NotFoundError as error:
        await kube.close()
        # The usual first-run mistake: one line and a retry, not a traceback.
        raise kopf.TemporaryError(
            f"Namespace {config.namespace} (LAPSE_NAMESPACE) cannot be used: {error}. "
            "Create it (`make install` does) or point LAPSE_NAMESPACE at another.",
            delay=5,
        ) from None
    except BaseException:
        await kube.close()
        raise
    memo.services = services
    services.serve_certificates()
    # kopf starts its watchers once start-up handlers return: what lapsed while Lapse was
    # away goes first, before tens of thousands of owners arrive at the handlers.
    await services.catch_up_early()
    # Complete before the webhooks serve and before kopf's first events arrive.
    try:
        held = await services.index.load(kube)
        await services.rbac.load(kube)
        await services.policies.load(kube)
    except BaseException:
        await kube.close()
        raise
    logging.getLogger(__name__).info("%d active grant(s) in memory.", held)
    services.follow_grants()
    # The grant index is loaded and kept current: the foothold webhook may answer from it.
    foothold = quick_allow(memo)

    def quick(hook: str, review: Mapping[str, Any]) -> bool:
        return quick_update(hook, review) or foothold(hook, review)

    server.quick = quick
    services.start()
    if config.notify_url:
        notifier = Notifier(config.notify_url, config.notify_timeout, config.notify_retries)
        services.tasks.append(notifier.start())


async def _whoami(kube: KubeClient) -> str:
    try:
        return await kube.whoami()
    except ApiError as error:
        logging.getLogger(__name__).warning(
            "The API server did not say who Lapse is (%s): the foothold webhooks will see "
            "Lapse's own writes.",
            error,
        )
        return ""


def _audit_receiver(memo: kopf.Memo) -> AuditReceiver:
    """The audit sink's door on the webhook server: 503 until the services exist and on a
    standby, 429 while the queue is full (the API server's audit backend sends the batch
    again), 401 to an unauthenticated caller, whose body is never read."""

    async def receive(
        headers: Mapping[str, str], peercert: Any, read: Callable[[], Awaitable[bytes]]
    ) -> Mapping[str, Any]:
        services = getattr(memo, "services", None)
        if not isinstance(services, Services):
            raise aiohttp.web.HTTPServiceUnavailable()
        recorder = services.grantor.activity
        if not services.leadership.leading:
            # Records are written whole: a standby's would overwrite the leader's. The API
            # server sends the batch again, and a Service spreads its retries to the leader.
            metrics.audit_batches_total.labels(result="standby").inc()
            raise aiohttp.web.HTTPServiceUnavailable(reason="not the leader")
        try:
            recorder.admit(headers, peercert)
        except AuditRefused as error:
            raise aiohttp.web.HTTPUnauthorized(reason=str(error)) from None
        except AuditBusy as error:
            raise aiohttp.web.HTTPTooManyRequests(reason=str(error)) from None
        try:
            batch = json.loads(await read())
        except ValueError:
            raise aiohttp.web.HTTPBadRequest(reason="not an audit EventList") from None
        return recorder.receive(batch)

    return receive


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    services = getattr(memo, "services", None)
    if isinstance(services, Services):
        await services.stop()
