"""AccessRequest handlers: decide and grant on create, act on decisions, revoke on delete."""

from __future__ import annotations

from typing import Any

import kopf

from lapse.core.kinds import ACCESS_REQUEST
from lapse.handlers.bodies import plain
from lapse.handlers.leading import leading, policies_in, services_of

RESOURCE = ACCESS_REQUEST.resource


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@leading
async def reconcile(
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    await services_of(memo).requests.reconcile(plain(body), await policies_in(memo))


# Approvers act by annotating (see lapse.core.actions); the webhook turns that into a signed
# record in an annotation, and this is how the operator hears of it.
@kopf.on.update(*RESOURCE, field="metadata.annotations")
@leading
async def decide(
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    await services_of(memo).requests.reconcile(plain(body), await policies_in(memo))


@kopf.on.delete(*RESOURCE)
@leading
async def revoke(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await services_of(memo).grantor.owner_deleted(ACCESS_REQUEST.kind, plain(body))
