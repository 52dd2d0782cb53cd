"""The commands of `kubectl lapse` across clusters (`--contexts a,b`, `--all-contexts`).

Each command runs as it does on one cluster, once per context and all at once; what each
cluster said is then shown under its name, in the contexts' order, with the clusters that did
not answer named. Two commands are more than a loop:

- `list` merges every cluster's rows into one table with a CLUSTER column;
- `approve` shows what the grant gives in every cluster and asks once, before any approval is
  recorded (an approver approves what they have seen, everywhere at once or nowhere);
- `request` and `breakglass` use one name in every cluster, so that the approver's
  `approve NAME --all-contexts` and the responder's `revoke bg/NAME --all-contexts` name them all.

Machine output (`-o json|yaml`) is one document: `clusters`, each with its context, exit code,
result (what the command prints on one cluster), error and whether it was unreachable.
"""

from __future__ import annotations

import io as stringio
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import yaml

from lapse.cli.actions import APPROVE, confirm
from lapse.cli.client import Connection, Kube
from lapse.cli.errors import CliError, ExitCode, NotFound
from lapse.cli.fleet import Answer, across, overall_code, resolve_contexts
from lapse.cli.grants import incident_name, name_prefix
from lapse.cli.objects import Io, parse_grant, parse_ref
from lapse.cli.render import COLUMNS, WIDE_COLUMNS, Row, as_list, dump, row, table
from lapse.cli.views import Listing, read_listing
from lapse.core.kinds import ACCESS_REQUEST, BREAK_GLASS

Command = Callable[[Kube, Io, Any], int]

# generateName's alphabet (no vowels, no look-alikes): the name one request carries in every
# cluster reads like the names the API server would have chosen.
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# How long past a command's own wait a cluster may take before it is named unreachable.
_GRACE = 5.0


def fleet_contexts(args: Any) -> list[str] | None:
    """The contexts a command runs on, or None for the one cluster of plain kubectl."""
    named = getattr(args, "contexts", None)
    everything = bool(getattr(args, "all_contexts", False))
    if not named and not everything:
        return None
    if getattr(args, "context", None):
        raise CliError(
            "--context names one cluster; --contexts and --all-contexts name several",
            ExitCode.USAGE,
        )
    return resolve_contexts(getattr(args, "kubeconfig", None), named=named, all_contexts=everything)


def fleet_name(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))


@dataclass(frozen=True)
class Said:
    """What a command printed on one cluster, and its exit code."""

    code: int
    out: str
    err: str


def _captured(io: Io) -> tuple[Io, stringio.StringIO, stringio.StringIO]:
    out, err = stringio.StringIO(), stringio.StringIO()
    # Not interactive: a question asked on one cluster's thread would interleave with the
    # others'; the fleet commands that must ask (approve) ask once, before.
    return replace(io, out=out, err=err, interactive=False), out, err


def _run_one(command: Command, io: Io, args: Any) -> Callable[[Kube], Said]:
    def work(kube: Kube) -> Said:
        captured, out, err = _captured(io)
        try:
            code = int(command(kube, captured, args))
        except NotFound as missing:
            captured.error(missing.message)
            code = int(missing.code)
        except CliError as error:
            if error.message.startswith("cannot reach the Kubernetes API"):
                raise
            captured.error(error.message)
            code = int(error.code)
        return Said(code, out.getvalue(), err.getvalue())

    return work


def _codes(answers: Sequence[Answer[Said]]) -> list[int]:
    codes = []
    for answer in answers:
        if answer.value is not None:
            codes.append(answer.value.code)
        elif answer.error is not None and not answer.unreachable:
            codes.append(int(answer.error.code))
    return codes


def _entry(answer: Answer[Any], result: Any) -> dict[str, Any]:
    """One cluster's part of a machine-readable answer that read or acted, not printed."""
    code = ExitCode.OK
    if answer.unreachable:
        code = ExitCode.UNREACHABLE
    elif answer.error is not None:
        code = answer.error.code
    return {
        "context": answer.context,
        "exitCode": int(code),
        "unreachable": answer.unreachable,
        "result": result,
        "error": answer.error.message if answer.error else None,
    }


def _unreachable_line(answer: Answer[Any]) -> str:
    why = answer.error.message if answer.error else "no answer"
    return f"context {answer.context}: unreachable: {why}"


def _machine(answers: Sequence[Answer[Said]], output: str) -> str:
    clusters: list[dict[str, Any]] = []
    for answer in answers:
        said = answer.value
        result: Any = None
        if said is not None and said.out.strip():
            try:
                result = json.loads(said.out) if output == "json" else yaml.safe_load(said.out)
            except (ValueError, yaml.YAMLError):
                result = said.out
        error = answer.error.message if answer.error else None
        if said is not None and said.err.strip():
            error = " ".join(line.removeprefix("error: ") for line in said.err.strip().splitlines())
        clusters.append(
            {
                "context": answer.context,
                "exitCode": said.code
                if said
                else int(
                    ExitCode.UNREACHABLE
                    if answer.unreachable
                    else (answer.error.code if answer.error else 1)
                ),
                "unreachable": answer.unreachable,
                "result": result,
                "error": error,
            }
        )
    return dump({"clusters": clusters}, output)


def show(io: Io, answers: Sequence[Answer[Said]], output: str | None) -> int:
    """Each cluster's output under its name; the unreachable named; one exit code."""
    if output in ("json", "yaml"):
        io.result(_machine(answers, output))
    else:
        for answer in answers:
            if answer.unreachable:
                io.result(f"── {answer.context}: unreachable ──")
                print(f"warning: {_unreachable_line(answer)}", file=io.err, flush=True)
                continue
            io.result(f"── {answer.context} ──")
            if answer.value is not None:
                if answer.value.out.strip():
                    io.result(answer.value.out.rstrip("\n"))
                if answer.value.err.strip():
                    print(answer.value.err.rstrip("\n"), file=io.err, flush=True)
            elif answer.error is not None:
                io.error(answer.error.message)
    return overall_code(_codes(answers), unreachable=any(a.unreachable for a in answers))


def run_across(
    command: Command, connection: Connection, contexts: list[str], io: Io, args: Any
) -> int:
    """`command` on each context at once, shown per cluster."""
    wait = float(getattr(args, "timeout", 0) or 0) if not getattr(args, "no_wait", False) else 0
    timeout = float(args.cluster_timeout)
    answers = across(
        contexts,
        connection,
        _run_one(command, io, args),
        timeout=timeout,
        deadline=wait + timeout + _GRACE if wait else None,
    )
    return show(io, answers, getattr(args, "output", None))


# list ----------------------------------------------------------------------------------------


def run_list_across(connection: Connection, contexts: list[str], io: Io, args: Any) -> int:
    """One table over every cluster: CLUSTER first, then the columns of one cluster's list."""
    answers = across(
        contexts,
        connection,
        lambda kube: read_listing(
            kube, all_namespaces=args.all_namespaces, breakglass=args.breakglass
        ),
        timeout=float(args.cluster_timeout),
    )
    for answer in answers:
        if answer.unreachable:
            print(f"warning: {_unreachable_line(answer)}", file=io.err, flush=True)
        elif answer.error is not None:
            print(f"warning: context {answer.context}: {answer.error.message}", file=io.err)
        elif answer.value is not None:
            for warning in answer.value.warnings:
                print(f"warning: context {answer.context}: {warning}", file=io.err)
    if args.output in ("json", "yaml"):
        clusters = [
            _entry(a, as_list(a.value.raw) if a.value is not None else None) for a in answers
        ]
        io.result(dump({"clusters": clusters}, args.output))
        return overall_code(
            _codes_of_reads(answers), unreachable=any(a.unreachable for a in answers)
        )
    now = datetime.now(UTC)
    wide = args.output == "wide"
    rows: list[Row] = []
    for answer in answers:
        listing = answer.value
        if listing is None:
            continue
        for grant in listing.grants:
            line = row(grant, listing.policies.get(grant.status.policy or ""), now, wide)
            rows.append(Row((answer.context, *line.cells), line.state))
    if rows:
        headers = ("CLUSTER", *(WIDE_COLUMNS if wide else COLUMNS))
        io.result(table(headers, rows, io.colour))
    else:
        answered = [a.context for a in answers if a.ok]
        if answered:
            where = "any namespace" if args.all_namespaces else "this namespace"
            print(f"No access requests found in {where} of {', '.join(answered)}.", file=io.err)
    return overall_code(_codes_of_reads(answers), unreachable=any(a.unreachable for a in answers))


def _codes_of_reads(answers: Sequence[Answer[Listing]]) -> list[int]:
    return [int(a.error.code) for a in answers if a.error is not None and not a.unreachable]


# request and break-glass: one name everywhere -------------------------------------------------


def run_request_across(
    command: Command, connection: Connection, contexts: list[str], io: Io, args: Any
) -> int:
    if not args.name:
        args.name = fleet_name(name_prefix(args.role))
    io.progress(
        f"asking {len(contexts)} clusters for {args.role} as {args.name}: {', '.join(contexts)}"
    )
    code = run_across(command, connection, contexts, io, args)
    _summary(io, args, contexts, code)
    return code


def run_breakglass_across(
    command: Command, connection: Connection, contexts: list[str], io: Io, args: Any
) -> int:
    if not args.name:
        args.name = incident_name(args.incident) or fleet_name(name_prefix(args.role))
    io.progress(
        f"breaking glass in {len(contexts)} clusters as bg/{args.name}: {', '.join(contexts)}"
    )
    code = run_across(command, connection, contexts, io, args)
    _summary(io, args, contexts, code)
    return code


def _summary(io: Io, args: Any, contexts: list[str], code: int) -> None:
    if args.output or code == ExitCode.OK:
        return
    io.progress(
        "Not every cluster granted it; see each cluster's section above "
        f"(kubectl lapse explain {args.name} --contexts {','.join(contexts)})."
    )


# approve: see everything, then decide once -------------------------------------------------


@dataclass(frozen=True)
class Pending:
    state: str
    gives: str


def _read_pending(name: str) -> Callable[[Kube], Pending | None]:
    def work(kube: Kube) -> Pending | None:
        try:
            grant = parse_grant(kube.get(ACCESS_REQUEST, name))
        except NotFound:
            return None
        risk = grant.status.risk
        state = grant.status.phase.value if grant.status.phase else "New"
        return Pending(state, risk.summary if risk is not None and risk.summary else "")

    return work


def run_approve_across(connection: Connection, contexts: list[str], io: Io, args: Any) -> int:
    ref = parse_ref(args.name)
    if ref.resource is BREAK_GLASS:
        raise CliError("a break-glass is not approved; review it afterwards", ExitCode.USAGE)
    timeout = float(args.cluster_timeout)
    seen = across(contexts, connection, _read_pending(ref.name), timeout=timeout)
    found = [a for a in seen if a.value is not None]
    for answer in seen:
        if answer.unreachable:
            print(f"warning: {_unreachable_line(answer)}", file=io.err, flush=True)
        elif answer.error is not None:
            io.progress(f"{answer.context}: {answer.error.message}")
        elif answer.value is None:
            io.progress(f"{answer.context}: no access request {ref.name} here")
        else:
            gives = f": {answer.value.gives}" if answer.value.gives else ""
            io.progress(f"{answer.context}: {ref.name} is {answer.value.state}{gives}")
    if not found:
        if any(a.error is not None and not a.unreachable for a in seen):
            raise CliError(f"accessrequest/{ref.name} approved nowhere (see above)")
        if any(a.unreachable for a in seen):
            return ExitCode.UNREACHABLE
        raise NotFound(f'accessrequest "{ref.name}" not found in any of {", ".join(contexts)}')
    where = [a.context for a in found]
    if (
        not args.yes
        and io.interactive
        and not confirm(io, f"Approve in {', '.join(where)}? [y/N] ")
    ):
        raise CliError(f"accessrequest/{ref.name} not approved", ExitCode.INTERRUPTED)

    def approve(kube: Kube) -> dict[str, Any]:
        return kube.annotate(ACCESS_REQUEST, ref.name, {APPROVE: args.message or ""}, None)

    done = across(where, connection, approve, timeout=timeout)
    codes: list[int] = []
    if args.output in ("json", "yaml"):
        clusters = [_entry(a, a.value) for a in done]
        io.result(dump({"clusters": clusters}, args.output))
    for result in done:
        if result.ok:
            if not args.output:
                io.result(f"{result.context}: accessrequest/{ref.name} approved")
        elif result.unreachable:
            print(f"warning: {_unreachable_line(result)}", file=io.err, flush=True)
        elif result.error is not None:
            # The admission webhook's sentence: not an approver here, your own request, …
            print(f"error: {result.context}: {result.error.message}", file=io.err, flush=True)
            codes.append(int(result.error.code))
    return overall_code(
        codes, unreachable=any(a.unreachable for a in seen) or any(a.unreachable for a in done)
    )
