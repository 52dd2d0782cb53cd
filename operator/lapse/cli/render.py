"""What `kubectl lapse` shows: table rows, time left, detail views, colour — pure functions.

Every function takes the parsed models and `now`, so what a user reads for any state at any
moment is fixed by a unit test, not by a cluster or a clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import yaml

from lapse.core.activity import compute_activity_summary
from lapse.core.approvals import build_approval_requirement
from lapse.core.models import (
    AccessPolicy,
    AccessRequest,
    ApprovalRequirement,
    BreakGlass,
    GrantStatus,
    Phase,
    RoleKind,
    RoleRef,
    Subject,
    SubjectKind,
    UserInfo,
)

Grant = AccessRequest | BreakGlass

# The state shown before Lapse has written any status: the object exists, nothing was decided.
NEW = "New"
CLUSTER_WIDE = "(cluster-wide)"

COLUMNS = (
    "NAME",
    "KIND",
    "STATE",
    "SUBJECT",
    "ROLE",
    "NAMESPACE",
    "STARTS",
    "ENDS",
    "TIME LEFT",
    "APPROVALS",
    "AGE",
)
WIDE_COLUMNS = (*COLUMNS, "REQUESTER", "EXPIRES", "POLICY", "REASON")

_GREEN, _YELLOW, _RED, _DIM, _RESET = "\033[32m", "\033[33m", "\033[31m", "\033[2m", "\033[0m"
_PHASE_COLOURS = {
    Phase.ACTIVE.value: _GREEN,
    Phase.APPROVED.value: _GREEN,
    Phase.SCHEDULED.value: _GREEN,
    Phase.PENDING.value: _YELLOW,
    NEW: _YELLOW,
    Phase.DENIED.value: _RED,
    Phase.INVALID.value: _RED,
    Phase.REVOKED.value: _RED,
    Phase.EXPIRED.value: _DIM,
}


def use_colour(stream: TextIO, env: Mapping[str, str]) -> bool:
    """Colour only for a person at a terminal: a TTY, `NO_COLOR` unset, and not a dumb terminal."""
    if "NO_COLOR" in env or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def paint(text: str, state: str, colour: bool) -> str:
    code = _PHASE_COLOURS.get(state)
    return f"{code}{text}{_RESET}" if colour and code else text


def short_duration(value: timedelta) -> str:
    """A span in at most two units, as kubectl prints ages: `42s`, `4m30s`, `1h12m`, `3d4h`."""
    seconds = max(0, int(value.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 10:
        return f"{minutes}m{seconds}s" if seconds else f"{minutes}m"
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"


def timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def relative(value: datetime, now: datetime) -> str:
    """`in 1h12m` or `3m ago`, for a moment near now."""
    if value >= now:
        return f"in {short_duration(value - now)}"
    return f"{short_duration(now - value)} ago"


def state_of(status: GrantStatus) -> str:
    return status.phase.value if status.phase is not None else NEW


def time_left(status: GrantStatus, now: datetime) -> str:
    """How long the access still lasts: `1h12m`, `42s`, `expired 3m ago`, or `-`.

    An Active grant whose expiry has passed says `expired … ago` although Lapse has not yet
    written Expired: the access is over by the clock the user reads.
    """
    ends = status.expires_at
    if status.phase == Phase.ACTIVE and ends is not None:
        if ends > now:
            return short_duration(ends - now)
        return f"expired {short_duration(now - ends)} ago"
    if status.phase == Phase.EXPIRED and ends is not None:
        return f"expired {short_duration(now - ends)} ago" if ends <= now else "expired"
    return "-"


def starts_text(status: GrantStatus, now: datetime) -> str:
    """When the access begins or began, near now: `in 2h`, `5m ago`, or `-` before a decision."""
    starts = status.starts_at or status.granted_at
    if starts is None or status.phase not in (Phase.SCHEDULED, Phase.ACTIVE, Phase.EXPIRED):
        return "-"
    return relative(starts, now)


def ends_text(status: GrantStatus, now: datetime) -> str:
    """When the access ends or ended: `in 1h12m`, `3m ago`, or `-` when it never began."""
    ends = status.ended_at if status.phase is not None and status.phase.ended else None
    ends = ends or status.expires_at
    if ends is None or (status.phase is not None and status.phase.ended and not status.bindings):
        return "-"
    return relative(ends, now)


def role_text(role: RoleRef) -> str:
    """`edit` for a ClusterRole (what most people ask for), `Role/NAME` for a namespaced Role."""
    return role.name if role.kind == RoleKind.CLUSTER_ROLE else f"Role/{role.name}"


def role_sentence(role: RoleRef) -> str:
    return f"{role.kind.value} {role.name}"


def subject_text(subject: Subject | None, requester: UserInfo | None) -> str:
    """A user by name; a group or service account with its kind, so they are not mistaken."""
    if subject is None:
        return requester.username if requester is not None else "-"
    if subject.kind == SubjectKind.USER:
        return subject.name
    if subject.kind == SubjectKind.GROUP:
        return f"group:{subject.name}"
    return f"serviceaccount:{subject.namespace or '?'}:{subject.name}"


def subject_of(grant: Grant) -> Subject | None:
    if grant.status.subject is not None:
        return grant.status.subject
    return grant.spec.subject if isinstance(grant, AccessRequest) else None


def requester_of(grant: Grant) -> UserInfo | None:
    return grant.status.requester or grant.spec.requester


def namespaces_text(grant: Grant) -> str:
    if isinstance(grant, AccessRequest):
        return grant.metadata.namespace or "-"
    return ",".join(grant.spec.namespaces) if grant.spec.namespaces else CLUSTER_WIDE


def approval_requirement(
    request: AccessRequest, policy: AccessPolicy | None
) -> ApprovalRequirement | None:
    """What approval the request needs: as recorded in its status when it was decided (the same
    for everyone who can read the request), else as the policy says, if the reader may read it."""
    if request.status.approval is not None:
        return request.status.approval
    reason = "GitOpsApproved" if request.status.pull_request else ""
    return build_approval_requirement(reason, policy, None)


def approvers_of(request: AccessRequest) -> list[str]:
    """Distinct users who approved, in the order they did."""
    seen: list[str] = []
    for record in request.status.approvals:
        if record.decision == "Approve" and record.user.username not in seen:
            seen.append(record.user.username)
    return seen


def approvals_text(grant: Grant, policy: AccessPolicy | None) -> str:
    """`1/2` for approvers, `auto` for self-service, `gitops` for a merged PR, `-` otherwise."""
    if isinstance(grant, BreakGlass):
        return "-"
    requirement = approval_requirement(grant, policy)
    given = len(approvers_of(grant))
    if requirement is None:
        return str(given) if given else "-"
    if requirement.mode == "GitOps":
        return "gitops"
    if requirement.mode == "Auto":
        return "auto"
    return f"{given}/{requirement.required}"


@dataclass(frozen=True)
class Row:
    """One line of `kubectl lapse list`, uncoloured; `state` picks the colour."""

    cells: tuple[str, ...]
    state: str


def row(grant: Grant, policy: AccessPolicy | None, now: datetime, wide: bool = False) -> Row:
    status = grant.status
    created = grant.metadata.creation_timestamp
    cells = [
        grant.metadata.name,
        grant.kind,
        state_of(status),
        subject_text(subject_of(grant), requester_of(grant)),
        role_text(grant.spec.role),
        namespaces_text(grant),
        starts_text(status, now),
        ends_text(status, now),
        time_left(status, now),
        approvals_text(grant, policy),
        short_duration(now - created) if created is not None else "-",
    ]
    if wide:
        requester = requester_of(grant)
        reason = grant.spec.reason
        reference = grant.spec.ticket if isinstance(grant, AccessRequest) else grant.spec.incident
        cells += [
            requester.username if requester else "-",
            timestamp(status.expires_at) if status.expires_at else "-",
            status.policy or "-",
            f"[{reference}] {reason}" if reference else reason,
        ]
    return Row(tuple(cells), state_of(status))


def table(headers: Sequence[str], rows: Sequence[Row], colour: bool = False) -> str:
    """Columns padded like kubectl's (three spaces apart); widths from the uncoloured text."""
    widths = [len(h) for h in headers]
    for line in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, line.cells, strict=True)]
    state_column = list(headers).index("STATE") if "STATE" in headers else -1

    def render(cells: Sequence[str], state: str | None) -> str:
        out = []
        for index, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            padded = cell if index == len(cells) - 1 else cell.ljust(width)
            if state is not None and index == state_column:
                padded = paint(cell, state, colour) + " " * (width - len(cell))
            out.append(padded)
        return "   ".join(out).rstrip()

    lines = [render(headers, None)]
    lines += [render(line.cells, line.state) for line in rows]
    return "\n".join(lines)


def sort_key(grant: Grant) -> tuple[str, datetime, str]:
    created = grant.metadata.creation_timestamp or datetime.min.replace(tzinfo=UTC)
    return (grant.metadata.namespace or "", created, grant.metadata.name)


def _field(lines: list[str], label: str, value: str | None) -> None:
    if value:
        lines.append(f"{label + ':':<12} {value}")


def describe(grant: Grant, policy: AccessPolicy | None, now: datetime, colour: bool = False) -> str:
    """The detail view of `kubectl lapse get`: everything Lapse knows about one grant."""
    status = grant.status
    spec = grant.spec
    requester = requester_of(grant)
    lines: list[str] = []
    _field(lines, "Name", grant.metadata.name)
    _field(lines, "Namespace", grant.metadata.namespace)
    _field(lines, "Kind", grant.kind)
    state = state_of(status)
    shown = paint(state, state, colour)
    _field(lines, "State", f"{shown} ({status.reason})" if status.reason else shown)
    _field(lines, "Message", status.message)
    _field(lines, "Role", role_sentence(spec.role))
    if isinstance(grant, BreakGlass):
        _field(lines, "Namespaces", namespaces_text(grant))
    subject = subject_of(grant)
    _field(lines, "Subject", f"{subject.kind.value} {subject.name}" if subject else None)
    if requester is not None:
        groups = ", ".join(requester.groups)
        who = f"{requester.username} (groups: {groups})" if groups else requester.username
        _field(lines, "Requester", who)
    _field(lines, "Reason", spec.reason)
    if isinstance(grant, AccessRequest):
        _field(lines, "Ticket", grant.spec.ticket)
    else:
        _field(lines, "Incident", grant.spec.incident)
    _field(lines, "Duration", status.duration or spec.duration)
    _field(lines, "Policy", status.policy)
    _field(lines, "Gives", status.risk.summary if status.risk else None)
    if status.granted_at:
        _field(
            lines, "Granted", f"{timestamp(status.granted_at)} ({relative(status.granted_at, now)})"
        )
    ended = status.phase is not None and status.phase.ended
    if status.expires_at and ended and status.ended_at and status.ended_at < status.expires_at:
        # Ended early: the planned end is history, not a moment still to come.
        _field(lines, "Planned end", f"{timestamp(status.expires_at)} (not reached)")
    elif status.expires_at:
        _field(
            lines, "Expires", f"{timestamp(status.expires_at)} ({relative(status.expires_at, now)})"
        )
    if status.ended_at:
        _field(lines, "Ended", f"{timestamp(status.ended_at)} ({relative(status.ended_at, now)})")
    _field(lines, "Time left", time_left(status, now) if status.phase == Phase.ACTIVE else None)
    if status.activity is not None:
        # The whole record is `kubectl lapse report`'s; here, what it amounts to.
        _field(lines, "Activity", f"{compute_activity_summary(status.activity)} (lapse report)")
    if status.bindings:
        lines.append("Bindings (removed):" if ended else "Bindings:")
        for ref in status.bindings:
            where = f"{ref.namespace}/" if ref.namespace else ""
            lines.append(f"  {ref.kind} {where}{ref.name}")
    if status.footholds:
        lines.append("Made under the grant:")
        rows = [
            Row(
                (
                    f"{f.kind}/{f.name}",
                    f.namespace or "-",
                    f.service_account or "-",
                    f.action.value,
                    f.outcome or "(at the end)",
                ),
                "",
            )
            for f in status.footholds
        ]
        lines += _indent(table(("OBJECT", "NAMESPACE", "RUNS AS", "AT THE END", "OUTCOME"), rows))
    if isinstance(grant, AccessRequest):
        _describe_approvals(lines, grant, policy)
    else:
        _describe_review(lines, grant, now)
    if status.conditions:
        lines.append("Conditions:")
        rows = [
            Row(
                (
                    c.type,
                    c.status,
                    c.reason,
                    short_duration(now - c.last_transition_time),
                    c.message,
                ),
                "",
            )
            for c in status.conditions
        ]
        lines += _indent(table(("TYPE", "STATUS", "REASON", "AGE", "MESSAGE"), rows))
    if status.history:
        lines.append("History:")
        rows = [
            Row((timestamp(h.at), h.phase.value, h.reason, h.message), h.phase.value)
            for h in status.history
        ]
        lines += _indent(table(("AT", "PHASE", "REASON", "MESSAGE"), rows))
    return "\n".join(lines)


def _indent(text: str) -> list[str]:
    return [f"  {line}" for line in text.splitlines()]


def _describe_approvals(
    lines: list[str], request: AccessRequest, policy: AccessPolicy | None
) -> None:
    status = request.status
    if status.pull_request or status.commit:
        _field(lines, "GitOps", " ".join(p for p in (status.pull_request, status.commit) if p))
    summary = approvals_text(request, policy)
    if summary != "-" or status.approvals:
        lines.append(f"{'Approvals:':<12} {summary}")
    for record in status.approvals:
        comment = f"  {json.dumps(record.comment)}" if record.comment else ""
        lines.append(
            f"  {record.decision:<8} {record.user.username}  {timestamp(record.at)}{comment}"
        )


def _describe_review(lines: list[str], glass: BreakGlass, now: datetime) -> None:
    review = glass.status.review
    if review is not None:
        comment = f": {review.comment}" if review.comment else ""
        _field(
            lines,
            "Review",
            f"{review.verdict} by {review.reviewer.username} at {timestamp(review.at)}{comment}",
        )
    elif glass.status.review_deadline is not None:
        deadline = glass.status.review_deadline
        _field(lines, "Review", f"due {relative(deadline, now)} ({timestamp(deadline)})")


def dump(data: Any, fmt: str) -> str:
    """`-o json` and `-o yaml` of API objects, as kubectl prints them."""
    if fmt == "json":
        return json.dumps(data, indent=4, default=str)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip("\n")


def as_list(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several objects the way kubectl prints them: one `v1 List`."""
    return {"apiVersion": "v1", "kind": "List", "items": list(items), "metadata": {}}
