"""`kubectl lapse`: ask for temporary access, break glass, approve, revoke — in few keystrokes.

kubectl finds this program on PATH as `kubectl-lapse`. This module is its command line: the
argument grammar, the help texts with examples, and the one place where failures become an
`error:` sentence and an exit code.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from lapse import __version__
from lapse.cli.actions import VERDICTS, run_approve, run_deny, run_review, run_revoke
from lapse.cli.audit import (
    DEFAULT_OPERATOR_NAMESPACE,
    EXIT_BROKEN,
    moment,
    run_audit_report,
    run_audit_verify,
)
from lapse.cli.client import Connection, Kube
from lapse.cli.errors import EXIT_CODES_HELP, CliError, ExitCode
from lapse.cli.fleet import DEFAULT_CLUSTER_TIMEOUT, context_list
from lapse.cli.grants import run_breakglass, run_extend, run_request
from lapse.cli.objects import Io
from lapse.cli.render import use_colour
from lapse.cli.report import run_report
from lapse.cli.views import run_explain, run_get, run_list
from lapse.core.durations import DurationError, parse_duration

__all__ = ["build_parser", "main"]

PROG = "kubectl lapse"
Command = Callable[[Kube, Io, Any], int]


def duration(text: str) -> str:
    """An access window as the API spells it (`30m`, `2h`, `1h30m`), checked before sending."""
    try:
        parse_duration(text)
    except DurationError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration such as 30m, 2h or 1h30m (hours, minutes, seconds)"
        ) from None
    return text


def seconds(text: str) -> float:
    """A wait: `60s`, `2m`, or a plain number of seconds."""
    if text.replace(".", "", 1).isdigit():
        value = float(text)
        if value > 0:
            return value
    else:
        try:
            return parse_duration(text).total_seconds()
        except DurationError:
            pass
    raise argparse.ArgumentTypeError(f"{text!r} is not a wait such as 60s or 2m")


def start_time(text: str, now: datetime | None = None) -> str:
    """When access should begin, as RFC 3339 in UTC: `02:00` (the next 02:00 on this machine's
    clock), `+30m` (from now), or a full RFC 3339 time."""
    now = now or datetime.now().astimezone()
    text = text.strip()
    try:
        if text.startswith("+"):
            moment = now + parse_duration(text[1:])
        elif re.fullmatch(r"\d{1,2}:\d{2}", text):
            hour, minute = (int(part) for part in text.split(":"))
            moment = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
            if moment <= now:
                moment += timedelta(days=1)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=now.tzinfo)
    except (ValueError, DurationError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a start such as 02:00, +30m or 2026-12-05T02:00:00Z"
        ) from None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sentence(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def when(text: str) -> datetime | timedelta:
    try:
        return moment(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def namespace_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


def _connection_flags(parser: argparse.ArgumentParser, nested: bool, namespace: bool) -> None:
    """kubectl's connection flags; on subcommands they default to "not given" (SUPPRESS), so a
    flag typed before the subcommand is not reset by the subcommand's own default."""
    default: Any = argparse.SUPPRESS if nested else None
    group = parser.add_argument_group("kubectl options")
    group.add_argument("--kubeconfig", default=default, help="path to the kubeconfig file")
    group.add_argument("--context", default=default, help="the kubeconfig context to use")
    if namespace:
        group.add_argument(
            "-n", "--namespace", default=default, help="namespace (default: the context's)"
        )
    group.add_argument(
        "--as", dest="as_user", default=default, metavar="USER", help="user to impersonate"
    )
    group.add_argument(
        "--as-group",
        dest="as_groups",
        action="append",
        metavar="GROUP",
        default=default,
        help="group to impersonate; repeat for several",
    )


def _fleet_flags(parser: argparse.ArgumentParser) -> None:
    """`--contexts a,b` and `--all-contexts`: the same command on several clusters at once."""
    group = parser.add_argument_group("across clusters")
    group.add_argument(
        "--contexts",
        type=context_list,
        action="extend",
        metavar="CTX[,CTX…]",
        help="run on these kubeconfig contexts at once (comma-separated or repeated)",
    )
    group.add_argument(
        "--all-contexts", action="store_true", help="run on every context of the kubeconfig"
    )
    group.add_argument(
        "--cluster-timeout",
        type=seconds,
        default=DEFAULT_CLUSTER_TIMEOUT,
        metavar="DURATION",
        help=f"how long to wait for each cluster to answer (default {DEFAULT_CLUSTER_TIMEOUT:g}s);"
        " one that does not is named unreachable",
    )


def _output_flag(parser: argparse.ArgumentParser, choices: Sequence[str]) -> None:
    parser.add_argument(
        "-o", "--output", choices=choices, default=None, help=f"output format: {'|'.join(choices)}"
    )


def _wait_flags(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--no-wait", action="store_true", help="return once created; do not wait for Lapse"
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=seconds(default),
        metavar="DURATION",
        help=f"how long to wait for Lapse (default {default})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Temporary Kubernetes access with Lapse: ask, approve, break glass, revoke.",
        formatter_class=_Formatter,
        epilog=(
            "examples:\n"
            "  kubectl lapse request edit -n payments --for 2h --reason 'Fix stuck retries'\n"
            "  kubectl lapse list\n"
            "  kubectl lapse explain edit-x7k2p -n payments\n"
            "  kubectl lapse approve edit-x7k2p -n payments -m 'ok'\n"
            "  kubectl lapse breakglass cluster-admin --incident INC-4711 --for 30m "
            "--reason 'Database down'\n\n" + EXIT_CODES_HELP
        ),
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _connection_flags(parser, nested=False, namespace=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str,
        run: Command,
        summary: str,
        examples: str,
        aliases: Sequence[str] = (),
        namespace: bool = True,
        exit_codes: bool = False,
    ) -> argparse.ArgumentParser:
        epilog = f"examples:\n{examples}"
        if exit_codes:
            epilog += f"\n\n{EXIT_CODES_HELP}"
        sub = commands.add_parser(
            name,
            aliases=list(aliases),
            help=summary,
            description=summary,
            epilog=epilog,
            formatter_class=_Formatter,
        )
        sub.set_defaults(run=run)
        _connection_flags(sub, nested=True, namespace=namespace)
        return sub

    request = command(
        "request",
        run_request,
        "Ask for a role in a namespace for a while; wait until it is Active, Pending or Denied.",
        "  kubectl lapse request edit -n payments --for 2h --reason 'Fix stuck retries'\n"
        "  kubectl lapse request deployer --role-kind Role -n payments --for 30m \\\n"
        "      --reason 'Roll back release 42' --ticket PAY-1234\n"
        "  kubectl lapse request view -n payments --reason 'Look at logs' --no-wait",
        exit_codes=True,
    )
    request.add_argument("role", metavar="ROLE", help="the ClusterRole (or Role) to ask for")
    request.add_argument(
        "--for",
        dest="duration",
        type=duration,
        metavar="DURATION",
        help="how long, e.g. 30m, 2h, 1h30m (default: the policy's defaultDuration)",
    )
    request.add_argument(
        "--reason", required=True, type=sentence, help="why you need it (kept in the audit trail)"
    )
    request.add_argument(
        "--role-kind",
        choices=("ClusterRole", "Role"),
        default="ClusterRole",
        help="ClusterRole (default) or Role in the namespace",
    )
    request.add_argument("--ticket", help="a ticket or change reference")
    request.add_argument("--name", help="the request's name (default: ROLE- plus a suffix)")
    request.add_argument(
        "--at",
        dest="start_at",
        type=start_time,
        metavar="WHEN",
        help="begin later: 02:00 (next 02:00 local time), +30m, or an RFC 3339 time; decided "
        "and approved now, bound then, and the duration counts from then",
    )
    _wait_flags(request, "60s")
    _output_flag(request, ("json", "yaml"))

    extend = command(
        "extend",
        run_extend,
        "Ask for more time on an active grant: a new request that continues it with no gap.",
        "  kubectl lapse extend edit-x7k2p -n payments --by 30m --reason 'Migration ran over'",
        exit_codes=True,
    )
    extend.add_argument("name", metavar="NAME", help="the active access request to extend")
    extend.add_argument(
        "--by", required=True, type=duration, metavar="DURATION", help="how much longer, e.g. 30m"
    )
    extend.add_argument(
        "--reason", required=True, type=sentence, help="why more time is needed (audited)"
    )
    extend.add_argument("--ticket", help="a ticket or change reference (default: the original's)")
    _wait_flags(extend, "60s")
    _output_flag(extend, ("json", "yaml"))

    breakglass = command(
        "breakglass",
        run_breakglass,
        "Break glass: emergency access, granted at once within policy, reviewed afterwards.",
        "  kubectl lapse breakglass cluster-admin --incident INC-4711 --for 30m \\\n"
        "      --reason 'Payments database down'\n"
        "  kubectl lapse breakglass edit --incident INC-4711 --for 15m -n payments,ledger \\\n"
        "      --reason 'Restart stuck workers'",
        aliases=("bg",),
        namespace=False,
        exit_codes=True,
    )
    breakglass.add_argument("role", metavar="ROLE", help="the ClusterRole to grant")
    breakglass.add_argument("--incident", help="the incident reference, e.g. INC-4711")
    breakglass.add_argument(
        "--for", dest="duration", type=duration, required=True, metavar="DURATION",
        help="how long, e.g. 15m, 30m",
    )  # fmt: skip
    breakglass.add_argument("--reason", required=True, type=sentence, help="why the glass breaks")
    breakglass.add_argument(
        "-n",
        "--namespace",
        dest="grant_namespaces",
        type=namespace_list,
        action="append",
        metavar="NS[,NS…]",
        help="namespaces to grant in (default: cluster-wide)",
    )
    breakglass.add_argument(
        "--name",
        help="the break-glass name (default: the incident, e.g. inc-4711; a second break-glass "
        "of the same incident gets a suffix; without an incident, ROLE- plus a suffix)",
    )
    _wait_flags(breakglass, "60s")
    _output_flag(breakglass, ("json", "yaml"))

    listing = command(
        "list",
        run_list,
        "List access requests (and break-glasses) with the time they have left.",
        "  kubectl lapse list                  # requests in the current namespace\n"
        "  kubectl lapse list -n payments --breakglass\n"
        "  kubectl lapse list -A -o wide       # everything, break-glasses included",
        aliases=("ls",),
    )
    listing.add_argument(
        "-A", "--all-namespaces", action="store_true", help="all namespaces, and break-glasses"
    )
    listing.add_argument(
        "--breakglass",
        action="store_true",
        help="include break-glasses (those reaching this namespace, unless -A)",
    )
    _output_flag(listing, ("json", "yaml", "wide"))

    get = command(
        "get",
        run_get,
        "Show one access request or break-glass in detail: conditions, history, bindings.",
        "  kubectl lapse get edit-x7k2p -n payments\n"
        "  kubectl lapse get bg/cluster-admin-q2w9z\n"
        "  kubectl lapse get edit-x7k2p -o yaml",
        aliases=("describe",),
    )
    _name_argument(get)
    _output_flag(get, ("json", "yaml"))

    explain = command(
        "explain",
        run_explain,
        "Say in plain sentences why it is pending, why it was denied, or what it grants.",
        "  kubectl lapse explain edit-x7k2p -n payments\n  kubectl lapse explain bg/db-incident",
        aliases=("why",),
    )
    _name_argument(explain)

    approve = command(
        "approve",
        run_approve,
        "Approve someone else's access request (Lapse records who you are).",
        "  kubectl lapse approve edit-x7k2p -n payments\n"
        "  kubectl lapse approve edit-x7k2p -n payments -m 'Checked PAY-1234'",
    )
    approve.add_argument("name", metavar="NAME", help="the access request")
    approve.add_argument("-m", "--message", default="", help="an optional comment")
    approve.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="do not ask for confirmation at a terminal (what the grant gives is still printed)",
    )
    _output_flag(approve, ("json", "yaml"))

    deny = command(
        "deny",
        run_deny,
        "Deny an access request, with a reason the requester will read.",
        "  kubectl lapse deny edit-x7k2p -n payments -m 'Use the read-only role'",
    )
    deny.add_argument("name", metavar="NAME", help="the access request")
    deny.add_argument("-m", "--message", required=True, type=sentence, help="why it is denied")
    _output_flag(deny, ("json", "yaml"))

    revoke = command(
        "revoke",
        run_revoke,
        "End access early; the record stays. Waits until the access is gone.",
        "  kubectl lapse revoke edit-x7k2p -n payments -m 'Done early'\n"
        "  kubectl lapse revoke bg/cluster-admin-q2w9z -m 'Incident resolved'",
    )
    revoke.add_argument("name", metavar="NAME", help="the access request, or bg/NAME")
    revoke.add_argument("-m", "--message", default="", help="why (kept in the audit trail)")
    revoke.add_argument(
        "--breakglass", action="store_true", help="NAME is a break-glass (same as bg/NAME)"
    )
    _wait_flags(revoke, "30s")
    _output_flag(revoke, ("json", "yaml"))

    report = command(
        "report",
        run_report,
        "What the subject did with a grant, from the API server's audit log: writes, Secrets "
        "read, exec sessions, refusals, counts.",
        "  kubectl lapse report edit-x7k2p -n payments\n"
        "  kubectl lapse report bg/inc-4711\n"
        "  kubectl lapse report bg/inc-4711 -o json",
        aliases=("activity",),
    )
    _name_argument(report)
    _output_flag(report, ("json", "yaml"))

    review = command(
        "review",
        run_review,
        "Review a break-glass after the fact: justified or unjustified.",
        "  kubectl lapse review cluster-admin-q2w9z --verdict justified -m 'Outage INC-4711'",
        namespace=False,
    )
    review.add_argument("name", metavar="NAME", help="the break-glass")
    review.add_argument(
        "--verdict", required=True, type=str.lower, choices=sorted(VERDICTS), help="the verdict"
    )
    review.add_argument("-m", "--message", required=True, type=sentence, help="review notes")
    _output_flag(review, ("json", "yaml"))

    _audit_commands(commands)

    ui = command(
        "ui",
        run_ui,
        "Serve a web page on 127.0.0.1 to ask, approve, break glass and review, as you.",
        "  kubectl lapse ui                    # prints the URL and opens a browser\n"
        "  kubectl lapse ui -n payments --port 8765 --no-browser",
    )
    ui.add_argument("--port", type=int, default=0, help="the loopback port (default: a free one)")
    _fleet_flags(ui)
    ui.add_argument(
        "--no-browser", dest="open", action="store_false", help="print the URL; open nothing"
    )
    return parser


def run_ui(kube: Kube, io: Io, args: Any) -> int:
    # Imported when asked for: the page's server and its modules stay out of the start-up of
    # every other command, and out of an import cycle (the page uses the CLI's client).
    from lapse.ui.command import run_ui as serve

    return serve(kube, io, args)


VERIFY_EXIT_CODES = f"""\
exit codes:
  0  every stream is whole and unaltered (complete, or still open)
  {EXIT_BROKEN}  a stream is broken: the first record that breaks each is printed
  2  nothing was checked: bad command line, unreadable file, no records, no key"""


def _audit_commands(commands: Any) -> None:
    """`audit verify` and `audit report`: they read files and connect to the cluster only when
    they need it (`connect_later`), so they work with no kubeconfig at all when given files
    and a key file."""
    audit = commands.add_parser(
        "audit",
        help="Check an exported audit trail; list who held access in a period.",
        description="Check an exported audit trail; list who held access in a period.",
        formatter_class=_Formatter,
    )
    steps = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    verify = steps.add_parser(
        "verify",
        help="Check that exported trail records are whole and unaltered.",
        description=(
            "Check that the records Lapse exported (syslog, Splunk HEC, JSON lines) are whole "
            "and unaltered: every owner's stream contiguous, linked and signed with the "
            "operator's key. Repeats are dropped; parts are joined."
        ),
        epilog="examples:\n"
        "  kubectl lapse audit verify /var/log/lapse/*.log\n"
        "  kubectl lapse audit verify --key-file lapse.key trail.json\n"
        "  zcat trail-*.gz | kubectl lapse audit verify - -o json\n\n" + VERIFY_EXIT_CODES,
        formatter_class=_Formatter,
    )
    verify.set_defaults(run=run_audit_verify, connect_later=True)
    _connection_flags(verify, nested=True, namespace=False)
    verify.add_argument("files", nargs="+", metavar="FILE", help="trail files; - reads stdin")
    _key_flags(verify)
    _output_flag(verify, ("json",))

    report = steps.add_parser(
        "report",
        help="Access review: every grant that held access in a period.",
        description=(
            "Access review: one row per grant that held access at some moment between --since "
            "and --until, with who approved it, how it ended, the review of a break-glass and "
            "what the subject did. From the cluster's objects, or exported trail files "
            "(--from), or both (--from with --with-cluster)."
        ),
        epilog="examples:\n"
        "  kubectl lapse audit report --since 90d\n"
        "  kubectl lapse audit report --since 2026-07-01 --until 2026-10-01 -o html > q3.html\n"
        "  kubectl lapse audit report --since 30d -n payments --role edit -o csv\n"
        "  kubectl lapse audit report --since 90d --from /var/log/lapse/trail.log -o json",
        formatter_class=_Formatter,
    )
    report.set_defaults(run=run_audit_report, connect_later=True)
    _connection_flags(report, nested=True, namespace=False)
    report.add_argument(
        "--since",
        type=when,
        required=True,
        metavar="T",
        help="start: RFC 3339 (2026-10-01, 2026-10-01T00:00:00Z) or a span ago (30d, 90d, 12h)",
    )
    report.add_argument("--until", type=when, metavar="T", help="end, the same way (default: now)")
    report.add_argument("--role", help="only this role: edit, or ClusterRole/edit")
    report.add_argument(
        "-n",
        "--namespace",
        default=argparse.SUPPRESS,
        help="only access that reached this namespace (cluster-wide grants included)",
    )
    report.add_argument("--subject", help="only this subject: alice, or User:alice")
    report.add_argument(
        "--from",
        dest="from_files",
        action="append",
        nargs="+",
        metavar="FILE",
        help="exported trail files (- reads stdin) instead of the cluster's objects",
    )
    report.add_argument(
        "--with-cluster",
        action="store_true",
        help="with --from: read the cluster's objects too (an object wins over its records)",
    )
    report.add_argument(
        "--cluster", help="the cluster's name in the rows (default: the kubeconfig's)"
    )
    _output_flag(report, ("table", "csv", "json", "html"))


def _key_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key-file",
        metavar="PATH",
        help="the operator's signing key, raw or base64 (default: read from the cluster)",
    )
    parser.add_argument(
        "--operator-namespace",
        default=os.environ.get("LAPSE_NAMESPACE") or DEFAULT_OPERATOR_NAMESPACE,
        metavar="NS",
        help="where Lapse runs and keeps its key (default: $LAPSE_NAMESPACE, else "
        f"{DEFAULT_OPERATOR_NAMESPACE})",
    )


def _name_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="NAME (an access request), or bg/NAME")
    parser.add_argument(
        "--breakglass", action="store_true", help="NAME is a break-glass (same as bg/NAME)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    io = Io(
        out=sys.stdout,
        err=sys.stderr,
        colour=use_colour(sys.stdout, os.environ),
        machine=getattr(args, "output", None) in ("json", "yaml", "csv", "html"),
        interactive=sys.stdin.isatty() and sys.stdout.isatty(),
    )
    connection = Connection(
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespace=getattr(args, "namespace", None),
        as_user=args.as_user,
        as_groups=tuple(args.as_groups or ()),
    )
    try:
        if getattr(args, "connect_later", False):
            return int(args.run(lambda: Kube(connection), io, args))
        run: Command = args.run
        return int(run(Kube(connection), io, args))
    except CliError as error:
        io.error(error.message)
        return int(error.code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        # `kubectl lapse list | head`: the reader left; that is not a failure.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.OK)
