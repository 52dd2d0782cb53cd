"""BreakGlass handlers: refused or stamped at admission, granted on create, revoked on delete.

The validating webhook asks the same pure decision the operator asks, so a break-glass outside
policy is refused before it is stored, with the sentence saying why; the operator's own check
catches what reached the API while the webhook was away.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from lapse import metrics
from lapse.core.admission import compute_requester
from lapse.core.breakglass import compute_breakglass_refusal
from lapse.core.kinds import BREAK_GLASS
from lapse.core.requester import build_requester_stamp
from lapse.handlers.bodies import merge_patch, plain
from lapse.handlers.leading import leading, policies_in, services_of

RESOURCE = BREAK_GLASS.resource


@kopf.on.mutate(*RESOURCE, id="breakglass-requester", operations=["CREATE"])
async def stamp_requester(
    body: kopf.Body,
    userinfo: kopf.UserInfo,
    patch: kopf.Patch,
    warnings: list[str],
    memo: kopf.Memo,
    **_: Any,
) -> None:
    key = services_of(memo).key
    stamp = build_requester_stamp(
        BREAK_GLASS, plain(body), dict(userinfo), key=key, now=datetime.now(UTC)
    )
    warnings.extend(stamp.warnings)
    if stamp.refusal is not None:
        raise kopf.AdmissionError(stamp.refusal, code=422)
    merge_patch(patch, stamp.patch)


@kopf.on.validate(*RESOURCE, id="breakglass-create", operations=["CREATE"])
async def validate_create(
    spec: kopf.Spec,
    userinfo: kopf.UserInfo,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    asked = [str(n) for n in spec.get("namespaces") or []]
    existing = await services_of(memo).kube.existing_namespaces(asked)
    refusal = compute_breakglass_refusal(
        plain(spec),
        compute_requester(dict(userinfo)),
        await policies_in(memo, webhook=True),
        existing,
    )
    if refusal is not None:
        metrics.errors_total.labels(error="webhook").inc()
        raise kopf.AdmissionError(refusal, code=403)


# Review and revoke arrive as annotations (see lapse.core.actions); this checks who acts, then
# turns each into a signed record or refuses it. Fail-open: if it is down, the operator still
# acts only on signed records, so a raw annotation that slips through counts for nothing.
@kopf.on.mutate(*RESOURCE, id="breakglass-actions", operations=["UPDATE"], ignore_failures=True)
async def record_actions(
    body: kopf.Body,
    userinfo: kopf.UserInfo,
    patch: kopf.Patch,
    memo: kopf.Memo,
    old: Any = None,
    **_: Any,
) -> None:
    admission = await services_of(memo).breakglass.admit(
        plain(old or {}),
        plain(body),
        compute_requester(dict(userinfo)),
        await policies_in(memo, webhook=True),
    )
    if admission.refusal is not None:
        metrics.errors_total.labels(error="webhook").inc()
        raise kopf.AdmissionError(admission.refusal, code=403)
    if admission.annotations:
        patch.setdefault("metadata", {})["annotations"] = admission.annotations


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@leading
async def reconcile(
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    await services_of(memo).breakglass.reconcile(plain(body), await policies_in(memo))


@kopf.on.update(*RESOURCE, field="metadata.annotations")
@leading
async def act(
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    await services_of(memo).breakglass.act(plain(body), await policies_in(memo))


@kopf.on.delete(*RESOURCE)
@leading
async def revoke(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await services_of(memo).breakglass.deleted(plain(body))
