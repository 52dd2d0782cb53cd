"""When a grant begins and ends: now, at a time asked for ahead, or when the grant it extends ends.

Requests are immutable, so the two ways to fit a grant to the work are new requests that say
when they begin: `spec.startAt` (a maintenance window approved ahead) and `spec.extends` (more
time on an active grant, judged like any request). Both are decided ahead and bound later, at
a moment this module computes; the window is fixed when it is decided, so a late binding never
lengthens access. Every function is pure: the keeper reads the objects and the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from lapse.core.approvals import compute_approval_deadline
from lapse.core.bindings import format_time
from lapse.core.durations import DurationError, format_duration, parse_duration
from lapse.core.grants import compute_subject
from lapse.core.models import (
    AccessPolicy,
    AccessRequest,
    AccessRequestStatus,
    ExtensionChain,
    Phase,
)

DEFAULT_MAX_LEAD_TIME = timedelta(days=7)
# A startAt this close to creation (or earlier) is "now": clocks differ, people round.
START_SLACK = timedelta(seconds=1)


@dataclass(frozen=True)
class Window:
    """When access begins and when it ends, decided once."""

    starts_at: datetime
    expires_at: datetime

    @property
    def duration(self) -> timedelta:
        return self.expires_at - self.starts_at


@dataclass(frozen=True)
class Refusal:
    """Why a request may not begin when it asks to: a CamelCase reason and a sentence."""

    reason: str
    message: str


def is_deferred(request: AccessRequest) -> bool:
    """Whether the request begins later than its decision: it extends a grant, or it names a
    start after its creation."""
    if request.spec.extends:
        return True
    start = request.spec.start_at
    created = request.metadata.creation_timestamp
    return start is not None and created is not None and start > created + START_SLACK


def compute_max_lead_time(policy: AccessPolicy) -> timedelta:
    try:
        return parse_duration(policy.spec.max_lead_time)
    except DurationError:
        return DEFAULT_MAX_LEAD_TIME


def compute_max_total_duration(policy: AccessPolicy) -> timedelta | None:
    """The policy's limit on a chain of extensions; twice its maxDuration when unset. None when
    the policy's durations cannot be read (a broken policy grants nothing anyway)."""
    try:
        if policy.spec.max_total_duration:
            return parse_duration(policy.spec.max_total_duration)
        return 2 * parse_duration(policy.spec.max_duration)
    except DurationError:
        return None


def compute_lead_refusal(request: AccessRequest, policy: AccessPolicy) -> Refusal | None:
    """A start further ahead than the policy allows is refused when the request is decided."""
    start = request.spec.start_at
    created = request.metadata.creation_timestamp
    if start is None or created is None:
        return None
    lead = start - created
    longest = compute_max_lead_time(policy)
    if lead <= longest:
        return None
    return Refusal(
        "LeadTimeExceedsPolicy",
        f"spec.startAt {format_time(start)} is {format_duration(lead)} ahead; AccessPolicy "
        f"{policy.metadata.name} allows requests at most {format_duration(longest)} ahead "
        "(maxLeadTime).",
    )


def compute_scheduled_window(request: AccessRequest, duration: timedelta, now: datetime) -> Window:
    """The window of a request that names its start: fixed from `startAt` for `duration`. An
    approval that arrives after `startAt` gives what is left of the window, never more."""
    created = request.metadata.creation_timestamp or now
    start = request.spec.start_at
    if start is None or start <= created + START_SLACK:
        return Window(now, now + duration)
    return Window(start, start + duration)


def compute_pending_deadline(
    request: AccessRequest, policy: AccessPolicy | None, duration: timedelta | None
) -> datetime | None:
    """When a pending request stops waiting: the policy's approval timeout, or the end of the
    window it asked for, whichever comes first."""
    created = request.metadata.creation_timestamp
    if created is None:
        return None
    deadline = compute_approval_deadline(created, policy)
    start = request.spec.start_at
    if start is not None and duration is not None and start > created + START_SLACK:
        deadline = min(deadline, start + duration)
    return deadline


def compute_extension_window(extended: AccessRequestStatus, duration: timedelta) -> Window | None:
    """An extension begins the moment the grant it extends ends, so there is no gap."""
    if extended.expires_at is None:
        return None
    return Window(extended.expires_at, extended.expires_at + duration)


def compute_extension_chain(name: str, extended: AccessRequestStatus) -> ExtensionChain | None:
    """The chain an extension of `name` (whose status is `extended`) would belong to."""
    started = extended.chain.started_at if extended.chain else extended.granted_at
    if started is None:
        return None
    return ExtensionChain(
        root=extended.chain.root if extended.chain else name,
        started_at=started,
        extensions=(extended.chain.extensions if extended.chain else 0) + 1,
    )


def compute_extension_refusal(
    extension: AccessRequest,
    extended: AccessRequest | None,
    policy: AccessPolicy,
    duration: timedelta,
) -> Refusal | None:
    """Why `extension` may not continue `extended`, or None when it may: the grant must be
    active, for the same role and subject, not already extended, and the chain within the
    policy's limits on count and total time."""
    target = extension.spec.extends or ""
    namespace = extension.metadata.namespace
    if target == extension.metadata.name:
        return Refusal("InvalidExtension", "A request cannot extend itself.")
    if extension.spec.start_at is not None:
        return Refusal(
            "InvalidExtension",
            "An extension begins when the grant it extends ends; it cannot also name startAt.",
        )
    if extended is None:
        return Refusal(
            "ExtendedNotFound",
            f"There is no AccessRequest {target} in namespace {namespace} to extend.",
        )
    status = extended.status
    if status.phase != Phase.ACTIVE or status.expires_at is None:
        ended = f" ({status.reason})" if status.reason else ""
        return Refusal(
            "ExtendedNotActive",
            f"AccessRequest {target} is {status.phase or 'not yet decided'}{ended}; only an "
            "active grant can be extended. Ask for access anew instead.",
        )
    if status.extended_by and status.extended_by != extension.metadata.name:
        return Refusal(
            "AlreadyExtended",
            f"AccessRequest {target} is already extended by AccessRequest {status.extended_by}; "
            "a grant is extended once, by the extension granted first.",
        )
    requester = extension.spec.requester
    subject = compute_subject(requester, extension.spec.subject) if requester else None
    if status.subject is not None and subject != status.subject:
        who = f"{status.subject.kind} {status.subject.name}"
        return Refusal(
            "ExtensionMismatch",
            f"AccessRequest {target} grants access to {who}; an extension must be for the "
            "same subject.",
        )
    role = extension.spec.role
    if extended.spec.role != role:
        return Refusal(
            "ExtensionMismatch",
            f"AccessRequest {target} grants {extended.spec.role.kind} {extended.spec.role.name}; "
            f"an extension must ask for the same role, not {role.kind} {role.name}.",
        )
    return compute_chain_refusal(extension, extended, policy, duration)


def compute_chain_refusal(
    extension: AccessRequest,
    extended: AccessRequest,
    policy: AccessPolicy,
    duration: timedelta,
) -> Refusal | None:
    target = extension.spec.extends or ""
    chain = compute_extension_chain(target, extended.status)
    window = compute_extension_window(extended.status, duration)
    if chain is None or window is None:
        return Refusal("ExtendedNotActive", f"AccessRequest {target} records no grant to extend.")
    name = policy.metadata.name
    limit = policy.spec.max_extensions
    if chain.extensions > limit:
        return Refusal(
            "TooManyExtensions",
            f"This would be extension {chain.extensions} of AccessRequest {chain.root}; "
            f"AccessPolicy {name} allows {limit} (maxExtensions).",
        )
    longest = compute_max_total_duration(policy)
    total = window.expires_at - chain.started_at
    if longest is None or total > longest:
        allowed = format_duration(longest) if longest else "no readable total"
        return Refusal(
            "ExceedsMaxTotalDuration",
            f"Extending by {format_duration(duration)} would make {format_duration(total)} in "
            f"all since AccessRequest {chain.root} was granted at "
            f"{format_time(chain.started_at)}; AccessPolicy {name} allows at most {allowed} "
            "(maxTotalDuration).",
        )
    return None
