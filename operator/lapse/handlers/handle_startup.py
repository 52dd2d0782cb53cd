"""Start-up and shutdown: kopf settings, the webhook server, metrics, the first sweep."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from lapse import metrics
from lapse.config import Settings
from lapse.grantor import Grantor
from lapse.kube import KubeClient
from lapse.webhooks import build_webhook_server


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger, **_: Any
) -> None:
    config: Settings = memo.settings
    # Lapse posts its own Events, one per transition; kopf's log-to-Events would add noise
    # and an API call per handler run.
    settings.posting.enabled = False
    # One replica by design (the scheduler is in memory); no peering CRD needed.
    settings.peering.standalone = True
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
    metrics.serve(config.metrics_addr, config.metrics_port)
    # Before any handler resumes: whatever lapsed while Lapse was down goes now.
    removed = await grantor.sweep()
    logger.info(f"Start-up sweep removed {removed} binding(s).")
    memo.tasks = [
        asyncio.create_task(grantor.scheduler.run(), name="lapse-expiry-scheduler"),
        asyncio.create_task(grantor.sweep_forever(), name="lapse-sweep"),
    ]


@kopf.on.cleanup()
async def stop(memo: Any, **_: Any) -> None:
    for task in getattr(memo, "tasks", []):
        task.cancel()
    await asyncio.gather(*getattr(memo, "tasks", []), return_exceptions=True)
    grantor: Grantor | None = getattr(memo, "grantor", None)
    if grantor is not None:
        await grantor.kube.close()
