"""Break-glass rules: who may break which glass for how long, and the review that follows.

Emergency access has no approval wait, so the whole decision happens up front: the validating
webhook refuses at admission with the sentence `compute_breakglass_decision` returns, and the
operator asks the same function again before it grants, for an object that reached the API while
the webhook was away. A duration over the policy's maximum is refused, never shortened: someone
mid-incident must know exactly when their access ends, and access cut short without warning
would end in the middle of the fix.

Afterwards an approver (never the one who broke the glass) reviews it through the action
annotations of `lapse.core.actions`; the review deadline and the optional revocation of
unreviewed access are fixed in the status at activation, so later policy edits change neither.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from lapse.core.actions import Action, Authority
from lapse.core.bindings import format_time
from lapse.core.conditions import compute_conditions, find_condition
from lapse.core.durations import DurationError, format_duration, parse_duration
from lapse.core.grants import Grant, GrantKey, compute_subject
from lapse.core.models import (
    AccessPolicy,
    BreakGlass,
    BreakGlassPolicy,
    BreakGlassReview,
    BreakGlassSpec,
    BreakGlassStatus,
    Phase,
    Review,
    UserInfo,
)
from lapse.core.policy import Outcome, matches_identities
from lapse.core.sentences import compute_quoted

CONDITION_REVIEWED = "Reviewed"
REVIEW_PENDING = "ReviewPending"
REVIEW_OVERDUE = "ReviewOverdue"
VERDICTS = ("Justified", "Unjustified")


@dataclass(frozen=True)
class BreakGlassDecision:
    """Grant (within `policy`, for `duration`), deny or call invalid, with a sentence."""

    outcome: Outcome
    reason: str
    message: str
    policy: str | None = None
    duration: timedelta | None = None
    review: BreakGlassReview | None = None


@dataclass(frozen=True)
class _Window:
    policy: AccessPolicy
    rules: BreakGlassPolicy
    longest: timedelta


def _window(policy: AccessPolicy) -> _Window | None:
    """The policy's break-glass rules with their durations read, or None when it has none or
    they are malformed: a broken policy grants nothing."""
    rules = policy.spec.break_glass
    if rules is None:
        return None
    try:
        longest = parse_duration(rules.max_duration)
        parse_duration(rules.review.deadline)
        if rules.review.revoke_if_unreviewed_after is not None:
            parse_duration(rules.review.revoke_if_unreviewed_after)
    except DurationError:
        return None
    return _Window(policy, rules, longest)


def _role_text(glass: BreakGlass) -> str:
    return f"{glass.spec.role.kind} {glass.spec.role.name}"


def _scope_text(namespaces: Sequence[str]) -> str:
    if not namespaces:
        return "cluster-wide"
    label = "namespace" if len(namespaces) == 1 else "namespaces"
    return f"in {label} {', '.join(namespaces)}"


def compute_breakglass_decision(
    glass: BreakGlass,
    policies: Sequence[AccessPolicy],
    existing_namespaces: Collection[str] | None = None,
) -> BreakGlassDecision:
    """Grant at once or refuse, naming the first check that failed.

    `existing_namespaces` holds which of the asked namespaces exist; None skips that check
    (the caller could not tell).
    """
    spec = glass.spec
    requester = spec.requester
    role = _role_text(glass)
    if requester is None:
        return BreakGlassDecision(
            Outcome.INVALID,
            "MissingRequester",
            "The break-glass carries no requester; it was not admitted through the Lapse webhook.",
        )
    try:
        asked = parse_duration(spec.duration)
    except DurationError as error:
        return BreakGlassDecision(Outcome.INVALID, "InvalidDuration", f"Duration {error}.")
    who = requester.username
    windows = [w for p in sorted(policies, key=lambda p: p.metadata.name) if (w := _window(p))]
    mine = [w for w in windows if matches_identities(w.rules.requesters, requester)]
    if not mine:
        groups = ", ".join(requester.groups) or "none"
        return BreakGlassDecision(
            Outcome.DENY,
            "NotAllowedToBreakGlass",
            f"{who} may not break glass: no AccessPolicy's breakGlass.requesters names this "
            f"user or one of their groups ({groups}).",
        )
    with_role = [
        w
        for w in mine
        if any(r.kind == spec.role.kind and r.name == spec.role.name for r in w.rules.roles)
    ]
    if not with_role:
        allowed = sorted({r.name for w in mine for r in w.rules.roles})
        return BreakGlassDecision(
            Outcome.DENY,
            "RoleNotAllowed",
            f"{who} may not break glass for {role}; break-glass roles allowed to them: "
            f"{', '.join(allowed) or 'none'}.",
        )
    with_incident = [w for w in with_role if spec.incident or not w.rules.require_incident]
    if not with_incident:
        return BreakGlassDecision(
            Outcome.DENY,
            "IncidentRequired",
            f"Breaking glass for {role} requires an incident reference: set spec.incident "
            "(kubectl lapse breakglass --incident INC-1234).",
        )
    fitting = [w for w in with_incident if asked <= w.longest]
    if not fitting:
        longest = max(w.longest for w in with_incident)
        return BreakGlassDecision(
            Outcome.DENY,
            "DurationExceedsPolicy",
            f"Duration {spec.duration} exceeds the {format_duration(longest)} maximum for "
            f"breaking glass with {role}; ask for {format_duration(longest)} or less (Lapse "
            "refuses rather than shortening it, so the access ends exactly when you asked).",
        )
    if existing_namespaces is not None:
        missing = [ns for ns in dict.fromkeys(spec.namespaces) if ns not in existing_namespaces]
        if missing:
            label = "Namespace" if len(missing) == 1 else "Namespaces"
            verb = "does" if len(missing) == 1 else "do"
            return BreakGlassDecision(
                Outcome.DENY,
                "NamespaceNotFound",
                f"{label} {', '.join(missing)} {verb} not exist; nothing was granted.",
            )
    chosen = fitting[0]
    name = chosen.policy.metadata.name
    return BreakGlassDecision(
        Outcome.GRANT,
        "BreakGlass",
        f"AccessPolicy {name} lets {who} break glass for {role} "
        f"{_scope_text(compute_namespaces(glass))} for {format_duration(asked)}.",
        policy=name,
        duration=asked,
        review=chosen.rules.review,
    )


def compute_breakglass_refusal(
    spec: Mapping[str, Any],
    requester: UserInfo,
    policies: Sequence[AccessPolicy],
    existing_namespaces: Collection[str] | None,
) -> str | None:
    """Why the webhook refuses a new BreakGlass, or None to admit it: the same decision the
    operator makes, taken before anything is stored."""
    if not requester.username:
        return "The API server named no user for this break-glass; Lapse cannot tell who asks."
    try:
        parsed = BreakGlassSpec.model_validate({**spec, "requester": requester.model_dump()})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"spec.{where}: {first['msg']}."
    glass = BreakGlass.model_validate({"metadata": {"name": "new"}, "spec": parsed.to_wire()})
    decision = compute_breakglass_decision(glass, policies, existing_namespaces)
    if decision.outcome == Outcome.GRANT:
        return None
    return decision.message


def compute_namespaces(glass: BreakGlass) -> tuple[str, ...]:
    """The namespaces to bind in, each once; empty means one cluster-wide binding."""
    return tuple(dict.fromkeys(glass.spec.namespaces))


def compute_breakglass_key(glass: BreakGlass) -> GrantKey:
    return GrantKey(
        kind=glass.kind, namespace=None, name=glass.metadata.name, uid=glass.metadata.uid or ""
    )


def compute_breakglass_grant(
    glass: BreakGlass, requester: UserInfo, policy: str | None, expires_at: datetime
) -> Grant:
    return Grant(
        key=compute_breakglass_key(glass),
        requester=requester,
        subject=compute_subject(requester, None),
        role=glass.spec.role,
        namespaces=compute_namespaces(glass),
        policy=policy,
        expires_at=expires_at,
    )


def compute_review_schedule(
    status: BreakGlassStatus, review: BreakGlassReview, now: datetime, generation: int | None
) -> BreakGlassStatus:
    """The granted status with what the review policy fixes at activation: the deadline, the
    optional revocation time, and a `Reviewed` condition saying the review is pending."""
    granted_at = status.granted_at or now
    deadline = granted_at + parse_duration(review.deadline)
    revoke_at = (
        granted_at + parse_duration(review.revoke_if_unreviewed_after)
        if review.revoke_if_unreviewed_after
        else None
    )
    conditions = compute_conditions(
        status.conditions,
        CONDITION_REVIEWED,
        "False",
        REVIEW_PENDING,
        f"A review is due by {format_time(deadline)}.",
        now,
        generation,
    )
    return status.model_copy(
        update={
            "review_deadline": deadline,
            "revoke_unreviewed_at": revoke_at,
            "conditions": conditions,
        }
    )


# The review ----------------------------------------------------------------------------------


def parse_verdict(text: str) -> tuple[str, str] | None:
    """`Justified: COMMENT` or `Unjustified: COMMENT` (case-insensitive verdict) → (verdict,
    comment); None when the text says neither."""
    head, _, comment = text.partition(":")
    verdict = next((v for v in VERDICTS if v.lower() == head.strip().lower()), None)
    if verdict is None:
        return None
    return verdict, comment.strip()


def compute_verdict_refusal(text: str) -> str | None:
    if parse_verdict(text) is None:
        return (
            f"lapse.dev/review must read 'Justified: COMMENT' or 'Unjustified: COMMENT', "
            f"not {text[:80]!r}."
        )
    return None


def was_granted(status: BreakGlassStatus) -> bool:
    return status.granted_at is not None and status.phase in (
        Phase.ACTIVE,
        Phase.EXPIRED,
        Phase.REVOKED,
    )


def compute_closed(glass: BreakGlass) -> dict[Action, str]:
    """Why an action cannot be taken on `glass` now, per action."""
    status = glass.status
    name = glass.metadata.name
    closed: dict[Action, str] = {}
    if not was_granted(status):
        closed[Action.REVIEW] = (
            f"break-glass {name} never granted access, so there is nothing to review"
        )
    elif status.review is not None:
        closed[Action.REVIEW] = (
            f"break-glass {name} was already reviewed by {status.review.reviewer.username} "
            f"at {format_time(status.review.at)}; a review is recorded once"
        )
    if status.phase != Phase.ACTIVE:
        phase = status.phase.value if status.phase else "not active yet"
        closed[Action.REVOKE] = f"break-glass {name} is {phase}; there is no access to revoke"
    return closed


def compute_authority(
    glass: BreakGlass,
    policies: Sequence[AccessPolicy],
    admin_groups: Collection[str],
) -> Authority:
    """Who may act on a break-glass: reviewers are the granting policy's review approvers
    (never whoever broke the glass); revoking is open to the requester, those reviewers and
    Lapse admins."""
    status = glass.status
    requester = status.requester or glass.spec.requester
    policy = next((p for p in policies if p.metadata.name == status.policy), None)
    rules = policy.spec.break_glass if policy is not None else None
    return Authority(
        actions=frozenset({Action.REVIEW, Action.REVOKE}),
        requester=requester,
        subject=status.subject,
        approvers=rules.review.approvers if rules is not None else None,
        approvers_of=f"break-glass reviews under AccessPolicy {status.policy or '(none)'}",
        admin_groups=frozenset(admin_groups),
        closed=compute_closed(glass),
        noun="break-glass",
        on_call=rules.requesters if rules is not None else None,
    )


def compute_reviewed(
    status: BreakGlassStatus,
    reviewer: UserInfo,
    text: str,
    at: datetime,
    now: datetime,
    generation: int | None,
) -> BreakGlassStatus:
    """The status with the review recorded; the record stays whatever the phase."""
    verdict, comment = parse_verdict(text) or ("Unjustified", text)
    review = Review(
        reviewer=reviewer,
        verdict="Justified" if verdict == "Justified" else "Unjustified",
        comment=comment[:2048] or None,
        at=at,
    )
    message = compute_quoted(f"Reviewed by {reviewer.username}: {verdict}", comment)
    conditions = compute_conditions(
        status.conditions, CONDITION_REVIEWED, "True", verdict, message, now, generation
    )
    return status.model_copy(update={"review": review, "conditions": conditions})


def is_overdue(status: BreakGlassStatus, now: datetime) -> bool:
    """Past its review deadline without a review (whether or not access is still active)."""
    return (
        was_granted(status)
        and status.review is None
        and status.review_deadline is not None
        and status.review_deadline <= now
    )


def compute_overdue(
    status: BreakGlassStatus, now: datetime, generation: int | None
) -> BreakGlassStatus:
    """The status with `Reviewed` saying the review is overdue."""
    deadline = format_time(status.review_deadline or now)
    conditions = compute_conditions(
        status.conditions,
        CONDITION_REVIEWED,
        "False",
        REVIEW_OVERDUE,
        f"No review arrived by the deadline, {deadline}.",
        now,
        generation,
    )
    return status.model_copy(update={"conditions": conditions})


class ReviewStep(StrEnum):
    """What a review deadline falling due asks for."""

    NOTHING = "Nothing"
    RAISE = "Raise"
    REVOKE = "Revoke"


def compute_review_step(status: BreakGlassStatus, now: datetime) -> ReviewStep:
    """At a review deadline: raise the alarm once, and revoke access still active when the
    policy said so; a reviewed break-glass needs nothing."""
    if not was_granted(status) or status.review is not None:
        return ReviewStep.NOTHING
    if (
        status.phase == Phase.ACTIVE
        and status.revoke_unreviewed_at is not None
        and status.revoke_unreviewed_at <= now
    ):
        return ReviewStep.REVOKE
    if is_overdue(status, now) and not is_flagged_overdue(status):
        return ReviewStep.RAISE
    return ReviewStep.NOTHING


def is_flagged_overdue(status: BreakGlassStatus) -> bool:
    condition = find_condition(status.conditions, CONDITION_REVIEWED)
    return condition is not None and condition.reason == REVIEW_OVERDUE


def compute_next_review_deadline(status: BreakGlassStatus, now: datetime) -> datetime | None:
    """The next time the review needs a look, or None when nothing is left to watch."""
    if not was_granted(status) or status.review is not None:
        return None
    candidates: list[datetime] = []
    if status.review_deadline is not None and not is_flagged_overdue(status):
        candidates.append(status.review_deadline)
    if status.phase == Phase.ACTIVE and status.revoke_unreviewed_at is not None:
        candidates.append(status.revoke_unreviewed_at)
    return min(candidates) if candidates else None


def compute_audit_fields(kind: str, body: Mapping[str, Any]) -> dict[str, str | None]:
    """What a break-glass's audit lines carry beyond the grant: the incident, so the trail
    can be read incident by incident."""
    if kind != "BreakGlass":
        return {}
    incident = (body.get("spec") or {}).get("incident")
    return {"incident": str(incident) if incident else None}
