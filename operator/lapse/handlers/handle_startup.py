"""Start-up and shutdown: kopf settings, the webhook server, metrics, the first sweep."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import kopf

from lapse import metrics
from lapse.approving import RequestApprovals
from lapse.breakglass import BreakGlassKeeper
from lapse.config import Settings
from lapse.core.bindings import MANAGED_SELECTOR
from lapse.grantor import Grantor
from lapse.kube import ApiError, KubeClient
from lapse.leader import Leadership
from lapse.ledger import GitOpsLedger
from lapse.notify import Notifier
from lapse.signing import ensure_signing_key
from lapse.webhooks import build_webhook_server


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger, **_: Any
) -> None:
    config: Settings = memo.settings
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
    # A dropped watch must be noticed and re-established, not hang silently.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # The API server calls the webhooks over TLS with Lapse's own CA (see lapse.webhooks).
    settings.admission.server = build_webhook_server(config)
    # Lapse registers its webhook configurations unless a chart ships them.
    settings.admission.managed = config.webhook_configuration if config.webhook_managed else None

    grantor = Grantor(KubeClient.connect(), config)
    memo.grantor = grantor
    memo.breakglass = BreakGlassKeeper(grantor)
    signing_key = await ensure_signing_key(grantor.kube, config.namespace)
    memo.breakglass.key = signing_key
    retention = timedelta(seconds=config.gitops_ledger_retention)
    grantor.approvals = RequestApprovals(
        grantor, signing_key, GitOpsLedger(grantor.kube, config.namespace, retention)
    )
    metrics.serve(config.metrics_addr, config.metrics_port)
    leadership = Leadership(grantor.kube, config)
    memo.leadership = leadership
    memo.tasks = [
        asyncio.create_task(leadership.run(), name="lapse-leader-election"),
        asyncio.create_task(lead(grantor, leadership, memo, logger), name="lapse-lead"),
    ]
    if config.notify_url:
        notifier = Notifier(config.notify_url, config.notify_timeout, config.notify_retries)
        memo.tasks.append(notifier.start())


async def lead(grantor: Grantor, leadership: Leadership, memo: Any, logger: kopf.Logger) -> None:
    """Once this replica holds the lease (at once without leader election): catch up, then
    start the scheduler and the sweep and let the handlers that write run."""
    await leadership.acquired.wait()
    # Before any handler acts: whatever lapsed while no replica led goes now.
    while True:
        try:
            removed = await grantor.sweep()
            break
        except (ApiError, OSError, TimeoutError) as error:
            logger.warning(f"Start-up sweep failed, trying again: {error}")
            await asyncio.sleep(1)
        except Exception:
            # Until this sweep succeeds no handler may act: a surprise here must be loud.
            logger.exception("Start-up sweep failed unexpectedly, trying again")
            await asyncio.sleep(1)
    logger.info(f"Start-up sweep removed {removed} binding(s).")
    if grantor.settings.leader_election:
        # Binding events a standby saw were not acted on: look at every binding once.
        for binding in await grantor.kube.list_bindings(MANAGED_SELECTOR):
            try:
                await grantor.binding_event(None, binding)
            except (ApiError, OSError, TimeoutError) as error:
                logger.warning(f"Could not check a binding after taking over: {error}")
    memo.tasks += [
        asyncio.create_task(grantor.scheduler.run(), name="lapse-expiry-scheduler"),
        asyncio.create_task(grantor.sweep_forever(), name="lapse-sweep"),
    ]
    leadership.ready.set()


@kopf.on.cleanup()
async def stop(memo: Any, **_: Any) -> None:
    for task in getattr(memo, "tasks", []):
        task.cancel()
    await asyncio.gather(*getattr(memo, "tasks", []), return_exceptions=True)
    grantor: Grantor | None = getattr(memo, "grantor", None)
    if grantor is not None:
        await grantor.kube.close()
