"""AccessRequest handlers: decide and grant on create, act on decisions, revoke on delete."""

from __future__ import annotations

from typing import Any

import kopf

from lapse.core.kinds import ACCESS_POLICY, ACCESS_REQUEST
from lapse.core.models import AccessPolicy
from lapse.core.policy import parse_policy
from lapse.handlers.bodies import plain, policies_of
from lapse.handlers.leading import leading, services_of

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
    memo: kopf.Memo,
    lapse_policies: kopf.Index[str, AccessPolicy] | None = None,
    **_: Any,
) -> None:
    await services_of(memo).requests.reconcile(plain(body), policies_of(lapse_policies))


# Approvers act by annotating (see lapse.core.actions); the webhook turns that into a signed
# record in an annotation, and this is how the operator hears of it.
@kopf.on.update(*RESOURCE, field="metadata.annotations")
@leading
async def decide(
    body: kopf.Body,
    memo: kopf.Memo,
    lapse_policies: kopf.Index[str, AccessPolicy] | None = None,
    **_: Any,
) -> None:
    await services_of(memo).requests.reconcile(plain(body), policies_of(lapse_policies))


@kopf.on.delete(*RESOURCE)
@leading
async def revoke(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await services_of(memo).grantor.owner_deleted(ACCESS_REQUEST.kind, plain(body))
