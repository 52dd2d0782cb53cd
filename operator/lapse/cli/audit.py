"""`kubectl lapse audit verify` and `kubectl lapse audit report`: the exported trail checked, and
an access review for auditors.

`verify` answers the question a security team has about its copy of Lapse's trail: is it
whole and unaltered? It reads the files the sinks filled, gets the operator's signing key (from
a file, or from the cluster as the user, who must be allowed to read it), and prints the
verdict of `lapse.core.trailcheck`. `report` lists every grant that held access in a period
(`lapse.core.accessreview`), from the objects in the cluster, the exported trail, or both.

Both read the clock and the files here, at the edge; the core decides.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lapse.cli.accessreport import render_csv, render_html, render_json, render_table
from lapse.cli.client import Connection, Kube
from lapse.cli.errors import CliError, ExitCode
from lapse.cli.fleet import across
from lapse.cli.objects import Io, parse_grant
from lapse.cli.trailinput import STDIN, STDIN_NAME, TrailInput, read_trail
from lapse.core.accessreview import ReviewFilters, build_access_review
from lapse.core.durations import DurationError, parse_duration
from lapse.core.kinds import ACCESS_REQUEST, BREAK_GLASS
from lapse.core.models import AccessRequest, BreakGlass
from lapse.core.trailcheck import (
    Breach,
    TrailVerdict,
    Verdict,
    compute_entries,
    compute_trail_verdict,
    describe_stream,
    describe_verdict,
)

# Where the operator keeps its key (lapse.signing), by default; `--operator-namespace` and
# LAPSE_NAMESPACE say otherwise, as they do for the operator.
DEFAULT_OPERATOR_NAMESPACE = "lapse-system"
SECRET_NAME = "lapse-signing-key"
KEY_FIELD = "key"
_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")
_RELATIVE = re.compile(r"(\d+)([wd])(.*)")

# `audit verify`'s verdict: the trail is broken (2 stays "the command could not check").
EXIT_BROKEN = 1

Connect = Callable[[], Kube]


# Times -----------------------------------------------------------------------------------


def moment(text: str) -> datetime | timedelta:
    """`--since`/`--until`: an RFC 3339 time or date (UTC), or a span before now such as
    `30d`, `90d`, `2w`, `12h`. A span is resolved against the clock once, when the command
    runs."""
    text = text.strip()
    relative = _RELATIVE.fullmatch(text)
    try:
        if relative:
            count, unit, rest = relative.groups()
            days = int(count) * (7 if unit == "w" else 1)
            return timedelta(days=days) + (parse_duration(rest) if rest else timedelta())
        if re.fullmatch(r"[0-9hms]+", text):
            return parse_duration(text)
        found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, DurationError):
        raise ValueError(
            f"{text!r} is not a time such as 2026-10-01, 2026-10-01T00:00:00Z, 30d or 12h"
        ) from None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def resolve(given: datetime | timedelta, now: datetime) -> datetime:
    return now - given if isinstance(given, timedelta) else given.astimezone(UTC)


# The key ---------------------------------------------------------------------------------


def parse_key(data: bytes) -> bytes:
    """A key file holds the key as raw bytes, or base64 (as the Secret's `data.key` shows
    it): base64 when the whole file is base64 text of 32 bytes or more, raw otherwise."""
    text = data.strip()
    if _BASE64.fullmatch(text):
        try:
            decoded = base64.b64decode(text, validate=True)
        except binascii.Error:
            decoded = b""
        if len(decoded) >= 32:
            return decoded
    return data


def read_key_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror or error}", ExitCode.USAGE) from None
    if not data.strip():
        raise CliError(f"{path} is empty: it should hold the signing key", ExitCode.USAGE)
    return parse_key(data)


def read_cluster_key(kube: Kube, namespace: str) -> bytes:
    """The operator's key from its Secret, read as the user: auditors are given `get` on that
    one Secret (see docs/cli.md), nobody else needs it."""
    try:
        data = kube.secret_data(namespace, SECRET_NAME)
    except CliError as error:
        raise CliError(
            f"{error.message}. The signing key is needed to verify the trail: ask for `get` on "
            f"secret {SECRET_NAME} in namespace {namespace}, or pass --key-file "
            "(--operator-namespace if Lapse runs elsewhere)",
            ExitCode.USAGE,
        ) from None
    encoded = data.get(KEY_FIELD)
    key = base64.b64decode(encoded) if encoded else b""
    if len(key) < 32:
        raise CliError(
            f"secret {namespace}/{SECRET_NAME} holds no usable '{KEY_FIELD}'", ExitCode.USAGE
        )
    return key


def _key(connect: Connect, args: Any) -> bytes:
    if args.key_file:
        return read_key_file(args.key_file)
    try:
        kube = connect()
    except CliError as error:
        raise CliError(
            f"{error.message} (the key comes from the cluster unless --key-file names it)",
            ExitCode.USAGE,
        ) from None
    return read_cluster_key(kube, args.operator_namespace)


def _read(paths: Sequence[str]) -> TrailInput:
    if list(paths).count(STDIN) > 1:
        raise CliError("standard input (-) can be read only once", ExitCode.USAGE)
    return read_trail(paths)


# verify ----------------------------------------------------------------------------------


def verdict_lines(verdict: TrailVerdict) -> list[str]:
    """Each broken stream with the record that breaks it, then the summary."""
    lines: list[str] = []
    for stream in verdict.streams:
        breakage = stream.breakage
        if stream.verdict != Verdict.BROKEN or breakage is None:
            continue
        where = f"{breakage.file}:{breakage.line}"
        record = f"seq {breakage.seq}" if breakage.seq is not None else "a record"
        lines.append(f"BROKEN {describe_stream(stream)}")
        lines.append(f"  {where} ({record}): {breakage.breach.value}: {breakage.detail}")
        if stream.last_seq:
            lines.append(f"  whole and in order up to seq {stream.last_seq}")
    for stray in verdict.strays:
        lines.append(f"BROKEN {stray.file}:{stray.line}: {stray.breach.value}: {stray.detail}")
    firsts = [s.breakage for s in verdict.streams if s.breakage is not None]
    if (
        verdict.streams
        and len(firsts) == len(verdict.streams)
        and all(b.breach == Breach.BAD_SIGNATURE and b.seq == 1 for b in firsts)
    ):
        lines.append("Every stream fails its first signature: is this the operator's key?")
    lines.append(describe_verdict(verdict))
    return lines


def run_audit_verify(connect: Connect, io: Io, args: Any) -> int:
    found = _read(args.files)
    if not found.items:
        names = ", ".join(STDIN_NAME if p == STDIN else p for p in args.files)
        raise CliError(
            f"no Lapse trail records in {names} ({found.lines} lines read)", ExitCode.USAGE
        )
    verdict = compute_trail_verdict(found.items, _key(connect, args))
    if args.output == "json":
        wire = verdict.to_wire()
        io.result(
            json.dumps(
                {
                    "intact": verdict.intact,
                    "summary": describe_verdict(verdict),
                    **wire,
                    "lines": found.lines,
                    "skippedLines": found.skipped,
                },
                indent=2,
            )
        )
    else:
        for line in verdict_lines(verdict):
            io.result(line)
        if found.skipped:
            io.progress(f"{found.skipped} line(s) held no Lapse record and were passed over.")
    return ExitCode.OK if verdict.intact else EXIT_BROKEN


# report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterGrants:
    """The grants read from the cluster as the user, and what had to be left out."""

    grants: list[AccessRequest | BreakGlass]
    # Why something is missing (break-glasses not listable, an object unreadable): said to
    # the reader of the review, never fatal.
    warnings: list[str]
    # The kubeconfig's name for the cluster, which the rows carry, and the source a report names.
    cluster: str | None
    source: str


def read_cluster_grants(
    kube: Kube, namespace: str | None, *, cluster: str | None = None, narrowing: str
) -> ClusterGrants:
    """Every AccessRequest (in `namespace`, or all) and every BreakGlass the user may list:
    what `audit report` and the web page's access review both read. `narrowing` tells whoever
    may not list requests everywhere how to name one namespace."""
    try:
        bodies = kube.list(ACCESS_REQUEST, namespace)
    except CliError as error:
        if namespace is not None:
            raise
        raise CliError(
            f"{error.message} (to review one namespace you may read, {narrowing})"
        ) from None
    warnings: list[str] = []
    try:
        bodies += kube.list(BREAK_GLASS, None)
    except CliError as error:
        warnings.append(f"break-glasses left out: {error.message}")
    grants: list[AccessRequest | BreakGlass] = []
    for body in bodies:
        try:
            grants.append(parse_grant(body))
        except CliError as error:
            warnings.append(f"left out: {error.message}")
    named = cluster or kube.cluster
    return ClusterGrants(grants, warnings, named, f"cluster {named or kube.server}")


@dataclass(frozen=True)
class FleetSource:
    """`audit report --contexts …`: the clusters whose objects the review reads."""

    connection: Connection
    contexts: list[str]


def run_audit_report(
    connect: Connect, io: Io, args: Any, *, fleet: FleetSource | None = None
) -> int:
    now = datetime.now(UTC)
    since, until = resolve(args.since, now), resolve(args.until or timedelta(), now)
    if since > until:
        raise CliError(
            f"--since ({since:%Y-%m-%dT%H:%M:%SZ}) is after --until ({until:%Y-%m-%dT%H:%M:%SZ})",
            ExitCode.USAGE,
        )
    namespace = getattr(args, "namespace", None)
    files: list[str] = [path for given in args.from_files or [] for path in given]
    grants: list[AccessRequest | BreakGlass] = []
    cluster = args.cluster
    sources = []
    per_cluster: dict[str, list[AccessRequest | BreakGlass]] = {}
    unreachable = False
    if fleet is not None and (not files or args.with_cluster):
        answers = across(
            fleet.contexts,
            fleet.connection,
            lambda kube: read_cluster_grants(kube, namespace, narrowing="pass -n NS"),
            timeout=float(args.cluster_timeout),
        )
        for answer in answers:
            if answer.value is not None:
                per_cluster[answer.context] = answer.value.grants
                sources.append(f"context {answer.context}")
                for warning in answer.value.warnings:
                    io.progress(f"warning: context {answer.context}: {warning}")
            else:
                unreachable = unreachable or answer.unreachable
                state = "unreachable: " if answer.unreachable else ""
                why = answer.error.message if answer.error else "no answer"
                print(f"warning: context {answer.context}: {state}{why}", file=io.err)
        if not per_cluster:
            raise CliError("no cluster answered: " + ", ".join(fleet.contexts))
    elif not files or args.with_cluster:
        found_in_cluster = read_cluster_grants(
            connect(), namespace, cluster=cluster, narrowing="pass -n NS"
        )
        for warning in found_in_cluster.warnings:
            io.progress(f"warning: {warning}")
        grants, cluster = found_in_cluster.grants, found_in_cluster.cluster
        sources.append(found_in_cluster.source)
    records: list[dict[str, Any]] = []
    if files:
        found = _read(files)
        # Parts put back together; an incomplete record is left out (verify names it).
        records = [dict(e.record) for e in compute_entries(found.items) if e.record is not None]
        sources.append("trail " + ", ".join(STDIN_NAME if f == STDIN else f for f in files))
    review = build_access_review(
        grants=grants,
        records=records,
        since=since,
        until=until,
        filters=ReviewFilters(role=args.role, namespace=namespace, subject=args.subject),
        cluster=cluster,
        fleet=per_cluster,
    )
    output = args.output or "table"
    if output == "json":
        io.result(render_json(review))
    elif output == "csv":
        io.out.write(render_csv(review))
        io.out.flush()
    elif output == "html":
        io.out.write(render_html(review, generated=now, sources=sources))
        io.out.flush()
    else:
        io.result(render_table(review, with_cluster=fleet is not None))
        if review.summary.unreviewed:
            io.progress(f"{review.summary.unreviewed} break-glass(es) still unreviewed.")
    return ExitCode.UNREACHABLE if unreachable else ExitCode.OK
