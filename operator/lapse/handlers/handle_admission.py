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
from lapse.core.admission import (
    ADMITTED_AT_ANNOTATION,
    compute_create_refusal,
    compute_requester,
    compute_update_refusal,
)
from lapse.core.bindings import format_time
from lapse.core.models import GROUP, VERSION
from lapse.handlers.bodies import plain

RESOURCE = (GROUP, VERSION, "accessrequests")
# kopf's finalizer, added at admission so a new request needs no extra write before its grant.
FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


@kopf.on.mutate(*RESOURCE, id="requester", operations=["CREATE"])
async def stamp_requester(
    body: kopf.Body,
    spec: kopf.Spec,
    userinfo: kopf.UserInfo,
    patch: kopf.Patch,
    warnings: list[str],
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
    metadata = patch.setdefault("metadata", {})
    metadata["annotations"] = {ADMITTED_AT_ANNOTATION: format_time(datetime.now(UTC))}
    finalizers = list(body.get("metadata", {}).get("finalizers") or [])
    if FINALIZER not in finalizers:
        metadata["finalizers"] = [*finalizers, FINALIZER]


@kopf.on.validate(*RESOURCE, id="create", operations=["CREATE"])
async def validate_create(spec: kopf.Spec, userinfo: kopf.UserInfo, **_: Any) -> None:
    refusal = compute_create_refusal(plain(spec), compute_requester(dict(userinfo)))
    if refusal is not None:
        metrics.errors_total.labels(error="webhook").inc()
        raise kopf.AdmissionError(refusal, code=422)


# Fail-open on purpose: the CRD's CEL rule already refuses spec changes without Lapse running;
# failing closed here would also block removing a finalizer while the operator is down.
@kopf.on.validate(*RESOURCE, id="immutable", operations=["UPDATE"], ignore_failures=True)
async def validate_update(spec: kopf.Spec, old: Any = None, **_: Any) -> None:
    old_spec = plain((old or {}).get("spec") or {})
    refusal = compute_update_refusal(old_spec, plain(spec))
    if refusal is not None:
        metrics.errors_total.labels(error="webhook").inc()
        raise kopf.AdmissionError(refusal, code=422)
