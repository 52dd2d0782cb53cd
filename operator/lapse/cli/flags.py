"""The argument types and flag groups every `kubectl lapse` command shares.

Durations, waits, start times and reasons are checked here, before anything is sent, so a typo
is a usage error with an example of what is meant rather than an API refusal; the connection
flags mean what kubectl's mean; the fleet flags are the same on every command that spans
clusters.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from lapse.cli.audit import moment
from lapse.cli.client import Connection
from lapse.cli.fleet import DEFAULT_CLUSTER_TIMEOUT, context_list
from lapse.cli.objects import Io
from lapse.core.durations import DurationError, parse_duration

Across = Callable[[Connection, list[str], Io, Any], int]


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


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


def connection_flags(parser: argparse.ArgumentParser, nested: bool, namespace: bool) -> None:
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


def fleet_flags(parser: argparse.ArgumentParser, across: Across | None = None) -> None:
    """`--contexts a,b` and `--all-contexts`: the same command on several clusters at once;
    `across` runs it there (default: the command once per cluster, shown per cluster)."""
    if across is not None:
        parser.set_defaults(across=across)
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


def output_flag(parser: argparse.ArgumentParser, choices: Sequence[str]) -> None:
    parser.add_argument(
        "-o", "--output", choices=choices, default=None, help=f"output format: {'|'.join(choices)}"
    )


def wait_flags(parser: argparse.ArgumentParser, default: str) -> None:
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
