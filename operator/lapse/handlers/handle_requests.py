"""AccessRequest handlers: decide and grant on create, reschedule on resume, revoke on delete."""

from __future__ import annotations

from typing import Any

import kopf

from lapse.core.kinds import ACCESS_POLICY, ACCESS_REQUEST
from lapse.core.models import AccessPolicy
from lapse.core.policy import parse_policy
from lapse.grantor import Grantor
from lapse.handlers.bodies import plain
from lapse.leader import leading

RESOURCE = ACCESS_REQUEST.resource


@kopf.index(*ACCESS_POLICY.resource)
async def lapse_policies(
    name: str, body: kopf.Body, logger: kopf.Logger, **_: Any
) -> dict[str, AccessPolicy] | None:
    # kopf fills indexes before any handler runs, so no request is judged against a partial
    # set of policies at start-up.
    policy = parse_policy(plain(body))
    if policy is None:
        logger.warning(f"AccessPolicy {name} cannot be read and matches nothing.")
        return None
    return {"all": policy}


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@leading
async def reconcile(
    body: kopf.Body,
    memo: Any,
    lapse_policies: kopf.Index[str, AccessPolicy] | None = None,
    **_: Any,
) -> None:
    grantor: Grantor = memo.grantor
    policies = list(lapse_policies.get("all", [])) if lapse_policies is not None else []
    await grantor.reconcile_request(plain(body), policies)


# Approvers act by annotating (see lapse.core.actions); the webhook turns that into a signed
# record in an annotation, and this is how the operator hears of it.
@kopf.on.update(*RESOURCE, field="metadata.annotations")
@leading
async def decide(
    body: kopf.Body,
    memo: Any,
    lapse_policies: kopf.Index[str, AccessPolicy] | None = None,
    **_: Any,
) -> None:
    grantor: Grantor = memo.grantor
    policies = list(lapse_policies.get("all", [])) if lapse_policies is not None else []
    await grantor.reconcile_request(plain(body), policies)


@kopf.on.delete(*RESOURCE)
@leading
async def revoke(body: kopf.Body, memo: Any, **_: Any) -> None:
    grantor: Grantor = memo.grantor
    await grantor.owner_deleted("AccessRequest", plain(body))
