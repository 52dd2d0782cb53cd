"""What a grant would give, read from the API server: the role's rules as it holds them
(aggregation included) and, for each thing they allow, whether the subject holds it already
(SubjectAccessReview). The words and the flags are the core's (`lapse.core.risk`)."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from lapse.core.models import RiskSummary, RoleRef, Subject, UserInfo
from lapse.core.risk import Permission, build_risk_summary, compute_ranked_permissions
from lapse.core.verification import AccessCheck, build_access_review
from lapse.kube import ApiError, KubeApi
from lapse.rbac import NoRoles, Roles

logger = logging.getLogger(__name__)
# Reviews per assessment: enough for the phrases a summary lists.
MAX_REVIEWS = 16


# Roles are few and their rules change rarely, yet a burst of requests for one role repeats
# the same pure work thousands of times (a quarter of the operator's CPU in a 1,000-request
# burst): the results are kept by the rules' own text, so a changed role is computed afresh.
@functools.lru_cache(maxsize=256)
def _ranked(rules: str) -> tuple[Permission, ...]:
    return tuple(compute_ranked_permissions(json.loads(rules)))


@functools.lru_cache(maxsize=1024)
def _summary(
    role: str, rules: str, held: tuple[str, ...] | None, checked: tuple[str, ...] | None
) -> RiskSummary:
    return build_risk_summary(role, json.loads(rules), held, checked)


def _text(rules: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(rules), sort_keys=True, separators=(",", ":"))


class Assessor:
    def __init__(self, kube: KubeApi, roles: Roles | None = None) -> None:
        self.kube = kube
        # The RBAC index: a grant's role is read from the watch, not once per grant.
        self.roles: Roles = roles or NoRoles()

    async def assess(
        self,
        role: RoleRef,
        namespace: str | None,
        subject: Subject,
        requester: UserInfo | None,
        *,
        compare: bool = True,
    ) -> RiskSummary | None:
        """The summary of `role` for `subject` in `namespace` (None: cluster-wide); None when
        the role cannot be read (it does not exist, or Lapse may not read it). With `compare`
        it tells what is new from what the subject holds already, at one access review per
        phrase; without, it says what the role gives."""
        where = namespace if role.kind.value == "Role" else None
        try:
            rules = self.roles.role_rules(role.kind.value, role.name, where)
            if rules is None:
                rules = await self.kube.get_role_rules(role.kind.value, role.name, namespace)
        except ApiError as error:
            logger.warning("Could not read %s %s: %s", role.kind.value, role.name, error)
            return None
        if rules is None:
            return None
        text = _text(rules)
        if not compare:
            return _summary(f"{role.kind.value} {role.name}", text, None, None)
        permissions = _ranked(text)[:MAX_REVIEWS]

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
            return _summary(f"{role.kind.value} {role.name}", text, None, None)
        already = tuple(p.text for p, yes in zip(permissions, answers, strict=True) if yes)
        checked = tuple(p.text for p in permissions)
        return _summary(f"{role.kind.value} {role.name}", text, already, checked)
