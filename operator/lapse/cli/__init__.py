"""`kubectl lapse`: ask for temporary access, break glass, approve, revoke — in few keystrokes.

kubectl finds this program on PATH as `kubectl-lapse`. This module is its command line: the
argument grammar, the help texts with examples, and the one place where failures become an
`error:` sentence and an exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from lapse import __version__
from lapse.cli.actions import VERDICTS, run_approve, run_deny, run_review, run_revoke
from lapse.cli.audit import (
    DEFAULT_OPERATOR_NAMESPACE,
    EXIT_BROKEN,
    FleetSource,
    run_audit_report,
    run_audit_verify,
)
from lapse.cli.client import Connection, Kube
from lapse.cli.errors import EXIT_CODES_HELP, CliError, ExitCode
from lapse.cli.flags import (
    Across,
    Formatter,
    connection_flags,
    duration,
    fleet_flags,
    namespace_list,
    output_flag,
    sentence,
    start_time,
    wait_flags,
    when,
)
from lapse.cli.fleetrun import (
    fleet_contexts,
    run_across,
    run_approve_across,
    run_breakglass_across,
    run_list_across,
    run_request_across,
)
from lapse.cli.grants import run_breakglass, run_extend, run_request
from lapse.cli.objects import Io
from lapse.cli.policydiff import POLICY_DIFF_EXIT_CODES, run_policy_diff
from lapse.cli.render import use_colour
from lapse.cli.report import run_report
from lapse.cli.views import run_explain, run_get, run_list

__all__ = ["build_parser", "main"]

PROG = "kubectl lapse"
Command = Callable[[Kube, Io, Any], int]


def _each(command: Command) -> Across:
    return partial(run_across, command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Temporary Kubernetes access with Lapse: ask, approve, break glass, revoke.",
        formatter_class=Formatter,
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
    connection_flags(parser, nested=False, namespace=True)
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
            formatter_class=Formatter,
        )
        sub.set_defaults(run=run)
        connection_flags(sub, nested=True, namespace=namespace)
        return sub

    request = command(
        "request",
        run_request,
        "Ask for a role in a namespace for a while; wait until it is Active, Pending or Denied.",
        "  kubectl lapse request edit -n payments --for 2h --reason 'Fix stuck retries'\n"
        "  kubectl lapse request deployer --role-kind Role -n payments --for 30m \\\n"
        "      --reason 'Roll back release 42' --ticket PAY-1234\n"
        "  kubectl lapse request view -n payments --reason 'Look at logs' --no-wait\n"
        "  kubectl lapse request edit -n payments --for 1h --reason 'Failover drill' \\\n"
        "      --contexts prod-eu,prod-us          # one request per cluster, one name",
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
    wait_flags(request, "60s")
    output_flag(request, ("json", "yaml"))
    fleet_flags(request, partial(run_request_across, run_request))

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
    wait_flags(extend, "60s")
    output_flag(extend, ("json", "yaml"))

    breakglass = command(
        "breakglass",
        run_breakglass,
        "Break glass: emergency access, granted at once within policy, reviewed afterwards.",
        "  kubectl lapse breakglass cluster-admin --incident INC-4711 --for 30m \\\n"
        "      --reason 'Payments database down'\n"
        "  kubectl lapse breakglass edit --incident INC-4711 --for 15m -n payments,ledger \\\n"
        "      --reason 'Restart stuck workers'\n"
        "  kubectl lapse breakglass cluster-admin --incident INC-4711 --for 30m \\\n"
        "      --reason 'Region failover' --contexts prod-eu,prod-us",
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
    wait_flags(breakglass, "60s")
    output_flag(breakglass, ("json", "yaml"))
    fleet_flags(breakglass, partial(run_breakglass_across, run_breakglass))

    listing = command(
        "list",
        run_list,
        "List access requests (and break-glasses) with the time they have left.",
        "  kubectl lapse list                  # requests in the current namespace\n"
        "  kubectl lapse list -n payments --breakglass\n"
        "  kubectl lapse list -A -o wide       # everything, break-glasses included\n"
        "  kubectl lapse list -A --all-contexts  # every cluster of the kubeconfig",
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
    output_flag(listing, ("json", "yaml", "wide"))
    fleet_flags(listing, run_list_across)

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
    output_flag(get, ("json", "yaml"))
    fleet_flags(get, _each(run_get))

    explain = command(
        "explain",
        run_explain,
        "Say in plain sentences why it is pending, why it was denied, or what it grants.",
        "  kubectl lapse explain edit-x7k2p -n payments\n  kubectl lapse explain bg/db-incident",
        aliases=("why",),
    )
    _name_argument(explain)
    fleet_flags(explain, _each(run_explain))

    approve = command(
        "approve",
        run_approve,
        "Approve someone else's access request (Lapse records who you are).",
        "  kubectl lapse approve edit-x7k2p -n payments\n"
        "  kubectl lapse approve edit-x7k2p -n payments -m 'Checked PAY-1234'\n"
        "  kubectl lapse approve edit-x7k2p -n payments --all-contexts  # where it exists",
    )
    approve.add_argument("name", metavar="NAME", help="the access request")
    approve.add_argument("-m", "--message", default="", help="an optional comment")
    approve.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="do not ask for confirmation at a terminal (what the grant gives is still printed)",
    )
    output_flag(approve, ("json", "yaml"))
    fleet_flags(approve, run_approve_across)

    deny = command(
        "deny",
        run_deny,
        "Deny an access request, with a reason the requester will read.",
        "  kubectl lapse deny edit-x7k2p -n payments -m 'Use the read-only role'",
    )
    deny.add_argument("name", metavar="NAME", help="the access request")
    deny.add_argument("-m", "--message", required=True, type=sentence, help="why it is denied")
    output_flag(deny, ("json", "yaml"))
    fleet_flags(deny, _each(run_deny))

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
    wait_flags(revoke, "30s")
    output_flag(revoke, ("json", "yaml"))
    fleet_flags(revoke, _each(run_revoke))

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
    output_flag(report, ("json", "yaml"))
    fleet_flags(report, _each(run_report))

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
    output_flag(review, ("json", "yaml"))

    _audit_commands(commands)
    _policy_commands(commands)

    ui = command(
        "ui",
        run_ui,
        "Serve a web page on 127.0.0.1 to ask, approve, break glass and review, as you.",
        "  kubectl lapse ui                    # prints the URL and opens a browser\n"
        "  kubectl lapse ui -n payments --port 8765 --no-browser",
    )
    ui.add_argument("--port", type=int, default=0, help="the loopback port (default: a free one)")
    fleet_flags(ui)
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
        formatter_class=Formatter,
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
        formatter_class=Formatter,
    )
    verify.set_defaults(run=run_audit_verify, connect_later=True)
    connection_flags(verify, nested=True, namespace=False)
    verify.add_argument("files", nargs="+", metavar="FILE", help="trail files; - reads stdin")
    _key_flags(verify)
    output_flag(verify, ("json",))

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
        formatter_class=Formatter,
    )
    report.set_defaults(run=run_audit_report, connect_later=True)
    connection_flags(report, nested=True, namespace=False)
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
    output_flag(report, ("table", "csv", "json", "html"))
    fleet_flags(report, _audit_report_across)


def _audit_report_across(connection: Connection, contexts: list[str], io: Io, args: Any) -> int:
    return run_audit_report(
        lambda: Kube(connection), io, args, fleet=FleetSource(connection, contexts)
    )


def _policy_commands(commands: Any) -> None:
    """`policy diff`: the clusters' AccessPolicies compared."""
    policy = commands.add_parser(
        "policy",
        help="Compare the AccessPolicies of several clusters.",
        description="Compare the AccessPolicies of several clusters.",
        formatter_class=Formatter,
    )
    steps = policy.add_subparsers(dest="policy_command", metavar="COMMAND", required=True)
    diff = steps.add_parser(
        "diff",
        help="Show how the clusters' AccessPolicies differ.",
        description=(
            "Show how the AccessPolicies of several clusters differ: a policy missing from a "
            "cluster, or whose spec differs (as a unified diff of the specs, each side named "
            "by the clusters holding it). Metadata is not compared."
        ),
        epilog="examples:\n"
        "  kubectl lapse policy diff --contexts prod-eu,prod-us\n"
        "  kubectl lapse policy diff --all-contexts -o json\n\n" + POLICY_DIFF_EXIT_CODES,
        formatter_class=Formatter,
    )
    diff.set_defaults(policy_diff=run_policy_diff)
    connection_flags(diff, nested=True, namespace=False)
    fleet_flags(diff)
    output_flag(diff, ("json", "yaml"))


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
        if getattr(args, "policy_diff", None) is not None:
            if not args.contexts and not args.all_contexts:
                raise CliError(
                    "policy diff compares clusters: name them with --contexts "
                    "a,b or --all-contexts",
                    ExitCode.USAGE,
                )
            return int(args.policy_diff(connection, io, args))
        contexts = fleet_contexts(args)
        if contexts is not None and getattr(args, "across", None):
            return int(args.across(connection, contexts, io, args))
        if contexts:
            # A command that spans the clusters itself (the page) starts from the first named:
            # a kubeconfig without a current context serves as well.
            connection = replace(connection, context=contexts[0])
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
