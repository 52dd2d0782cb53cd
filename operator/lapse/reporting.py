"""The record of every grant: one status patch, one Event, one audit line and the metrics.

Every change of phase of every kind goes through `Reporter.transition`, so the audit trail, the
Events and the status can never tell different stories; the keepers and the grant machinery
post their other Events and audit lines here too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from lapse import audit, metrics
from lapse.core.audit import build_audit_record
from lapse.core.breakglass import compute_audit_fields
from lapse.core.grants import GrantKey
from lapse.core.lifecycle import build_status_patch, compute_transition
from lapse.core.models import GrantStatus, Phase, RoleRef
from lapse.core.owners import parse_generation, parse_role
from lapse.crashpoints import crash_point
from lapse.kube import ApiError, KubeApi

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Where Events about cluster-scoped objects go, as Kubernetes itself does it.
CLUSTER_EVENTS_NAMESPACE = "default"
OUTCOMES = {
    Phase.ACTIVE: "granted",
    Phase.DENIED: "denied",
    Phase.INVALID: "invalid",
    Phase.EXPIRED: "expired",
    Phase.REVOKED: "revoked",
}


def involved_object(key: GrantKey) -> dict[str, Any]:
    involved: dict[str, Any] = {
        "apiVersion": key.api_version,
        "kind": key.kind,
        "name": key.name,
    }
    if key.namespace:
        involved["namespace"] = key.namespace
    if key.uid:
        involved["uid"] = key.uid
    return involved


class Reporter:
    def __init__(self, kube: KubeApi, clock: Clock) -> None:
        self.kube = kube
        self.clock = clock
        # Owners this process has recorded as ended: a second path to the same end is a no-op.
        self.ended: set[GrantKey] = set()
        # Fields an owner's audit lines carry beyond the grant (a break-glass's incident).
        self._audit_fields: dict[GrantKey, dict[str, str | None]] = {}

    def note(self, key: GrantKey, body: Mapping[str, Any]) -> None:
        """Remember what `key`'s audit lines carry beyond the grant, from its object."""
        fields = compute_audit_fields(key.kind, body)
        if fields:
            self._audit_fields[key] = fields

    async def event(self, key: GrantKey, type_: str, reason: str, message: str) -> None:
        """Post an Event on the owner; a failure is counted and logged, never fatal."""
        await self.post_event(
            involved_object(key), key.namespace or CLUSTER_EVENTS_NAMESPACE, type_, reason, message
        )

    async def post_event(
        self, involved: Mapping[str, Any], namespace: str, type_: str, reason: str, message: str
    ) -> None:
        """Post an Event on any object; a failure is counted and logged, never fatal."""
        try:
            await self.kube.post_event(
                dict(involved), namespace, type_, reason, message, self.clock()
            )
        except (ApiError, OSError, TimeoutError) as error:
            metrics.errors_total.labels(error="api").inc()
            logger.warning(
                "Could not post Event %s on %s %s: %s",
                reason,
                involved.get("kind"),
                involved.get("name"),
                error,
            )

    def audit(
        self,
        action: str,
        key: GrantKey,
        status: GrantStatus,
        role: RoleRef | None,
        reason: str,
        message: str,
        **extra: str | None,
    ) -> None:
        namespaces = [b.namespace for b in status.bindings if b.namespace]
        target = ",".join(namespaces) if namespaces else key.namespace
        if status.risk is not None:
            # What the grant gives travels with every record of it, notifications included.
            extra = {"risk": status.risk.summary, **extra}
        audit.write(
            build_audit_record(
                action=action,
                key=key,
                status=status,
                role=role,
                target_namespace=target,
                reason=reason,
                message=message,
                now=self.clock(),
                **{**self._audit_fields.get(key, {}), **extra},
            )
        )

    async def transition(
        self,
        key: GrantKey,
        *,
        role: RoleRef | None,
        status: GrantStatus,
        phase: Phase,
        reason: str,
        message: str,
        generation: int | None,
        event_type: str = "Normal",
        action: str | None = None,
        crash_prefix: str | None = None,
        **extra: str | None,
    ) -> GrantStatus:
        """Enter `phase`: one status patch, one Event, one audit line and the outcome metric.

        The audit line and the Event go out before the status is written: a crash or a failed
        write in between repeats them on the retry (at least once, the audit line with the same
        `id`), where the other order would lose them for good once the status says it is done.
        """
        new = compute_transition(status, phase, reason, message, self.clock(), generation)
        self.audit(action or phase.lower(), key, new, role, reason, message, **extra)
        await self.event(key, event_type, reason, message)
        if crash_prefix:
            crash_point(f"{crash_prefix}-before-status-write")
        await self.kube.patch_status(key, build_status_patch(new))
        if crash_prefix:
            crash_point(f"{crash_prefix}-after-status-write")
        if phase in OUTCOMES:
            metrics.requests_total.labels(kind=key.kind, outcome=OUTCOMES[phase]).inc()
        if phase.ended:
            self.ended.add(key)
        return new

    async def unreadable(
        self,
        key: GrantKey,
        body: Mapping[str, Any],
        status: GrantStatus,
        error: ValidationError,
        *,
        what: str,
    ) -> None:
        """An owner the models cannot read ends Invalid, saying where and why."""
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        metrics.errors_total.labels(error="invalid").inc()
        await self.transition(
            key,
            role=parse_role(body),
            status=status,
            phase=Phase.INVALID,
            reason="InvalidSpec",
            message=f"The {what} cannot be read: {where}: {first['msg']}.",
            generation=parse_generation(body),
            event_type="Warning",
        )
