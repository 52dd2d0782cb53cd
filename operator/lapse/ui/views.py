"""What the page shows of a grant, a policy or an Event: plain JSON built from the models.

The browser renders and ticks; deciding what a person is shown — whether a request waits for
them, what a policy offers them, which story a grant tells — happens here, in pure functions
of the parsed objects and the user's identity, so a unit test fixes it without a browser.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from lapse.cli.render import Grant
from lapse.core.durations import DurationError, parse_duration
from lapse.core.models import (
    AccessPolicy,
    AccessRequest,
    BreakGlass,
    Phase,
    RoleKind,
    SubjectKind,
    UserInfo,
)
from lapse.core.policy import matches_identities

# Durations a form suggests, kept to those a policy allows.
SUGGESTED = ("15m", "30m", "1h", "2h", "4h", "8h")


def stamp(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def parse_grant_body(body: Mapping[str, Any]) -> Grant | None:
    """An AccessRequest or BreakGlass model, or None for an object the models cannot read."""
    try:
        if body.get("kind") == "BreakGlass":
            return BreakGlass.model_validate(body)
        return AccessRequest.model_validate(body)
    except ValidationError:
        return None


def _is(user: UserInfo | None, who: UserInfo | None) -> bool:
    return user is not None and who is not None and user.username == who.username


def _subject_is(grant: Grant, me: UserInfo | None) -> bool:
    subject = grant.status.subject
    if me is None or subject is None or subject.kind != SubjectKind.USER:
        return False
    return subject.name == me.username


def mine(grant: Grant, me: UserInfo | None) -> bool:
    """Asked by me, or granting me."""
    return _is(me, grant.spec.requester) or _subject_is(grant, me)


def waits_for(request: AccessRequest, me: UserInfo | None) -> bool:
    """Pending on approvers who include me, and neither asked by me nor for me (four eyes);
    the webhook has the last word, this only decides what the page lists."""
    approval = request.status.approval
    if me is None or request.status.phase != Phase.PENDING or approval is None:
        return False
    if approval.mode != "Approvers" or mine(request, me):
        return False
    if any(_is(me, record.user) for record in request.status.approvals):
        return False
    return matches_identities(approval.approvers, me)


def review_due(glass: BreakGlass) -> bool:
    return glass.status.review is None and glass.status.review_deadline is not None


def grant_view(grant: Grant, me: UserInfo | None) -> dict[str, Any]:
    """The fields the lists and the countdowns need."""
    status, spec = grant.status, grant.spec
    subject = status.subject
    view: dict[str, Any] = {
        "kind": grant.kind,
        "uid": grant.metadata.uid,
        "name": grant.metadata.name,
        "namespace": grant.metadata.namespace,
        "created": stamp(grant.metadata.creation_timestamp),
        "phase": status.phase.value if status.phase else "New",
        "reason": status.reason,
        "message": status.message,
        "role": f"{spec.role.kind.value} {spec.role.name}",
        "justification": spec.reason,
        "requester": spec.requester.username if spec.requester else None,
        "subject": f"{subject.kind.value} {subject.name}" if subject else None,
        "policy": status.policy,
        "duration": status.duration or spec.duration,
        "grantedAt": stamp(status.granted_at),
        "expiresAt": stamp(status.expires_at),
        "endedAt": stamp(status.ended_at),
        "risk": status.risk.summary if status.risk else None,
        "capabilities": list(status.risk.capabilities) if status.risk else [],
        "adds": list(status.risk.adds) if status.risk else [],
        "bindings": [
            {"kind": b.kind, "name": b.name, "namespace": b.namespace} for b in status.bindings
        ],
        "mine": mine(grant, me),
    }
    if isinstance(grant, AccessRequest):
        approval = grant.status.approval
        approvals = [
            {
                "user": record.user.username,
                "decision": record.decision,
                "at": stamp(record.at),
                "comment": record.comment,
            }
            for record in grant.status.approvals
        ]
        view |= {
            "ticket": grant.spec.ticket,
            "approval": approval.mode if approval else None,
            "required": approval.required if approval else 0,
            "approvers": (approval.approvers.users + approval.approvers.groups) if approval else [],
            "deadline": stamp(approval.deadline) if approval else None,
            "approvals": approvals,
            "waitsForMe": waits_for(grant, me),
        }
    else:
        review = grant.status.review
        view |= {
            "incident": grant.spec.incident,
            "namespaces": list(grant.spec.namespaces),
            "reviewDeadline": stamp(grant.status.review_deadline),
            "reviewDue": review_due(grant),
            "review": None
            if review is None
            else {
                "reviewer": review.reviewer.username,
                "verdict": review.verdict,
                "comment": review.comment,
                "at": stamp(review.at),
            },
        }
    return view


def story(grant: Grant, events: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """A grant's timeline, oldest first: its phases, its decisions, its conditions' flips
    and the Events about it (when the user may read them)."""
    entries: list[tuple[str, dict[str, Any]]] = []

    def add(at: datetime | str | None, source: str, title: str, text: str | None) -> None:
        when = stamp(at) if isinstance(at, datetime) else at
        entries.append((when or "", {"at": when, "source": source, "title": title, "text": text}))

    for step in grant.status.history:
        add(step.at, "phase", f"{step.phase.value} ({step.reason})", step.message)
    if isinstance(grant, AccessRequest):
        for record in grant.status.approvals:
            verb = "approved" if record.decision == "Approve" else "denied"
            add(record.at, "decision", f"{record.user.username} {verb}", record.comment)
    elif grant.status.review is not None:
        review = grant.status.review
        add(review.at, "review", f"{review.reviewer.username}: {review.verdict}", review.comment)
    for condition in grant.status.conditions:
        title = f"{condition.type}={condition.status} ({condition.reason})"
        add(condition.last_transition_time, "condition", title, condition.message)
    for event in events or ():
        at = event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
        title = f"{event.get('type', 'Normal')} {event.get('reason', '')}".strip()
        add(str(at) if at else None, "event", title, event.get("message"))
    entries.sort(key=lambda entry: entry[0])
    return [entry for _, entry in entries]


def _within(maximum: str, texts: Iterable[str]) -> list[str]:
    try:
        ceiling = parse_duration(maximum)
    except DurationError:
        return []
    chosen: list[str] = []
    for text in texts:
        try:
            if parse_duration(text) <= ceiling and text not in chosen:
                chosen.append(text)
        except DurationError:
            continue
    return chosen


def offers(policies: Sequence[AccessPolicy], me: UserInfo | None) -> dict[str, Any]:
    """What the forms offer: the roles, namespaces and durations of the policies that name
    the user as a requester (and, for break glass, as on-call)."""
    requests: list[dict[str, Any]] = []
    glass: list[dict[str, Any]] = []
    for policy in policies:
        spec = policy.spec
        if me is not None and matches_identities(spec.requesters, me) and spec.roles:
            requests.append(
                {
                    "policy": policy.metadata.name,
                    "roles": [
                        {"kind": r.kind.value, "name": r.name}
                        for r in spec.roles
                        if r.kind in (RoleKind.CLUSTER_ROLE, RoleKind.ROLE)
                    ],
                    "namespaces": list(spec.namespaces),
                    "defaultDuration": spec.default_duration,
                    "maxDuration": spec.max_duration,
                    "durations": _within(spec.max_duration, (spec.default_duration, *SUGGESTED)),
                    "approval": spec.approval.mode.value,
                }
            )
        bg = spec.break_glass
        if bg is not None and me is not None and matches_identities(bg.requesters, me):
            glass.append(
                {
                    "policy": policy.metadata.name,
                    "roles": [r.name for r in bg.roles],
                    "maxDuration": bg.max_duration,
                    "durations": _within(bg.max_duration, SUGGESTED),
                    "requireIncident": bg.require_incident,
                }
            )
    return {"requests": requests, "breakGlass": glass}
