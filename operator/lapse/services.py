"""Everything the handlers use, built complete once at start-up, signing key first.

Nothing here is set after construction: a keeper exists only with the key it signs and
verifies with, so no code path runs half-configured. `lead` is what a replica does once it
holds the lease: catch up on whatever lapsed while nobody led, then let the handlers act.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from lapse import heap
from lapse.breakglass import BreakGlassKeeper
from lapse.certificates import CertificateKeeper
from lapse.config import Settings, WebhookMode
from lapse.core.bindings import MANAGED_SELECTOR
from lapse.decisions import RequestDecisions
from lapse.drift import RoleDriftWatch
from lapse.exporter import Exporter
from lapse.exposure import REFRESH_SECONDS, ExposureKeeper
from lapse.grantor import Grantor
from lapse.guard import BindingGuard
from lapse.index import KINDS as INDEXED_KINDS
from lapse.index import GrantIndex
from lapse.kube import BINDING_PLURALS, ApiError, KubeApi, KubeClient
from lapse.leader import Leadership
from lapse.ledger import GitOpsLedger
from lapse.policies import PolicyIndex, PolicyReader
from lapse.rbac import PLURALS as RBAC_KINDS
from lapse.rbac import RbacIndex
from lapse.requests import RequestKeeper
from lapse.retention import Retention
from lapse.signing import ensure_signing_key
from lapse.sinks.configured import build_sinks
from lapse.sweeper import Sweeper
from lapse.unadmitted import Unadmitted
from lapse.uninstall import Uninstaller
from lapse.webhooks import WebhookServer

logger = logging.getLogger(__name__)


SCHEDULER_TASK = "lapse-expiry-scheduler"


@dataclass(frozen=True)
class Services:
    settings: Settings
    kube: KubeApi
    grantor: Grantor
    guard: BindingGuard
    drift: RoleDriftWatch
    sweeper: Sweeper
    decisions: RequestDecisions
    requests: RequestKeeper
    breakglass: BreakGlassKeeper
    leadership: Leadership
    index: GrantIndex
    # Every Role and binding: who can act as an applier or approver, and as a pod's account.
    rbac: RbacIndex
    # Every AccessPolicy, as the API holds them now (see lapse.policies).
    policies: PolicyIndex
    exposure: ExposureKeeper
    uninstaller: Uninstaller
    # The operator's signing key: requesters and decisions carry its MACs, trail records too.
    key: bytes
    # The audit trail to its sinks, and ended owners deleted once they have it.
    exporter: Exporter
    retention: Retention
    # Requests and break-glasses made around the webhook, seen through to a phase.
    unadmitted: Unadmitted
    # Service mode's certificate and webhook configurations (None in url mode).
    certificates: CertificateKeeper | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Bindings `catch_up_early` deleted before kopf started: the full sweep records their ends.
    removed_early: list[Mapping[str, Any]] = field(default_factory=list)

    def serve_certificates(self) -> None:
        """Look for the serving certificate at once: the webhooks serve nothing until then,
        and nothing in the rest of the start-up needs to come before it."""
        if self.certificates is not None:
            self.tasks.append(
                asyncio.create_task(self.certificates.run(), name="lapse-webhook-certificate")
            )

    def follow_grants(self) -> None:
        """Keep the grant index current on every replica (see lapse.index), from the listing
        `index.load` made on."""
        for kind in INDEXED_KINDS:
            self.tasks.append(
                asyncio.create_task(self.index.follow(self.kube, kind), name=f"lapse-index-{kind}")
            )
        for kind in RBAC_KINDS:
            # The binding guard hears every binding from this watch (see lapse.guard).
            also = self.guard.observe if kind in BINDING_PLURALS else None
            self.tasks.append(
                asyncio.create_task(
                    self.rbac.follow(self.kube, kind, also=also), name=f"lapse-rbac-{kind}"
                )
            )
        self.tasks.append(
            asyncio.create_task(self.policies.follow(self.kube), name="lapse-policy-index")
        )

    def start(self) -> None:
        """Elect (or just take) the lead, then `lead`."""
        self.tasks.append(asyncio.create_task(self.leadership.run(), name="lapse-leader-election"))
        self.tasks.append(asyncio.create_task(self.lead(), name="lapse-lead"))
        self.tasks.append(asyncio.create_task(self.unadmitted.run(), name="lapse-unadmitted"))
        self.tasks.append(
            asyncio.create_task(
                heap.keep_giving_back(busy=self.grantor.deadlines.near), name="lapse-heap"
            )
        )
        if self.grantor.activity.enabled:
            self.tasks.append(
                asyncio.create_task(self.grantor.activity.run(), name="lapse-activity")
            )

    def _run_scheduler(self) -> None:
        self.grantor.deadlines.start_reaper()
        if not any(task.get_name() == SCHEDULER_TASK for task in self.tasks):
            self.tasks.append(
                asyncio.create_task(self.grantor.scheduler.run(), name=SCHEDULER_TASK)
            )

    async def catch_up_early(self) -> None:
        """Before kopf lists anything: if this replica may lead at once, delete the bindings
        that lapsed while none led.

        kopf's first listing hands every owner to the handlers, tens of thousands after a
        large run, and that work would hold up the deletions for minutes; here nothing else
        competes. A replica that cannot take the lease at once, or meets an API error, leaves
        it to `lead`, which does the same once it leads.
        """
        if self.settings.leader_election:
            try:
                await asyncio.wait_for(self.leadership.attempt(), self.settings.lease_renew)
            except (ApiError, OSError, TimeoutError) as error:
                logger.warning("Could not take the lease at start-up: %s", error)
        if not self.leadership.acquired.is_set():
            return
        # Deadlines are kept from here on: bindings falling due while the owners are read
        # go at their time (see Deadlines.expire_binding).
        self._run_scheduler()
        try:
            self.removed_early.extend(await self.sweeper.remove_overdue())
        except (ApiError, OSError, TimeoutError) as error:
            logger.warning("Start-up removal of overdue bindings failed: %s", error)
        if self.removed_early:
            logger.info("Removed %d overdue binding(s) before watching.", len(self.removed_early))

    async def lead(self) -> None:
        """Once this replica holds the lease (at once without leader election): catch up, then
        start the scheduler and the sweep and let the handlers that write run."""
        await self.leadership.acquired.wait()
        # Deadlines are kept from the start: the full sweep schedules every active grant it
        # lists, and its catching up must not hold up those that fall due meanwhile.
        self._run_scheduler()
        # Before any handler acts: whatever lapsed while no replica led goes now, the
        # bindings first (by their own expiry), then the full sweep records the ends.
        while True:
            try:
                overdue = [*self.removed_early, *await self.sweeper.remove_overdue()]
                removed = len(overdue) + await self.sweeper.sweep(deleted=overdue)
                break
            except (ApiError, OSError, TimeoutError) as error:
                logger.warning("Start-up sweep failed, trying again: %s", error)
                await asyncio.sleep(1)
            except Exception:
                # Until this sweep succeeds no handler may act: a surprise here must be loud.
                logger.exception("Start-up sweep failed unexpectedly, trying again")
                await asyncio.sleep(1)
        logger.info("Start-up sweep removed %d binding(s).", removed)
        # Whatever happened to a binding while this replica did not lead (stopped, or a
        # standby) was not answered: look at every binding once. The sweep remembered what
        # each active grant's binding should be, so the look costs no call unless one differs;
        # the guard answers once `ready` is set, with the watch's newer events after.
        while True:
            try:
                listed = await self.kube.list_bindings(MANAGED_SELECTOR)
                break
            except (ApiError, OSError, TimeoutError) as error:
                logger.warning("Could not list the bindings after taking over: %s", error)
                await asyncio.sleep(1)
        for index, binding in enumerate(listed):
            if index % 256 == 255:
                await asyncio.sleep(0)
            self.guard.observe(str(binding.get("kind")), None, binding)
        self.tasks.append(asyncio.create_task(self.sweeper.sweep_forever(), name="lapse-sweep"))
        self.tasks.append(asyncio.create_task(self.exporter.run(), name="lapse-exporter"))
        self.tasks.append(asyncio.create_task(self.retention.run(), name="lapse-retention"))
        self.tasks.append(
            asyncio.create_task(
                self.exposure.run(REFRESH_SECONDS, self.grantor.clock), name="lapse-exposure"
            )
        )
        self.leadership.ready.set()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.guard.stop()
        # kopf has stopped watching by now: if Lapse is being uninstalled, this is the last
        # chance to end what it granted, and nothing here re-adds a finalizer taken off.
        try:
            await self.uninstaller.stop()
        except Exception:
            logger.exception("Could not end the grants at uninstall")
        # What the audit sink folded since the last write goes out before the client closes.
        try:
            await self.grantor.activity.flush()
        except Exception:
            logger.exception("Could not write activity records at shutdown")
        await self.grantor.stop()
        # Last, once nothing of this replica acts any more: the standby may take over at once.
        await self.leadership.release()
        await self.kube.close()


async def build_services(
    settings: Settings, kube: KubeApi, *, server: WebhookServer | None = None
) -> Services:
    key = await ensure_signing_key(kube, settings.namespace)
    leadership = Leadership(kube, settings)
    certificates = None
    if server is not None and settings.webhook_mode is WebhookMode.SERVICE:
        # Only the holder of the lease writes certificates and configurations.
        certificates = CertificateKeeper(
            kube, settings, server, leading=lambda: leadership.acquired.is_set()
        )
    rbac = RbacIndex()
    # A client of the API server's own makes the reaper's deletes, on the reaper's thread.
    twin = kube.twin if isinstance(kube, KubeClient) else None
    grantor = Grantor(kube, settings, roles=rbac, reaper_connect=twin)
    exposure = ExposureKeeper(kube, rbac, grantor.reporter, settings)
    uninstaller = Uninstaller(grantor)
    await uninstaller.arm()
    policies = PolicyReader(kube)
    decisions = RequestDecisions(
        grantor.reporter,
        key=key,
        admin_groups=settings.admin_groups,
        policies=policies,
        exposure=exposure,
    )
    ledger = GitOpsLedger(
        kube, settings.namespace, timedelta(seconds=settings.gitops_ledger_retention)
    )
    exporter = Exporter(
        kube,
        sinks=build_sinks(settings),
        signing_key=key,
        clock=grantor.clock,
        leading=leadership.acquired,
        retry_max=settings.trail_retry_max,
    )
    retention = Retention(
        kube,
        exporter,
        keep=timedelta(seconds=settings.retention),
        interval=timedelta(seconds=settings.retention_interval),
        clock=grantor.clock,
        leading=leadership.acquired,
    )
    follows = exporter.enabled or retention.enabled
    guard = BindingGuard(grantor, acquired=leadership.acquired, ready=leadership.ready)
    unadmitted = Unadmitted(kube, key=key, leading=leadership.ready)
    # The grant index's one listing and watch of the owners tells these as well.
    observers = [unadmitted.observe, *([exporter.observe] if follows else [])]

    def observe(kind: str, body: Mapping[str, Any], deleted: bool) -> None:
        for each in observers:
            each(kind, body, deleted)

    return Services(
        settings=settings,
        kube=kube,
        grantor=grantor,
        guard=guard,
        drift=RoleDriftWatch(grantor),
        sweeper=Sweeper(grantor, unlisted=guard.observe),
        decisions=decisions,
        requests=RequestKeeper(grantor, decisions=decisions, ledger=ledger, exposure=exposure),
        breakglass=BreakGlassKeeper(grantor, key=key, policies=policies),
        leadership=leadership,
        index=GrantIndex(also=observe),
        rbac=rbac,
        policies=PolicyIndex(),
        exposure=exposure,
        uninstaller=uninstaller,
        key=key,
        exporter=exporter,
        retention=retention,
        unadmitted=unadmitted,
        certificates=certificates,
    )
