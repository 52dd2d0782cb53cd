"""Admission webhooks: the requester is stamped from `userInfo`; the spec never changes.

The mutating webhook replaces whatever requester a user wrote with who the API server says is
asking; the validating webhook refuses spec edits and subjects a requester may not name. Both
fail closed (failurePolicy Fail): without them no request is admitted at all.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from lapse import metrics
from lapse.approving import signable_spec
from lapse.core.actions import (
    REQUESTER_SIGNATURE_ANNOTATION,
    compute_annotations_refusal,
    sign_requester,
)
from lapse.core.admission import (
    ADMITTED_AT_ANNOTATION,
    compute_finalizer_refusal,
    compute_request_refusal,
    compute_requester,
    compute_update_refusal,
)
from lapse.core.bindings import format_time
from lapse.core.kinds import ACCESS_REQUEST, FINALIZER
from lapse.core.models import AccessPolicy
from lapse.core.policy import is_trusted_applier
from lapse.handlers.bodies import plain

RESOURCE = ACCESS_REQUEST.resource


@kopf.on.mutate(*RESOURCE, id="requester", operations=["CREATE"])
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
    patch.setdefault("spec", {})["requester"] = {
        "username": requester.username,
        "groups": list(requester.groups),
        "uid": requester.uid,
    }
    refusal = compute_annotations_refusal(dict(body.get("metadata", {}).get("annotations") or {}))
    if refusal is not None:
        raise kopf.AdmissionError(refusal, code=422)
    admitted_at = format_time(datetime.now(UTC))
    metadata = patch.setdefault("metadata", {})
    metadata["annotations"] = {ADMITTED_AT_ANNOTATION: admitted_at}
    grantor = getattr(memo, "grantor", None)
    approvals = grantor.approvals if grantor is not None else None
    if approvals is None:
        raise kopf.AdmissionError("Lapse is starting; try again in a moment.", code=503)
    stamped = signable_spec({**plain(spec), "requester": requester.to_wire()})
    if stamped is not None:
        # The operator trusts spec.requester only with this signature: a request created
        # while this webhook was not registered is never granted.
        metadata["annotations"][REQUESTER_SIGNATURE_ANNOTATION] = sign_requester(
            "AccessRequest",
            body.get("metadata", {}).get("namespace"),
            str(body.get("metadata", {}).get("name") or ""),
            stamped,
            admitted_at,
            approvals.key,
        )
    finalizers = list(body.get("metadata", {}).get("finalizers") or [])
    if FINALIZER not in finalizers:
        metadata["finalizers"] = [*finalizers, FINALIZER]


@kopf.on.validate(*RESOURCE, id="create", operations=["CREATE"])
async def validate_create(
    spec: kopf.Spec,
    userinfo: kopf.UserInfo,
    lapse_policies: kopf.Index[str, AccessPolicy] | None = None,
    **_: Any,
) -> None:
    requester = compute_requester(dict(userinfo))
    policies = list(lapse_policies.get("all", [])) if lapse_policies is not None else []
    trusted = any(is_trusted_applier(p, requester) for p in policies)
    refusal = compute_request_refusal(plain(spec), requester, trusted_applier=trusted)
    if refusal is not None:
        metrics.errors_total.labels(error="webhook").inc()
        raise kopf.AdmissionError(refusal, code=422)


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
    memo: Any,
    old: Any = None,
    dryrun: bool = False,
    lapse_policies: kopf.Index[str, AccessPolicy] | None = None,
    **_: Any,
) -> None:
    grantor = getattr(memo, "grantor", None)
    approvals = grantor.approvals if grantor is not None else None
    if approvals is None:
        raise kopf.AdmissionError("Lapse is starting; try again in a moment.", code=503)
    policies = list(lapse_policies.get("all", [])) if lapse_policies is not None else []
    admission = approvals.admit(
        plain(old or {}),
        plain(body),
        compute_requester(dict(userinfo)),
        policies,
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
