"""Admission webhooks: the requester is stamped from `userInfo`; the spec never changes.

The mutating webhook replaces whatever requester a user wrote with who the API server says is
asking; the validating webhook refuses spec edits and subjects a requester may not name. Both
fail closed (failurePolicy Fail): without them no request is admitted at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from lapse import metrics
from lapse.core.admission import (
    INERT_UPDATE_HOOKS,
    compute_finalizer_refusal,
    compute_inert_update,
    compute_request_refusal,
    compute_requester,
    compute_update_refusal,
)
from lapse.core.kinds import ACCESS_REQUEST
from lapse.core.owners import parse_status
from lapse.core.policy import is_trusted_applier
from lapse.core.requester import build_requester_stamp
from lapse.handlers.bodies import merge_patch, plain
from lapse.handlers.leading import policies_in, services_of

RESOURCE = ACCESS_REQUEST.resource


@kopf.on.mutate(*RESOURCE, id="requester", operations=["CREATE"])
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
        ACCESS_REQUEST, plain(body), dict(userinfo), key=key, now=datetime.now(UTC)
    )
    warnings.extend(stamp.warnings)
    if stamp.refusal is not None:
        raise kopf.AdmissionError(stamp.refusal, code=422)
    merge_patch(patch, stamp.patch)


@kopf.on.validate(*RESOURCE, id="create", operations=["CREATE"])
async def validate_create(
    spec: kopf.Spec,
    userinfo: kopf.UserInfo,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    requester = compute_requester(dict(userinfo))
    policies = await policies_in(memo, webhook=True)
    trusted = any(is_trusted_applier(p, requester) for p in policies)
    refusal = compute_request_refusal(plain(spec), requester, trusted_applier=trusted)
    if refusal is not None:
        metrics.errors_total.labels(error="webhook").inc()
        raise kopf.AdmissionError(refusal, code=422)


def _has_ended(old: Any) -> bool:
    """Whether the request had ended before this update: its status is the API server's,
    written through the status subresource, never by the update being judged."""
    phase = parse_status(ACCESS_REQUEST.kind, plain(old)).phase
    return phase is not None and phase.ended


# Fail-open on purpose: the CRD's CEL rule already refuses spec changes without Lapse running;
# failing closed here would also block removing a finalizer while the operator is down.
@kopf.on.validate(*RESOURCE, id="immutable", operations=["UPDATE"], ignore_failures=True)
async def validate_update(spec: kopf.Spec, body: kopf.Body, old: Any = None, **_: Any) -> None:
    old_spec = plain((old or {}).get("spec") or {})
    old_meta = (old or {}).get("metadata") or {}
    refusal = compute_update_refusal(old_spec, plain(spec)) or compute_finalizer_refusal(
        list(old_meta.get("finalizers") or []),
        list(body.get("metadata", {}).get("finalizers") or []),
        deleting=bool(old_meta.get("deletionTimestamp")),
        ended=_has_ended(old or {}),
    )
    if refusal is not None:
        metrics.errors_total.labels(error="webhook").inc()
        raise kopf.AdmissionError(refusal, code=422)


# Approve, deny and revoke arrive as annotations; this turns each into a signed record or
# refuses it. Fail-open like the spec check: if it is down, the operator still acts only on
# signed records, so a raw annotation that slips through counts for nothing.
@kopf.on.mutate(*RESOURCE, id="actions", operations=["UPDATE"], ignore_failures=True)
async def record_actions(
    body: kopf.Body,
    userinfo: kopf.UserInfo,
    patch: kopf.Patch,
    memo: kopf.Memo,
    old: Any = None,
    dryrun: bool = False,
    **_: Any,
) -> None:
    admission = await services_of(memo).decisions.admit(
        plain(old or {}),
        plain(body),
        compute_requester(dict(userinfo)),
        await policies_in(memo, webhook=True),
        datetime.now(UTC),
    )
    if admission.refusal is not None:
        metrics.errors_total.labels(error="webhook").inc()
        raise kopf.AdmissionError(admission.refusal, code=403)
    if admission.annotations:
        patch.setdefault("metadata", {})["annotations"] = admission.annotations
    if not dryrun:
        for record in admission.records:
            metrics.decisions_total.labels(decision=record.action.value).inc()


def quick_update(hook: str, review: Mapping[str, Any]) -> bool:
    """Whether `review` is an UPDATE every one of those webhooks would allow unchanged,
    decided before kopf builds its admission context (a copy and a diff of the object). The
    API server sends none since their match condition says the same; an older configuration,
    or an API server that ignores match conditions, still does."""
    if hook not in INERT_UPDATE_HOOKS:
        return False
    request = review.get("request") or {}
    old, new = request.get("oldObject"), request.get("object")
    if request.get("operation") != "UPDATE" or not old or not new:
        return False
    return compute_inert_update(old, new)
