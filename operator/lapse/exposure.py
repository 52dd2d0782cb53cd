"""The exposure keeper: who can act as a policy's appliers and approvers, kept on the policy.

The leader looks at every AccessPolicy whenever RBAC or the policy changed and writes what it
finds into the policy's status (the `Exposed` condition and `exposures`), with a Warning Event
when someone new can act as an applier or approver. The request keeper asks it, for each
decision, whether a GitOps approval came from an applier nobody else can act as, which
approvals the requester could have made themselves, and what a grant would let its holder act
as. Until the RBAC index was listed once, nothing is taken as trusted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from lapse import metrics
from lapse.config import Settings
from lapse.core.exposure import (
    GRANT_THROUGH,
    ActingAs,
    compute_acting_as,
    compute_applier_check,
    compute_exposure_conditions,
    compute_forged,
    compute_policy_exposure,
    compute_roles,
    subject_user,
)
from lapse.core.grants import GrantKey
from lapse.core.kinds import ACCESS_POLICY
from lapse.core.models import (
    AccessPolicy,
    AccessPolicyStatus,
    ExposureRecord,
    RoleRef,
    Subject,
    UserInfo,
)
from lapse.core.policy import Decision, parse_policy
from lapse.core.rbac import Held, Identity, Path, Trusted, held_by, role_key
from lapse.kube import ApiError, KubeApi, NotFoundError
from lapse.rbac import RbacIndex
from lapse.reporting import CLUSTER_EVENTS_NAMESPACE, Reporter

logger = logging.getLogger(__name__)
NOT_READY = "Lapse has not read the cluster's RBAC yet"
# How soon a change to RBAC or to a policy shows in the policy's status.
REFRESH_SECONDS = 2.0


class ExposureKeeper:
    def __init__(
        self, kube: KubeApi, rbac: RbacIndex, reporter: Reporter, settings: Settings
    ) -> None:
        self.kube = kube
        self.rbac = rbac
        self.reporter = reporter
        # Lapse's own namespace is as trusted as Lapse: whoever runs pods there runs Lapse.
        self.trusted = Trusted(namespaces=frozenset({"kube-system", settings.namespace}))
        self._cache: dict[str, tuple[tuple[int, str], list[ExposureRecord]]] = {}

    def records(self, policy: AccessPolicy) -> list[ExposureRecord]:
        """Who can act as the policy's appliers and approvers now (cached per RBAC change)."""
        stamp = (self.rbac.version, policy.spec.model_dump_json())
        cached = self._cache.get(policy.metadata.name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        found = compute_policy_exposure(
            policy, self.rbac.snapshot(), self.trusted, self.rbac.holdings()
        )
        self._cache[policy.metadata.name] = (stamp, found)
        return found

    # The policy's status -------------------------------------------------------------------

    def build_status(self, policy: AccessPolicy, now: datetime) -> AccessPolicyStatus | None:
        """The status the policy should carry, or None until RBAC was read."""
        if not self.rbac.ready.is_set():
            return None
        records = self.records(policy)
        conditions = compute_exposure_conditions(
            records,
            policy.status.conditions,
            now=now,
            generation=policy.metadata.generation,
        )
        return AccessPolicyStatus(
            observed_generation=policy.metadata.generation,
            conditions=conditions,
            exposures=records,
        )

    async def report(self, policy: AccessPolicy, status: AccessPolicyStatus) -> None:
        """A Warning Event for each way in that was not in the policy's status before."""
        before = {r.model_dump_json() for r in policy.status.exposures}
        fresh = [r for r in status.exposures if r.model_dump_json() not in before]
        metrics.policy_exposures.labels(policy=policy.metadata.name).set(
            len([r for r in status.exposures if not r.accepted])
        )
        for record in fresh:
            reason = f"{record.role}Exposed" if not record.accepted else "ExposureAccepted"
            message = (
                f"{record.actor} can {record.way}: {record.identity}, "
                f"{'a trusted applier' if record.role == 'Applier' else 'an approver'} of this "
                f"policy (through {record.through})."
            )
            if record.accepted:
                message += " Accepted by approval.exposureAccepted."
            involved = {
                "apiVersion": policy.api_version,
                "kind": policy.kind,
                "name": policy.metadata.name,
                "uid": policy.metadata.uid or "",
            }
            await self.reporter.post_event(
                involved,
                CLUSTER_EVENTS_NAMESPACE,
                "Normal" if record.accepted else "Warning",
                reason,
                message,
            )

    async def run(self, interval: float, clock: Callable[[], datetime]) -> None:
        """On the leader: every `interval`, each policy's status as RBAC and the policy
        now stand; written only when it changed."""
        await self.rbac.ready.wait()
        while True:
            try:
                await self.refresh(clock())
            except (ApiError, OSError, TimeoutError) as error:
                logger.warning("Could not bring the policies' exposure up to date: %s", error)
            await asyncio.sleep(interval)

    async def refresh(self, now: datetime) -> None:
        for body in await self.kube.list_owners(ACCESS_POLICY.kind) or []:
            policy = parse_policy(body)
            if policy is None:
                continue
            status = self.build_status(policy, now)
            if status is None or status.to_wire() == policy.status.to_wire():
                continue
            key = GrantKey(
                ACCESS_POLICY.kind, None, policy.metadata.name, policy.metadata.uid or ""
            )
            try:
                await self.kube.patch_status(key, {"status": status.to_wire()})
            except NotFoundError:
                continue
            await self.report(policy, status)

    # Requests --------------------------------------------------------------------------------

    async def check_applier(
        self, decision: Decision, policy: AccessPolicy | None, requester: UserInfo
    ) -> Decision:
        """A GitOps approval stands only from an applier nobody else can act as, and from a
        ServiceAccount applier only with that account's own credential."""
        if decision.reason != "GitOpsApproved" or policy is None:
            return decision
        unverified = await self._unverified(requester)
        if unverified is None and not self.rbac.ready.is_set():
            unverified = f"{NOT_READY}, so it cannot tell who else can act as {requester.username}"
        return compute_applier_check(
            decision, policy, requester, self.records(policy), unverified=unverified
        )

    async def _unverified(self, requester: UserInfo) -> str | None:
        """Why a ServiceAccount requester is not that account, or None. The API server puts
        the account's UID into a request made with its token; an impersonator gets none
        (unless also allowed to impersonate UIDs, which the exposure names)."""
        identity = Identity.of_username(requester.username)
        if identity.kind != "ServiceAccount":
            return None
        path = f"/api/v1/namespaces/{identity.namespace}/serviceaccounts/{identity.name}"
        try:
            account = await self.kube.get_path(path)
        except ApiError as error:
            return f"Lapse could not read {identity.describe()} ({error})"
        uid = ((account or {}).get("metadata") or {}).get("uid")
        if account is None:
            return f"The request came as {identity.describe()}, which does not exist"
        if not requester.uid or requester.uid != uid:
            return (
                f"The request came as {identity.describe()} without that account's credential "
                "(the API server gave no UID, or another one): it was impersonated"
            )
        return None

    def forged(
        self,
        approvers: Sequence[UserInfo],
        policy: AccessPolicy,
        requester: UserInfo,
        subject: Subject | None,
    ) -> dict[str, Path]:
        """The approvers whose decision the requester (or the subject) could have made
        themselves, with how: those decisions do not count."""
        if not self.rbac.ready.is_set():
            return {}
        suspects = [requester]
        other = subject_user(subject, requester)
        if other is not None:
            suspects.append(other)
        found: dict[str, Path] = {}
        for approver in approvers:
            path = compute_forged(
                approver,
                policy,
                self.rbac.snapshot(),
                self.trusted,
                self.rbac.holdings(),
                suspects,
            )
            if path is not None:
                found[approver.username] = path
        return found

    def acting_as(
        self,
        role: RoleRef,
        namespaces: Sequence[str | None],
        holder: UserInfo,
        policies: Sequence[AccessPolicy],
    ) -> list[ActingAs] | None:
        """What a grant of `role` in `namespaces` (None: cluster-wide) would let `holder` act
        as, beyond what they hold; None when the role cannot be read from the index."""
        snapshot = self.rbac.snapshot()
        rules: list[Held] = []
        for namespace in namespaces:
            found = snapshot.roles.get(role_key(role.kind.value, role.name, namespace))
            if found is None:
                return None
            rules += [Held(r, namespace, GRANT_THROUGH, True) for r in found.rules]
        held = held_by(self.rbac.holdings(), holder.username, holder.groups)
        return compute_acting_as(rules, held, snapshot, compute_roles(policies))
