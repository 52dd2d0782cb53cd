"""What a grant would give, read from the API server: the role's rules as it holds them
(aggregation included) and, for each thing they allow, whether the subject holds it already
(SubjectAccessReview). The words and the flags are the core's (`lapse.core.risk`)."""

from __future__ import annotations

import asyncio
import logging

from lapse.core.models import RiskSummary, RoleRef, Subject, UserInfo
from lapse.core.risk import build_risk_summary, compute_ranked_permissions
from lapse.core.verification import AccessCheck, build_access_review
from lapse.kube import ApiError, KubeApi

logger = logging.getLogger(__name__)
# Reviews per assessment: enough for the phrases a summary lists.
MAX_REVIEWS = 16


class Assessor:
    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube

    async def assess(
        self,
        role: RoleRef,
        namespace: str | None,
        subject: Subject,
        requester: UserInfo | None,
    ) -> RiskSummary | None:
        """The summary of `role` for `subject` in `namespace` (None: cluster-wide); None when
        the role cannot be read (it does not exist, or Lapse may not read it)."""
        try:
            rules = await self.kube.get_role_rules(role.kind.value, role.name, namespace)
        except ApiError as error:
            logger.warning("Could not read %s %s: %s", role.kind.value, role.name, error)
            return None
        if rules is None:
            return None
        permissions = compute_ranked_permissions(rules)[:MAX_REVIEWS]

        async def held(verb: str, group: str, resource: str) -> bool:
            check = AccessCheck(verb, group, resource, namespace)
            review = await self.kube.create_access_review(
                build_access_review(check, subject, requester)
            )
            return bool((review.get("status") or {}).get("allowed"))

        try:
            answers = await asyncio.gather(
                *(held(p.verb, p.group, p.resource) for p in permissions)
            )
        except ApiError as error:
            logger.warning("Could not ask what %s holds already: %s", subject.name, error)
            return build_risk_summary(f"{role.kind.value} {role.name}", rules, None)
        already = [p.text for p, yes in zip(permissions, answers, strict=True) if yes]
        checked = [p.text for p in permissions]
        return build_risk_summary(f"{role.kind.value} {role.name}", rules, already, checked)
