"""`kubectl lapse explain`: the state of a grant in plain sentences, and what to do next.

A phase and a CamelCase reason tell an operator engineer enough; a developer waiting on access
wants to know who may approve, how many approvals are missing and when the request times out,
or what exactly was granted and for how long. These functions say it, from the models and `now`.
"""

from __future__ import annotations

import shlex
from datetime import datetime

from lapse.cli.render import (
    Grant,
    approval_requirement,
    approvers_of,
    relative,
    requester_of,
    role_sentence,
    short_duration,
    subject_of,
    timestamp,
)
from lapse.core.durations import DurationError, parse_duration
from lapse.core.footholds import describe_foothold
from lapse.core.models import (
    AccessPolicy,
    AccessRequest,
    BreakGlass,
    FootholdAction,
    Identities,
    Phase,
    Subject,
    SubjectKind,
)
from lapse.core.sentences import compute_quoted


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def join_words(words: list[str], last: str = "and") -> str:
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} {last} {words[-1]}"


def identities_text(identities: Identities) -> str:
    """`group payments-leads or user bob`; who is meant when a policy lists identities."""
    words = [f"group {g}" for g in identities.groups] + [f"user {u}" for u in identities.users]
    return join_words(words, "or") if words else "nobody (the policy names no one)"


def subject_sentence(subject: Subject | None) -> str:
    if subject is None:
        return "the requester"
    if subject.kind == SubjectKind.USER:
        return f"user {subject.name}"
    if subject.kind == SubjectKind.GROUP:
        return f"group {subject.name}"
    return f"service account {subject.namespace or '?'}/{subject.name}"


def reference(grant: Grant) -> str:
    """How the grant is named in commands: `NAME -n NS` or `bg/NAME`."""
    if isinstance(grant, BreakGlass):
        return f"bg/{grant.metadata.name}"
    return f"{grant.metadata.name} -n {grant.metadata.namespace}"


def title(grant: Grant) -> str:
    if isinstance(grant, BreakGlass):
        return f"BreakGlass {grant.metadata.name}"
    return f"AccessRequest {grant.metadata.namespace}/{grant.metadata.name}"


def where(grant: Grant) -> str:
    if isinstance(grant, AccessRequest):
        return f"in namespace {grant.metadata.namespace}"
    spaces = grant.spec.namespaces
    if not spaces:
        return "cluster-wide"
    return f"in {'namespace' if len(spaces) == 1 else 'namespaces'} {', '.join(spaces)}"


def pending_since(grant: Grant) -> datetime | None:
    entered = [h.at for h in grant.status.history if h.phase == Phase.PENDING]
    return entered[0] if entered else grant.metadata.creation_timestamp


def approval_sentences(
    request: AccessRequest, policy: AccessPolicy | None, now: datetime
) -> list[str]:
    """Who may approve, how many approvals are missing, and when the request times out."""
    status = request.status
    given = approvers_of(request)
    requirement = approval_requirement(request, policy)
    if requirement is None or requirement.mode != "Approvers":
        named = f"AccessPolicy {status.policy}" if status.policy else "The matching AccessPolicy"
        lines = [f"{named} says who may approve; your platform team can tell you who that is."]
        if given:
            lines.append(f"Approved so far by {join_words(given)}.")
        return lines
    missing = max(0, requirement.required - len(given))
    so_far = f"; it has {len(given)} (from {join_words(given)})" if given else "; it has none"
    lines = [
        f"It needs {plural(requirement.required, 'approval')} from "
        f"{identities_text(requirement.approvers)}{so_far}, so {missing} more "
        f"{'is' if missing == 1 else 'are'} missing."
    ]
    requester = requester_of(request)
    if requester is not None:
        lines.append(f"{requester.username} asked for it and cannot approve it.")
    deadline = requirement.deadline or policy_deadline(request, policy)
    if deadline is not None:
        if deadline > now:
            lines.append(
                f"If it is not approved, it times out {relative(deadline, now)} "
                f"(at {timestamp(deadline)})."
            )
        else:
            lines.append(f"Its approval window closed {relative(deadline, now)}.")
    if status.risk is not None and status.risk.summary:
        lines.append(status.risk.summary)
    lines.append(f"An approver runs: kubectl lapse approve {reference(request)}")
    return lines


def policy_deadline(request: AccessRequest, policy: AccessPolicy | None) -> datetime | None:
    """The approval deadline of a request decided before Lapse recorded it in the status."""
    since = pending_since(request)
    if policy is None or since is None:
        return None
    try:
        return since + parse_duration(policy.spec.approval.timeout)
    except DurationError:
        return None


def grant_sentences(grant: Grant, policy: AccessPolicy | None, now: datetime) -> list[str]:
    status = grant.status
    subject = subject_sentence(subject_of(grant))
    through = ""
    if status.bindings:
        names = [f"{b.kind} {b.name}" for b in status.bindings]
        through = f" through {join_words(names)}"
    incident = ""
    if isinstance(grant, BreakGlass) and grant.spec.incident:
        incident = f" for incident {grant.spec.incident}"
    role = role_sentence(grant.spec.role)
    lines = [f"It grants {role} {where(grant)} to {subject}{incident}{through}."]
    if isinstance(grant, AccessRequest):
        approvers = approvers_of(grant)
        requirement = approval_requirement(grant, policy)
        if grant.status.pull_request:
            lines.append(f"It was approved through {grant.status.pull_request}.")
        elif approvers:
            lines.append(f"It was approved by {join_words(approvers)}.")
        elif requirement is not None and requirement.mode == "Auto" and status.policy:
            lines.append(f"AccessPolicy {status.policy} grants it without approval.")
        elif status.policy:
            lines.append(f"AccessPolicy {status.policy} allowed it.")
    ends = status.expires_at
    if ends is not None and ends > now:
        lines.append(f"It expires in {short_duration(ends - now)}, at {timestamp(ends)}.")
    elif ends is not None:
        lines.append(
            f"Its time ran out {short_duration(now - ends)} ago; Lapse is removing the access."
        )
    return lines


def foothold_sentences(grant: Grant) -> list[str]:
    """What the grantee made that could outlive the grant, and what becomes of it."""
    footholds = grant.status.footholds or []
    if not footholds:
        return []
    pending = [f for f in footholds if f.outcome is None]
    remain = [f for f in footholds if f.outcome in ("Reported", "Kept")]
    lines = []
    if pending:
        going = [describe_foothold(f) for f in pending if f.action == FootholdAction.REMOVE]
        staying = [describe_foothold(f) for f in pending if f.action != FootholdAction.REMOVE]
        if going:
            lines.append(f"Made under it, removed when it ends: {join_words(going)}.")
        if staying:
            lines.append(f"Made under it, reported when it ends: {join_words(staying)}.")
    if remain:
        still = join_words([describe_foothold(f) for f in remain])
        lines.append(f"Made under it and still in place: {still}.")
    removed = [describe_foothold(f) for f in footholds if f.outcome == "Removed"]
    if removed:
        lines.append(f"Made under it and removed at its end: {join_words(removed)}.")
    ended = [describe_foothold(f) for f in footholds if f.outcome == "Ended"]
    if ended:
        lines.append(f"Ended at its end, with the tokens they held: {join_words(ended)}.")
    return lines


def review_sentences(glass: BreakGlass, policy: AccessPolicy | None, now: datetime) -> list[str]:
    review = glass.status.review
    if review is not None:
        return [
            compute_quoted(
                f"{review.reviewer.username} reviewed it as {review.verdict} "
                f"{relative(review.at, now)}",
                review.comment,
            )
        ]
    lines = []
    deadline = glass.status.review_deadline
    if deadline is not None:
        late = "is overdue since" if deadline <= now else "is due"
        lines.append(f"Its review {late} {relative(deadline, now)} (at {timestamp(deadline)}).")
    else:
        lines.append("It has not been reviewed yet.")
    if policy is not None and policy.spec.break_glass is not None:
        who = identities_text(policy.spec.break_glass.review.approvers)
        lines.append(f"Reviewers are {who}.")
    lines.append(
        f"A reviewer runs: kubectl lapse review {glass.metadata.name} "
        "--verdict justified|unjustified -m COMMENT"
    )
    return lines


def ask_again(grant: Grant) -> str:
    spec = grant.spec
    duration = grant.status.duration or spec.duration
    parts = ["kubectl", "lapse"]
    if isinstance(grant, AccessRequest):
        parts += ["request", spec.role.name, "-n", grant.metadata.namespace or "default"]
        if spec.role.kind.value != "ClusterRole":
            parts += ["--role-kind", spec.role.kind.value]
    else:
        parts += ["breakglass", spec.role.name, "--incident", grant.spec.incident or "INC-…"]
        if grant.spec.namespaces:
            parts += ["--namespace", ",".join(grant.spec.namespaces)]
    if duration:
        parts += ["--for", duration]
    parts += ["--reason", spec.reason]
    return shlex.join(parts)


def explain(grant: Grant, policy: AccessPolicy | None, now: datetime) -> str:
    """Plain sentences on one grant; `policy` is None when it is unknown or unreadable."""
    status = grant.status
    phase = status.phase
    head = title(grant)
    because = f" ({status.reason})" if status.reason else ""
    message = f": {status.message}" if status.message else "."
    lines: list[str]
    if phase is None:
        created = grant.metadata.creation_timestamp
        age = f" It was created {relative(created, now)}." if created else ""
        lines = [
            f"{head} has not been decided yet.{age}",
            "Lapse decides within seconds; if it stays like this, check that the Lapse operator "
            "is running.",
        ]
    elif phase == Phase.PENDING:
        # The sentences below say what the status message says, in full, when it is recorded.
        known = isinstance(grant, AccessRequest) and approval_requirement(grant, policy)
        lines = [f"{head} is waiting for approval{'.' if known else message}"]
        if isinstance(grant, AccessRequest):
            lines += approval_sentences(grant, policy, now)
    elif phase == Phase.APPROVED:
        lines = [f"{head} is approved; Lapse is creating its binding now."]
    elif phase == Phase.SCHEDULED:
        starts, ends = status.starts_at, status.expires_at
        window = (
            f" from {timestamp(starts)} ({relative(starts, now)}) until {timestamp(ends)}"
            if starts and ends
            else ""
        )
        lines = [
            f"{head} is approved and scheduled: it gives {role_sentence(grant.spec.role)} "
            f"{where(grant)} to {subject_sentence(subject_of(grant))}{window}.",
            "Nothing is bound until then; revoking it now cancels it.",
        ]
    elif phase == Phase.ACTIVE:
        lines = [f"{head} is active.", *grant_sentences(grant, policy, now)]
        if grant.status.risk is not None and grant.status.risk.summary:
            lines.append(grant.status.risk.summary)
        lines += foothold_sentences(grant)
        if isinstance(grant, BreakGlass):
            lines += review_sentences(grant, policy, now)
    elif phase == Phase.EXPIRED:
        ended = status.expires_at or status.ended_at
        when = f" {relative(ended, now)} (at {timestamp(ended)})" if ended else ""
        lines = [
            f"{head} expired{when}: it gave {role_sentence(grant.spec.role)} {where(grant)} "
            f"to {subject_sentence(subject_of(grant))}, and that access is gone.",
            f"To ask again: {ask_again(grant)}",
        ]
        lines[1:1] = foothold_sentences(grant)
        if isinstance(grant, BreakGlass):
            lines[1:1] = review_sentences(grant, policy, now)
    elif phase == Phase.REVOKED:
        ended = status.ended_at
        when = f" {relative(ended, now)}" if ended else ""
        lines = [f"{head} was revoked{when}{because}{message}", "Its access is gone."]
        lines += foothold_sentences(grant)
        if isinstance(grant, BreakGlass):
            lines += review_sentences(grant, policy, now)
    elif phase == Phase.DENIED:
        lines = [f"{head} was denied{because}{message}"]
        # A denial by an approver is already the status message; other denials name the rule.
        if isinstance(grant, AccessRequest) and status.reason != "DeniedByApprover":
            for record in grant.status.approvals:
                if record.decision == "Deny":
                    lines.append(
                        compute_quoted(f"{record.user.username} denied it", record.comment)
                    )
        lines.append("A denied request stays denied; asking again means a new request.")
    else:
        lines = [
            f"{head} is invalid{because}{message}",
            "Fix what the message names and create a new request; this one will not change.",
        ]
    return "\n".join(lines)
