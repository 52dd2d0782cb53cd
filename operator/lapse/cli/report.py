"""`kubectl lapse report`: what a grant's subject did with it, from the API server's audit log.

Lapse's audit sink keeps a bounded activity record in the grant's status (`lapse.activity`);
this prints it for people: writes with their objects and times, Secrets read, exec sessions,
refusals, then the counts. The break-glass review prints the same before the verdict.
"""

from __future__ import annotations

from typing import Any

from lapse.cli.client import Kube
from lapse.cli.errors import ExitCode
from lapse.cli.objects import Io, fetch, parse_grant, parse_ref
from lapse.cli.render import Grant, dump
from lapse.core.activity import compute_activity_summary, describe_entry
from lapse.core.bindings import format_time
from lapse.core.models import ActivityEntry, BreakGlass


def _section(title: str, entries: list[ActivityEntry]) -> list[str]:
    if not entries:
        return []
    return [f"{title}:", *(f"  {describe_entry(e)}" for e in entries)]


def activity_lines(grant: Grant) -> list[str]:
    """The activity record as a reviewer reads it; one line when there is none."""
    status = grant.status
    record = status.activity
    if record is None:
        if status.granted_at is None:
            return ["Activity: none, it never granted access."]
        return [
            "Activity: none recorded. Lapse has seen no API request by the subject during the "
            "grant (or the API server's audit webhook does not send to Lapse: docs/activity.md)."
        ]
    window = format_time(status.granted_at) if status.granted_at else "?"
    end = status.ended_at or status.expires_at
    window += f" to {format_time(end)}" if end else ""
    lines = [f"Activity ({window}): {compute_activity_summary(record)}."]
    lines += _section("Writes", record.writes)
    lines += _section("Secrets read", record.secret_reads)
    lines += _section("exec, attach, port-forward", record.connects)
    lines += _section("Refused", record.denied)
    if record.counts:
        lines.append("Requests by verb and resource:")
        lines += [f"  {c.count:>5}  {c.verb} {c.resource}" for c in record.counts]
    if record.omitted:
        lines.append(
            f"{record.omitted} more entries are only in the API server's audit log "
            "(search it by user and time)."
        )
    if record.updated_at:
        lines.append(
            f"From the API server's audit log, as of {format_time(record.updated_at)}; each "
            "time above is when the API server received the request."
        )
    return lines


def run_report(kube: Kube, io: Io, args: Any) -> int:
    body = fetch(kube, parse_ref(args.name, breakglass=args.breakglass), None)
    if args.output in ("json", "yaml"):
        io.result(dump((body.get("status") or {}).get("activity") or {}, args.output))
        return ExitCode.OK
    grant = parse_grant(body)
    kind = "BreakGlass" if isinstance(grant, BreakGlass) else "AccessRequest"
    where = f"{grant.metadata.namespace}/" if grant.metadata.namespace else ""
    subject = grant.status.subject
    who = f"{subject.kind.value.lower()} {subject.name}" if subject else "its subject"
    io.result(f"{kind} {where}{grant.metadata.name}: what {who} did with it")
    for line in activity_lines(grant):
        io.result(line)
    return ExitCode.OK
