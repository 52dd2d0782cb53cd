"""Role drift: the role a grant binds changes while the grant is active.

A ClusterRole aggregated from labelled pieces grows when someone adds a piece, so a grant
approved for `view` can end up able to write. Lapse watches Roles and ClusterRoles (read-only)
and compares each change with what the grants that bind the role were decided on: a change is
recorded as the grant's new summary, reported (a Warning Event, an audit line and
`lapse_role_drift_total`), and, where the grant's policy says `onRoleChange: Revoke`, ends it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lapse import metrics
from lapse.core.grants import GrantKey
from lapse.core.models import AccessPolicy, Phase, RiskSummary
from lapse.core.owners import parse_generation, parse_role, parse_status
from lapse.core.risk import build_risk_summary, compute_permissions, compute_role_drift
from lapse.grantor import Grantor


class RoleDriftWatch:
    def __init__(self, grantor: Grantor) -> None:
        self.grantor = grantor
        self.kube = grantor.kube
        self.reporter = grantor.reporter

    async def role_changed(
        self,
        role: str,
        grants: Iterable[tuple[GrantKey, RiskSummary]],
        rules: Sequence[Mapping[str, Any]] | None,
        policies: Mapping[str, AccessPolicy],
    ) -> None:
        """`role` now has `rules` (None: it was deleted); act on each grant that binds it."""
        for key, recorded in grants:
            drift = compute_role_drift(role, recorded, rules)
            if drift is None:
                continue
            body = await self.kube.get_owner(key)
            if body is None:
                continue
            status = parse_status(key.kind, body)
            if status.phase != Phase.ACTIVE:
                continue
            if rules is not None:
                now = {p.text for p in compute_permissions(rules)}
                held = [p for p in recorded.already_had if p in now]
                risk = build_risk_summary(role, rules, held)
            else:
                risk = RiskSummary(summary=drift.message)
            await self.kube.patch_status(key, {"status": {"risk": risk.to_wire()}})
            status = status.model_copy(update={"risk": risk})
            policy = policies.get(status.policy or "")
            revoke = policy is not None and policy.spec.on_role_change == "Revoke"
            metrics.role_drift_total.labels(action="revoked" if revoke else "warned").inc()
            reason = "RoleDeleted" if rules is None else "RoleChanged"
            await self.reporter.event(key, "Warning", reason, drift.message)
            self.reporter.audit(
                "role-changed", key, status, parse_role(body), reason, drift.message
            )
            if revoke:
                assert policy is not None
                await self.grantor.end(
                    key,
                    role=parse_role(body),
                    status=status,
                    phase=Phase.REVOKED,
                    reason=reason,
                    message=f"{drift.message} AccessPolicy {policy.metadata.name} revokes a "
                    "grant whose role changes.",
                    generation=parse_generation(body),
                    event_type="Warning",
                )
