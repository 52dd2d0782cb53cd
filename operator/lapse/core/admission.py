"""What the admission webhooks decide: who is asking, and whether the object may be stored.

Identity comes from the API server's `userInfo`, never from what the user wrote; the spec is
fixed once created. These are the rules; `lapse.webhooks` wires them to kopf.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from lapse.core.actions import ACTION_ANNOTATIONS, PROTECTED_ANNOTATIONS
from lapse.core.kinds import FINALIZER
from lapse.core.models import AccessRequestSpec, SubjectKind, UserInfo

ADMITTED_AT_ANNOTATION = "lapse.dev/admitted-at"


def compute_requester(userinfo: Mapping[str, Any]) -> UserInfo:
    """The requester as the API server authenticated it."""
    return UserInfo(
        username=str(userinfo.get("username", "")),
        groups=[str(g) for g in userinfo.get("groups") or []],
        uid=str(userinfo["uid"]) if userinfo.get("uid") else None,
    )


def compute_request_refusal(
    spec: Mapping[str, Any], requester: UserInfo, trusted_applier: bool = False
) -> str | None:
    """Why a new AccessRequest must be refused, or None to admit it; only a trusted applier
    (a GitOps controller a policy names) may name another subject."""
    if not requester.username:
        return "The API server named no user for this request; Lapse cannot tell who asks."
    try:
        parsed = AccessRequestSpec.model_validate(spec)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"spec.{where}: {first['msg']}."
    subject = parsed.subject
    if (
        subject is not None
        and not trusted_applier
        and not (subject.kind == SubjectKind.USER and subject.name == requester.username)
    ):
        return (
            f"spec.subject may name only yourself ({requester.username}); "
            "only a policy's trusted appliers may request access for someone else."
        )
    return None


def compute_update_refusal(old_spec: Mapping[str, Any], new_spec: Mapping[str, Any]) -> str | None:
    """Why an update must be refused: the spec is immutable, including the stamped requester."""
    if dict(old_spec) != dict(new_spec):
        return (
            "spec is immutable once created (requester included); "
            "delete this AccessRequest and create a new one to ask again."
        )
    return None


def compute_finalizer_refusal(
    old_finalizers: Sequence[str],
    new_finalizers: Sequence[str],
    deleting: bool,
    *,
    ended: bool = False,
) -> str | None:
    """Why removing Lapse's finalizer must be refused: before deletion, taking it off would let
    a later delete skip the revocation's Event and audit line. Once the request is being
    deleted Lapse removes it itself (and with the operator down, the fail-open webhook lets an
    admin do so); once it has ended there is nothing left to revoke, and an uninstall takes it
    off so that deleting the CRD later leaves nothing stuck."""
    if deleting or ended or FINALIZER not in old_finalizers or FINALIZER in new_finalizers:
        return None
    return (
        f"finalizer {FINALIZER} is Lapse's: it stays until Lapse has revoked and recorded the "
        "access; delete the AccessRequest instead."
    )


# The UPDATE webhooks of both kinds: kopf's own patch of each request (its finalizer, its
# progress) would reach them once a grant or more, and changes nothing they judge.
INERT_UPDATE_HOOKS = frozenset({"immutable", "actions", "breakglass-actions"})


# Where the API server finds what the UPDATE webhooks judge, in CEL.
_NEW, _OLD = "object.metadata.annotations", "oldObject.metadata.annotations"


def _cel_all(conditions: Sequence[str]) -> str:
    """`a && b && …` as nested conditionals: CEL's `&&` may evaluate both sides (the local
    API's interpreter does), its conditional evaluates one branch."""
    first, *rest = conditions
    return f"({first} ? {_cel_all(rest)} : false)" if rest else f"({first})"


def _cel_same(name: str) -> str:
    key = f"'{name}'"
    return (
        f"({key} in {_NEW} ? ({key} in {_OLD} ? {_NEW}[{key}] == {_OLD}[{key}] : false) "
        f": !({key} in {_OLD}))"
    )


def build_relevant_update_condition() -> str:
    """`compute_inert_update`, negated, as a CEL match condition: the API server calls the
    UPDATE webhooks only for an update they judge, and never sends kopf's own patches — a
    round trip, a TLS connection often, and the object twice over, for every grant.

    It must never be narrower than what the webhooks judge (an update sent needlessly is
    answered by the quick path; one not sent is not judged at all); the unit tests hold it to
    `compute_inert_update`. Each map is looked for once, and only Lapse's finalizer, the only
    one judged, is looked for: the local API's interpreter pays for every step."""
    names = (*PROTECTED_ANNOTATIONS, *ACTION_ANNOTATIONS)
    none_in = {side: _cel_all([f"!('{n}' in {side})" for n in names]) for side in (_NEW, _OLD)}
    annotations_same = (
        f"(has({_NEW}) ? (has({_OLD}) ? {_cel_all([_cel_same(n) for n in names])} "
        f": {none_in[_NEW]}) : (has({_OLD}) ? {none_in[_OLD]} : true))"
    )
    spec_same = (
        "(has(object.spec) ? object.spec : {}) == (has(oldObject.spec) ? oldObject.spec : {})"
    )
    finalizer = f"'{FINALIZER}'"
    finalizer_kept = (
        f"(has(oldObject.metadata.finalizers) ? ({finalizer} in oldObject.metadata.finalizers "
        f"? (has(object.metadata.finalizers) ? {finalizer} in object.metadata.finalizers "
        f": false) : true) : true)"
    )
    inert = _cel_all([spec_same, annotations_same, finalizer_kept])
    return (
        f"request.operation != 'UPDATE' ? true : (object == null ? true : "
        f"(oldObject == null ? true : !{inert}))"
    )


def compute_inert_update(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether an UPDATE of a request or break-glass changes nothing its UPDATE webhooks judge:
    the spec, the annotations Lapse writes or reads as actions, or Lapse's finalizer taken off
    (compute_finalizer_refusal judges no other). Such an update (kopf's own progress
    annotations, a label) is allowed unchanged by every one of them, so it is answered before
    kopf's admission machinery runs."""
    if (old.get("spec") or {}) != (new.get("spec") or {}):
        return False
    old_meta = old.get("metadata") or {}
    new_meta = new.get("metadata") or {}
    old_annotations = old_meta.get("annotations") or {}
    new_annotations = new_meta.get("annotations") or {}
    for name in (*PROTECTED_ANNOTATIONS, *ACTION_ANNOTATIONS):
        if old_annotations.get(name) != new_annotations.get(name):
            return False
    return FINALIZER not in (old_meta.get("finalizers") or ()) or FINALIZER in (
        new_meta.get("finalizers") or ()
    )
