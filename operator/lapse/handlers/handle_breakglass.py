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
from lapse.breakglass import BreakGlassKeeper
from lapse.core.actions import (
    REQUESTER_SIGNATURE_ANNOTATION,
    compute_annotations_refusal,
    sign_requester,
)
from lapse.core.admission import ADMITTED_AT_ANNOTATION, compute_requester
from lapse.core.bindings import format_time
from lapse.core.breakglass import compute_breakglass_refusal, signable_spec
from lapse.core.kinds import BREAK_GLASS, FINALIZER
from lapse.core.models import AccessPolicy
from lapse.handlers.bodies import plain
from lapse.leader import leading

RESOURCE = BREAK_GLASS.resource


def _policies(index: kopf.Index[str, AccessPolicy] | None) -> list[AccessPolicy]:
    return list(index.get("all", [])) if index is not None else []


@kopf.on.mutate(*RESOURCE, id="breakglass-requester", operations=["CREATE"])
async def stamp_requester(
    body: kopf.Body,
    spec: kopf.Spec,
    userinfo: kopf.UserInfo,
    patch: kopf.Patch,
    warnings: list[str],
    memo: Any,
    **_: Any,
) -> None:
    requester = compute_requester(dict(userinfo))
    written = spec.get("requester")
    if written and written.get("username") != requester.username:
        warnings.append(
            "spec.requester is set by Lapse from your identity; the value given was replaced."
        )
    patch.setdefault("spec", {})["requester"] = requester.model_dump()
    refusal = compute_annotations_refusal(dict(body.get("metadata", {}).get("annotations") or {}))
    if refusal is not None:
        raise kopf.AdmissionError(refusal, code=422)
    keeper: BreakGlassKeeper | None = getattr(memo, "breakglass", None)
    if keeper is None or keeper.key is None:
        raise kopf.AdmissionError("Lapse is starting; try again in a moment.", code=503)
    admitted_at = format_time(datetime.now(UTC))
    metadata = patch.setdefault("metadata", {})
    metadata["annotations"] = {ADMITTED_AT_ANNOTATION: admitted_at}
    stamped = signable_spec({**plain(spec), "requester": requester.to_wire()})
    if stamped is not None:
        # The operator trusts spec.requester only with this signature: a break-glass created
        # while this webhook was not registered is never granted.
        metadata["annotations"][REQUESTER_SIGNATURE_ANNOTATION] = sign_requester(
            "BreakGlass",
            None,
            str(body.get("metadata", {}).get("name") or ""),
            stamped,
            admitted_at,
            keeper.key,
        )
    finalizers = list(body.get("metadata", {}).get("finalizers") or [])
    if FINALIZER not in finalizers:
        metadata["finalizers"] = [*finalizers, FINALIZER]


@kopf.on.validate(*RESOURCE, id="breakglass-create", operations=["CREATE"])
async def validate_create(
    spec: kopf.Spec,
    userinfo: kopf.UserInfo,
    memo: Any,
    lapse_policies: kopf.Index[str, AccessPolicy] | None = None,
    **_: Any,
) -> None:
    keeper: BreakGlassKeeper = memo.breakglass
    asked = [str(n) for n in spec.get("namespaces") or []]
    existing = await keeper.grantor.kube.existing_namespaces(asked)
    refusal = compute_breakglass_refusal(
        plain(spec), compute_requester(dict(userinfo)), _policies(lapse_policies), existing
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
    memo: Any,
    old: Any = None,
    lapse_policies: kopf.Index[str, AccessPolicy] | None = None,
    **_: Any,
) -> None:
    keeper: BreakGlassKeeper | None = getattr(memo, "breakglass", None)
    if keeper is None or keeper.key is None:
        raise kopf.AdmissionError("Lapse is starting; try again in a moment.", code=503)
    admission = keeper.admit(
        plain(old or {}), plain(body), compute_requester(dict(userinfo)), _policies(lapse_policies)
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
    memo: Any,
    lapse_policies: kopf.Index[str, AccessPolicy] | None = None,
    **_: Any,
) -> None:
    keeper: BreakGlassKeeper = memo.breakglass
    await keeper.reconcile(plain(body), _policies(lapse_policies))


@kopf.on.update(*RESOURCE, field="metadata.annotations")
@leading
async def act(
    body: kopf.Body,
    memo: Any,
    lapse_policies: kopf.Index[str, AccessPolicy] | None = None,
    **_: Any,
) -> None:
    keeper: BreakGlassKeeper = memo.breakglass
    await keeper.act(plain(body), _policies(lapse_policies))


@kopf.on.delete(*RESOURCE)
@leading
async def revoke(body: kopf.Body, memo: Any, **_: Any) -> None:
    keeper: BreakGlassKeeper = memo.breakglass
    await keeper.deleted(plain(body))
