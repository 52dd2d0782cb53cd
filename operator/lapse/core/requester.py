"""Who asked, for every kind: stamped and signed at admission, verified before any grant.

The mutating webhook replaces whatever requester a user wrote with the API server's `userInfo`
and signs the spec with it; the keepers grant only what carries that signature, so an object
stored while the webhook was away (or edited around it) is never trusted. One definition for
AccessRequest and BreakGlass alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from lapse.core.actions import (
    REQUESTER_SIGNATURE_ANNOTATION,
    compute_annotations_refusal,
    sign_requester,
    verify_requester,
)
from lapse.core.admission import ADMITTED_AT_ANNOTATION, compute_requester
from lapse.core.bindings import format_time, parse_time
from lapse.core.kinds import FINALIZER, Kind
from lapse.core.models import AccessRequestSpec, BreakGlassSpec, Model

SPEC_MODELS: dict[str, type[Model]] = {
    "AccessRequest": AccessRequestSpec,
    "BreakGlass": BreakGlassSpec,
}


def signable_spec(kind: str, spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The spec in one canonical form, so defaults and nulls never break its signature."""
    try:
        return SPEC_MODELS[kind].model_validate(spec).to_wire()
    except ValidationError:
        return None


@dataclass(frozen=True)
class RequesterStamp:
    """The mutating webhook's answer at CREATE: a patch and warnings, or a refusal."""

    patch: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    refusal: str | None = None


def build_requester_stamp(
    kind: Kind,
    body: Mapping[str, Any],
    userinfo: Mapping[str, Any],
    *,
    key: bytes,
    now: datetime,
) -> RequesterStamp:
    """Stamp `spec.requester` from `userinfo`, sign the spec with it, add kopf's finalizer."""
    requester = compute_requester(userinfo)
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    written = spec.get("requester")
    warnings: tuple[str, ...] = ()
    if written and written.get("username") != requester.username:
        warnings = (
            "spec.requester is set by Lapse from your identity; the value given was replaced.",
        )
    refusal = compute_annotations_refusal(dict(metadata.get("annotations") or {}))
    if refusal is not None:
        return RequesterStamp(refusal=refusal)
    admitted_at = format_time(now)
    annotations = {ADMITTED_AT_ANNOTATION: admitted_at}
    stamped = signable_spec(kind.kind, {**spec, "requester": requester.to_wire()})
    if stamped is not None:
        annotations[REQUESTER_SIGNATURE_ANNOTATION] = sign_requester(
            kind.kind,
            metadata.get("namespace"),
            str(metadata.get("name") or ""),
            stamped,
            admitted_at,
            key,
        )
    patch_metadata: dict[str, Any] = {"annotations": annotations}
    finalizers = list(metadata.get("finalizers") or [])
    if kind.finalized and FINALIZER not in finalizers:
        # Added here so that the grant needs no extra write before it starts.
        patch_metadata["finalizers"] = [*finalizers, FINALIZER]
    return RequesterStamp(
        patch={"spec": {"requester": requester.model_dump()}, "metadata": patch_metadata},
        warnings=warnings,
    )


def compute_requester_verified(kind: str, body: Mapping[str, Any], key: bytes) -> bool:
    """Whether the spec (requester included) is what Lapse's CREATE webhook signed."""
    metadata = body.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    spec = signable_spec(kind, body.get("spec") or {})
    if spec is None:
        return False
    # Under generateName the webhook saw no name yet and signed an empty one.
    names = [str(metadata.get("name", ""))]
    if metadata.get("generateName"):
        names.append("")
    return any(
        verify_requester(
            kind,
            metadata.get("namespace"),
            name,
            spec,
            annotations.get(ADMITTED_AT_ANNOTATION),
            parse_time(metadata.get("creationTimestamp")),
            annotations.get(REQUESTER_SIGNATURE_ANNOTATION),
            key,
        )
        for name in names
    )


# Lapse's change to an object made around its admission webhook that kopf left unhandled
# (see lapse.unadmitted); its value is the resourceVersion it followed.
NUDGED_ANNOTATION = "lapse.dev/nudged"


def compute_unadmitted(kind: str, body: Mapping[str, Any], key: bytes) -> bool:
    """Whether `body` is a request or break-glass that did not pass Lapse's CREATE webhook
    (no valid signature of its requester) and has no phase yet: kopf, not the webhook, put
    its finalizer on it."""
    metadata = body.get("metadata") or {}
    if metadata.get("deletionTimestamp") or (body.get("status") or {}).get("phase"):
        return False
    return not compute_requester_verified(kind, body, key)


def build_nudge(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A JSON patch that changes `body` by one annotation, only as it was seen: an object
    changed since has had its event already."""
    metadata = body.get("metadata") or {}
    version = str(metadata.get("resourceVersion") or "")
    test = {"op": "test", "path": "/metadata/resourceVersion", "value": version}
    if metadata.get("annotations"):
        name = NUDGED_ANNOTATION.replace("~", "~0").replace("/", "~1")
        return [test, {"op": "add", "path": f"/metadata/annotations/{name}", "value": version}]
    return [
        test,
        {"op": "add", "path": "/metadata/annotations", "value": {NUDGED_ANNOTATION: version}},
    ]
