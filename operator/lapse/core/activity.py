"""Activity: what a grant's subject did with it, from the API server's audit events.

A grant says who may do what; a review asks what they did. The API server's audit webhook
sends `audit.k8s.io/v1` events; these functions read one, decide which grants it belongs to
(the acting user is the grant's subject, or the subject impersonated someone; it happened
inside the grant's window and namespaces) and fold it into a bounded record: counts by verb
and resource, every write with its object and time, Secrets read, exec sessions, refusals.
Whatever does not fit is counted as omitted; each kept entry carries its auditID, the way back
to the full audit log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lapse.core.bindings import parse_time
from lapse.core.footholds import compute_caller_keys, subject_index_key
from lapse.core.grants import GrantKey
from lapse.core.kinds import BREAK_GLASS
from lapse.core.models import (
    ActivityCount,
    ActivityEntry,
    ActivityRecord,
    Phase,
    Subject,
    SubjectKind,
)

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
READ_VERBS = frozenset({"get", "list", "watch"})
CONNECTS = frozenset({"exec", "attach", "portforward"})
DENIED_CODES = frozenset({401, 403})
# Bounds of the record in the grant's status: enough for a review, small beside etcd's limit.
MAX_WRITES = 100
MAX_SECRET_READS = 50
MAX_CONNECTS = 50
MAX_DENIED = 50
MAX_COUNTS = 50
# auditIDs remembered per grant, so a batch the API server sends again counts once.
MAX_SEEN = 4096


@dataclass(frozen=True)
class ActivityGrant:
    """The part of a grant the audit sink matches events against."""

    key: GrantKey
    subject: Subject
    # Namespaces the grant reaches; empty for a cluster-wide break-glass.
    namespaces: tuple[str, ...]
    start: datetime
    end: datetime

    @property
    def breakglass(self) -> bool:
        return self.key.kind == BREAK_GLASS.kind

    @property
    def subject_key(self) -> str:
        name = self.subject.name
        if self.subject.kind == SubjectKind.SERVICE_ACCOUNT:
            name = f"{self.subject.namespace or ''}:{name}"
        return subject_index_key(self.subject.kind, name)

    def covers(self, event: AuditEvent) -> bool:
        if not self.start <= event.at <= self.end:
            return False
        if not self.namespaces:
            return True
        return event.scope is not None and event.scope in self.namespaces


def build_activity_grant(kind: str, body: Mapping[str, Any]) -> ActivityGrant | None:
    """The grant's window and scope, or None for one that never held access."""
    status = body.get("status") or {}
    subject = status.get("subject") or {}
    metadata = body.get("metadata") or {}
    start = parse_time(status.get("grantedAt"))
    end = parse_time(status.get("endedAt")) or parse_time(status.get("expiresAt"))
    if start is None or end is None or not subject.get("name"):
        return None
    if status.get("phase") not in {p.value for p in (Phase.ACTIVE, Phase.EXPIRED, Phase.REVOKED)}:
        return None
    try:
        parsed = Subject.model_validate(subject)
    except ValueError:
        return None
    if kind == BREAK_GLASS.kind:
        namespaces = tuple(str(n) for n in (body.get("spec") or {}).get("namespaces") or ())
    else:
        namespaces = (str(metadata.get("namespace") or ""),)
    key = GrantKey(kind, metadata.get("namespace"), str(metadata["name"]), metadata.get("uid", ""))
    return ActivityGrant(key=key, subject=parsed, namespaces=namespaces, start=start, end=end)


@dataclass(frozen=True)
class AuditEvent:
    """The fields of an `audit.k8s.io/v1` Event that Lapse reads."""

    audit_id: str
    at: datetime
    verb: str
    # Who acted: the impersonated user if there is one, else the authenticated user.
    username: str
    groups: tuple[str, ...]
    # The authenticated user when they impersonated someone else.
    impersonator: str | None
    resource: str
    subresource: str
    namespace: str | None
    name: str | None
    code: int | None

    @property
    def scope(self) -> str | None:
        """The namespace the request reached: a Namespace object is its own."""
        if self.namespace:
            return self.namespace
        if self.resource == "namespaces" and self.name:
            return self.name
        return None

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def parse_audit_event(item: Mapping[str, Any]) -> AuditEvent | None:
    """A completed request's event, or None (other stages, unreadable events)."""
    if item.get("stage") != "ResponseComplete":
        return None
    at = parse_time(item.get("requestReceivedTimestamp") or item.get("stageTimestamp"))
    user = item.get("user") or {}
    if at is None or not user.get("username"):
        return None
    impersonated = item.get("impersonatedUser") or {}
    actor = impersonated if impersonated.get("username") else user
    ref = item.get("objectRef") or {}
    status = item.get("responseStatus") or {}
    code = status.get("code")
    return AuditEvent(
        audit_id=str(item.get("auditID") or ""),
        at=at,
        verb=str(item.get("verb") or ""),
        username=str(actor["username"]),
        groups=tuple(str(g) for g in actor.get("groups") or ()),
        impersonator=str(user["username"]) if actor is impersonated else None,
        resource=str(ref.get("resource") or ""),
        subresource=str(ref.get("subresource") or ""),
        namespace=ref.get("namespace") or None,
        name=ref.get("name") or None,
        code=int(code) if isinstance(code, int) else None,
    )


def compute_event_keys(event: AuditEvent) -> list[str]:
    """The subject keys whose grants an event may belong to: the acting user and their groups,
    and the user who impersonated them (impersonating is using one's own grant)."""
    keys = compute_caller_keys(event.username, event.groups)
    if event.impersonator:
        keys += compute_caller_keys(event.impersonator, ())
    return keys


def compute_matches(event: AuditEvent, grants: Iterable[ActivityGrant]) -> list[ActivityGrant]:
    """The grants, among those of the event's subject keys, whose window and scope cover it."""
    return [g for g in grants if g.covers(event)]


def is_write(event: AuditEvent) -> bool:
    return (
        event.verb in WRITE_VERBS
        and event.subresource not in CONNECTS
        and (event.code is None or event.code < 400)
    )


def _entry(event: AuditEvent) -> ActivityEntry:
    return ActivityEntry(
        at=event.at,
        verb=event.verb,
        resource=event.full_resource,
        namespace=event.namespace,
        name=event.name,
        code=event.code,
        audit_id=event.audit_id or None,
    )


@dataclass
class ActivityTally:
    """A grant's record while events arrive: folded in memory, written out as a record."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    lists: dict[str, list[ActivityEntry]] = field(default_factory=dict)
    seen: dict[str, None] = field(default_factory=dict)
    events: int = 0
    omitted: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None

    @classmethod
    def of(cls, record: ActivityRecord | None) -> ActivityTally:
        """Carry on from a record written earlier (by this process or the one before)."""
        record = record or ActivityRecord()
        tally = cls(
            counts={(c.verb, c.resource): c.count for c in record.counts},
            lists={
                "writes": list(record.writes),
                "secret_reads": list(record.secret_reads),
                "connects": list(record.connects),
                "denied": list(record.denied),
            },
            events=record.events,
            omitted=record.omitted,
            first_at=record.first_at,
            last_at=record.last_at,
        )
        for entries in tally.lists.values():
            for entry in entries:
                if entry.audit_id:
                    tally.seen[entry.audit_id] = None
        return tally

    def _keep(self, name: str, limit: int, event: AuditEvent) -> None:
        entries = self.lists.setdefault(name, [])
        if len(entries) < limit:
            entries.append(_entry(event))
        else:
            self.omitted += 1

    def add(self, event: AuditEvent) -> bool:
        """Fold one event in; False for one seen already (a batch sent again)."""
        if event.audit_id:
            if event.audit_id in self.seen:
                return False
            self.seen[event.audit_id] = None
            if len(self.seen) > MAX_SEEN:
                del self.seen[next(iter(self.seen))]
        self.events += 1
        self.first_at = min(self.first_at or event.at, event.at)
        self.last_at = max(self.last_at or event.at, event.at)
        count_key = (event.verb, event.full_resource)
        if count_key in self.counts or len(self.counts) < MAX_COUNTS:
            self.counts[count_key] = self.counts.get(count_key, 0) + 1
        if event.code in DENIED_CODES:
            self._keep("denied", MAX_DENIED, event)
        elif event.subresource in CONNECTS and event.resource == "pods":
            self._keep("connects", MAX_CONNECTS, event)
        elif is_write(event):
            self._keep("writes", MAX_WRITES, event)
        elif (
            event.resource == "secrets"
            and event.verb in READ_VERBS
            and (event.code is None or event.code < 400)
        ):
            self._keep("secret_reads", MAX_SECRET_READS, event)
        return True

    def build(self, now: datetime) -> ActivityRecord:
        """The bounded record for the grant's status, entries in time order."""

        def ordered(name: str) -> list[ActivityEntry]:
            return sorted(self.lists.get(name, []), key=lambda e: e.at)

        counts = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        return ActivityRecord(
            events=self.events,
            first_at=self.first_at,
            last_at=self.last_at,
            counts=[ActivityCount(verb=v, resource=r, count=n) for (v, r), n in counts],
            writes=ordered("writes"),
            secret_reads=ordered("secret_reads"),
            connects=ordered("connects"),
            denied=ordered("denied"),
            omitted=self.omitted,
            updated_at=now,
        )


def compute_activity_summary(record: ActivityRecord | None) -> str:
    """One line for an audit line or a notification."""
    if record is None or not record.events:
        return "no requests seen in the API server's audit log"

    def many(n: int, one: str, more: str) -> str:
        return f"{n} {one if n == 1 else more}"

    parts = [
        many(record.events, "request", "requests"),
        many(len(record.writes), "write", "writes"),
        many(len(record.secret_reads), "Secret read", "Secret reads"),
        many(len(record.connects), "exec session", "exec sessions"),
        many(len(record.denied), "refused", "refused"),
    ]
    if record.omitted:
        parts.append(f"{record.omitted} more in the audit log")
    return ", ".join(parts)


def describe_entry(entry: ActivityEntry) -> str:
    """`14:02:03Z  delete  pods payments/web-1  (200)`."""
    where = "/".join(p for p in (entry.namespace, entry.name) if p)
    code = f"  ({entry.code})" if entry.code is not None else ""
    when = entry.at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{when}  {entry.verb} {entry.resource}{' ' + where if where else ''}{code}"
