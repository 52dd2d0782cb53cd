"""Human decisions on existing objects: action annotations turned into signed records.

People act with plain kubectl (`kubectl annotate accessrequest NAME lapse.dev/approve="ok"`).
The mutating webhook sees the action annotation, checks the acting user from the API server's
`userInfo` may take it, removes the annotation and appends a record signed with the operator's
key to `lapse.dev/decisions`. The operator acts only on records whose signature verifies, so a
record written by hand, signed with another key or copied from another object counts for
nothing — even when the webhook was not there to stop it.

Everything here is pure and kind-agnostic: the caller says which actions a kind accepts and who
may take them (`Authority`), and passes the key in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field, ValidationError

from lapse.core.bindings import format_time
from lapse.core.models import Identities, Model, Subject, SubjectKind, UserInfo

PREFIX = "lapse.dev/"
DECISIONS_ANNOTATION = "lapse.dev/decisions"
REQUESTER_SIGNATURE_ANNOTATION = "lapse.dev/requester-signature"
# Annotations only the webhook writes: a user who sets or changes them is refused.
PROTECTED_ANNOTATIONS = (DECISIONS_ANNOTATION, REQUESTER_SIGNATURE_ANNOTATION)
MAX_COMMENT = 1024
# A signature over a CREATE is trusted only if it was made this close to the object's
# creation, so an old signed request replayed while the webhook is away is not.
REQUESTER_SIGNATURE_TOLERANCE_SECONDS = 300


class Action(StrEnum):
    APPROVE = "approve"
    DENY = "deny"
    REVOKE = "revoke"
    REVIEW = "review"

    @property
    def annotation(self) -> str:
        return PREFIX + self.value


ACTION_ANNOTATIONS = {a.annotation: a for a in Action}
# Actions only an approver (or reviewer) takes, never the requester or the subject.
APPROVER_ACTIONS = frozenset({Action.APPROVE, Action.DENY, Action.REVIEW})
PAST_TENSE = {
    Action.APPROVE: "approved",
    Action.DENY: "denied",
    Action.REVOKE: "revoked",
    Action.REVIEW: "reviewed",
}


@dataclass(frozen=True)
class ObjectIdentity:
    """What a record is bound to: copying it to any other object breaks its signature."""

    kind: str
    namespace: str | None
    name: str
    uid: str


class DecisionRecord(Model):
    """One signed decision, as stored in the `lapse.dev/decisions` annotation."""

    action: Action
    username: str
    groups: list[str] = Field(default_factory=list)
    at: str
    comment: str = ""
    signature: str = ""

    @property
    def user(self) -> UserInfo:
        return UserInfo(username=self.username, groups=self.groups)


@dataclass(frozen=True)
class Authority:
    """Who may act on one object: built per kind by its owner, judged here.

    `approvers` is None when no policy names any (then nobody may approve); `approvers_of`
    names them in messages ("AccessPolicy payments"); `admin_groups` may revoke anything.
    """

    actions: frozenset[Action]
    requester: UserInfo | None
    subject: Subject | None
    approvers: Identities | None
    approvers_of: str
    admin_groups: frozenset[str] = frozenset()
    # Why an action is no longer possible (e.g. "AccessRequest fix-db is Denied"), per action.
    closed: Mapping[Action, str] = field(default_factory=dict)
    noun: str = "request"
    # Who is on call for it (the policy's break-glass requesters): they may end it early.
    on_call: Identities | None = None


@dataclass(frozen=True)
class ActionAdmission:
    """The webhook's answer: a refusal, or the annotations to patch (None removes one)."""

    refusal: str | None = None
    annotations: dict[str, str | None] = field(default_factory=dict)
    records: tuple[DecisionRecord, ...] = ()


# Signing -------------------------------------------------------------------------------------


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _mac(key: bytes, payload: Any) -> str:
    digest = hmac.new(key, _canonical(payload), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _record_payload(record: DecisionRecord, target: ObjectIdentity) -> dict[str, Any]:
    return {
        "action": record.action.value,
        "username": record.username,
        "groups": list(record.groups),
        "at": record.at,
        "comment": record.comment,
        "kind": target.kind,
        "namespace": target.namespace or "",
        "name": target.name,
        "uid": target.uid,
    }


def build_record(
    action: Action,
    actor: UserInfo,
    comment: str,
    now: datetime,
    target: ObjectIdentity,
    key: bytes,
) -> DecisionRecord:
    """A decision by `actor` on `target`, signed over the record and the object's identity."""
    unsigned = DecisionRecord(
        action=action,
        username=actor.username,
        groups=list(actor.groups),
        at=format_time(now),
        comment=comment[:MAX_COMMENT],
    )
    return unsigned.model_copy(update={"signature": _mac(key, _record_payload(unsigned, target))})


def verify_record(record: DecisionRecord, target: ObjectIdentity, key: bytes) -> bool:
    expected = _mac(key, _record_payload(record, target))
    return bool(record.signature) and hmac.compare_digest(expected, record.signature)


def parse_decisions(text: str | None) -> list[Any]:
    """The raw entries of the decisions annotation; anything unreadable is an empty list."""
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def format_decisions(records: Sequence[DecisionRecord]) -> str:
    return json.dumps([r.model_dump(mode="json") for r in records], separators=(",", ":"))


@dataclass(frozen=True)
class VerifiedDecisions:
    records: tuple[DecisionRecord, ...]
    # How many entries did not verify: written by hand, another key or another object.
    forged: int


def compute_verified_decisions(
    annotations: Mapping[str, str], target: ObjectIdentity, key: bytes
) -> VerifiedDecisions:
    """The records of `target` whose signatures verify with `key`, in order; the rest counted."""
    verified: list[DecisionRecord] = []
    forged = 0
    for entry in parse_decisions(annotations.get(DECISIONS_ANNOTATION)):
        try:
            record = DecisionRecord.model_validate(entry)
        except ValidationError:
            forged += 1
            continue
        if verify_record(record, target, key):
            verified.append(record)
        else:
            forged += 1
    return VerifiedDecisions(tuple(verified), forged)


def compute_raw_actions(annotations: Mapping[str, str]) -> list[Action]:
    """Action annotations present on a stored object: the webhook never lets one stay, so
    each one reached the object around it and is never acted upon."""
    return [action for name, action in ACTION_ANNOTATIONS.items() if name in annotations]


# The requester's signature -------------------------------------------------------------------


def _requester_payload(
    kind: str, namespace: str | None, name: str, spec: Mapping[str, Any], admitted_at: str
) -> dict[str, Any]:
    return {
        "kind": kind,
        "namespace": namespace or "",
        "name": name,
        "spec": dict(spec),
        "admittedAt": admitted_at,
    }


def sign_requester(
    kind: str,
    namespace: str | None,
    name: str,
    spec: Mapping[str, Any],
    admitted_at: str,
    key: bytes,
) -> str:
    """Signed at CREATE over the spec with its stamped requester: the uid does not exist yet,
    so the admission time binds it instead (see `verify_requester`)."""
    return _mac(key, _requester_payload(kind, namespace, name, spec, admitted_at))


def verify_requester(
    kind: str,
    namespace: str | None,
    name: str,
    spec: Mapping[str, Any],
    admitted_at: str | None,
    created_at: datetime | None,
    signature: str | None,
    key: bytes,
) -> bool:
    """Whether the spec (requester included) is what the CREATE webhook signed, for an object
    created right then — a signature copied onto a later object of the same name fails."""
    if not signature or not admitted_at or created_at is None:
        return False
    try:
        admitted = datetime.fromisoformat(admitted_at.replace("Z", "+00:00"))
    except ValueError:
        return False
    if abs((admitted - created_at).total_seconds()) > REQUESTER_SIGNATURE_TOLERANCE_SECONDS:
        return False
    expected = sign_requester(kind, namespace, name, spec, admitted_at, key)
    return hmac.compare_digest(expected, signature)


# Who may act ---------------------------------------------------------------------------------


def _is(user: UserInfo, subject: Subject | None) -> bool:
    if subject is None:
        return False
    if subject.kind == SubjectKind.USER:
        return subject.name == user.username
    if subject.kind == SubjectKind.GROUP:
        return subject.name in user.groups
    return user.username == f"system:serviceaccount:{subject.namespace}:{subject.name}"


def is_approver(approvers: Identities | None, user: UserInfo) -> bool:
    if approvers is None:
        return False
    return user.username in approvers.users or any(g in approvers.groups for g in user.groups)


def compute_action_refusal(action: Action, actor: UserInfo, authority: Authority) -> str | None:
    """Why `actor` may not take `action`, in one sentence, or None when they may."""
    who = actor.username
    if action not in authority.actions:
        allowed = ", ".join(sorted(PREFIX + a.value for a in authority.actions)) or "none"
        return f"{PREFIX}{action.value} does not apply to this object; use one of: {allowed}."
    if action in authority.closed:
        return f"{who} may not {action.value}: {authority.closed[action]}."
    requester = authority.requester
    if action in APPROVER_ACTIONS:
        if requester is not None and requester.username == who:
            return f"{who} may not {action.value} their own {authority.noun}."
        if _is(actor, authority.subject):
            return f"{who} may not {action.value} a {authority.noun} that grants them access."
        if not is_approver(authority.approvers, actor):
            return f"{who} is not an approver of {authority.approvers_of}."
        return None
    # Revoking only ever takes access away, so more people may do it.
    if requester is not None and requester.username == who:
        return None
    if _is(actor, authority.subject) or is_approver(authority.approvers, actor):
        return None
    if is_approver(authority.on_call, actor):
        return None
    if any(g in authority.admin_groups for g in actor.groups):
        return None
    return (
        f"{who} may not revoke this {authority.noun}: only its requester, its subject, "
        f"an approver of {authority.approvers_of}, on-call or a Lapse admin may."
    )


def compute_action_admission(
    old_annotations: Mapping[str, str],
    new_annotations: Mapping[str, str],
    actor: UserInfo,
    authority: Authority,
    target: ObjectIdentity,
    key: bytes,
    now: datetime,
) -> ActionAdmission:
    """What the UPDATE webhook does with an object's annotations.

    A changed protected annotation is refused; each new or changed action annotation is
    checked against `authority`, removed, and recorded as a signed decision.
    """
    for name in PROTECTED_ANNOTATIONS:
        if old_annotations.get(name) != new_annotations.get(name):
            return ActionAdmission(refusal=f"{name} is written by Lapse alone; it cannot be set.")
    actions = [
        (action, new_annotations[name])
        for name, action in ACTION_ANNOTATIONS.items()
        if name in new_annotations and old_annotations.get(name) != new_annotations[name]
    ]
    stale = [name for name in ACTION_ANNOTATIONS if name in new_annotations]
    if not actions:
        return ActionAdmission()
    records: list[DecisionRecord] = []
    for action, comment in actions:
        refusal = compute_action_refusal(action, actor, authority)
        if refusal is not None:
            return ActionAdmission(refusal=refusal)
        records.append(build_record(action, actor, comment, now, target, key))
    existing = parse_decisions(old_annotations.get(DECISIONS_ANNOTATION))
    combined = json.dumps(
        [*existing, *(r.model_dump(mode="json") for r in records)], separators=(",", ":")
    )
    patch: dict[str, str | None] = dict.fromkeys(stale)
    patch[DECISIONS_ANNOTATION] = combined
    return ActionAdmission(annotations=patch, records=tuple(records))


def compute_annotations_refusal(annotations: Mapping[str, str]) -> str | None:
    """A new object may carry neither decisions nor actions: there is nothing to decide yet."""
    for name in (*PROTECTED_ANNOTATIONS, *ACTION_ANNOTATIONS):
        if name in annotations:
            return f"{name} cannot be set when creating an object; it is written by Lapse."
    return None
