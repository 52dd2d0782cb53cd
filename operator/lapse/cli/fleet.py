"""Many clusters at once: one command run against several kubeconfig contexts, answered by those
that answer.

Every cluster keeps its own Lapse, and grants, revocation and audit never depend on another
cluster; only the people's tools span the fleet. So a fleet command asks each cluster on its own
thread with its own deadline, shows what came back, and names each cluster that did not answer
in time as unreachable: it never waits on its slowest member, and one cluster down never hides
the others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from kubernetes.config.config_exception import ConfigException

from lapse.cli.client import Connection, Kube, kubeconfig_contexts
from lapse.cli.errors import CliError, ExitCode

T = TypeVar("T")

# How long a fleet command waits for one cluster to answer a read, unless told otherwise: long
# enough for a healthy API server across a region, short enough that a person is not kept
# waiting by a cluster that is gone.
DEFAULT_CLUSTER_TIMEOUT = 5.0


def context_names(kubeconfig: str | None) -> tuple[list[str], str | None]:
    """The kubeconfig's contexts in its own order, and the current one."""
    try:
        contexts, active = kubeconfig_contexts(kubeconfig or None)
    except ConfigException as error:
        raise CliError(f"cannot load kubeconfig: {error}") from None
    except OSError as error:
        raise CliError(f"cannot read kubeconfig: {error}") from None
    names = [str(c["name"]) for c in contexts if c.get("name")]
    return names, (active or {}).get("name")


def resolve_contexts(
    kubeconfig: str | None, *, named: Sequence[str] | None, all_contexts: bool
) -> list[str]:
    """The contexts a fleet command runs on: those named (`--contexts a,b`, in that order,
    each once) or every context of the kubeconfig (`--all-contexts`). A name the kubeconfig
    does not have is a usage error that lists the ones it has: a typo must not quietly leave a
    cluster out of an approval."""
    known, _ = context_names(kubeconfig)
    if all_contexts:
        if named:
            raise CliError("--contexts and --all-contexts contradict each other", ExitCode.USAGE)
        if not known:
            raise CliError("the kubeconfig has no contexts")
        return known
    chosen: list[str] = []
    for name in named or ():
        if name not in chosen:
            chosen.append(name)
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise CliError(
            f"no context {', '.join(repr(n) for n in unknown)} in the kubeconfig; "
            f"it has: {', '.join(known) or 'none'}",
            ExitCode.USAGE,
        )
    return chosen


def context_list(text: str) -> list[str]:
    """`--contexts prod-eu,prod-us` (repeatable)."""
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class Answer(Generic[T]):
    """What one cluster said: a value, or the one sentence of its failure. `unreachable` tells
    a cluster that could not be asked (down, no answer within the deadline) from one that
    answered with a refusal (not found, forbidden, the webhook's no)."""

    context: str
    value: T | None = None
    error: CliError | None = None
    unreachable: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.unreachable


def unreachable_error(error: CliError) -> bool:
    # The client's own sentence for a transport failure (refused, reset, timed out, TLS).
    return error.message.startswith("cannot reach the Kubernetes API")


def across(
    contexts: Sequence[str],
    connection: Connection,
    work: Callable[[Kube], T],
    *,
    timeout: float,
    deadline: float | None = None,
) -> list[Answer[T]]:
    """`work` against each context at once, in the contexts' order.

    Each cluster's requests time out after `timeout` seconds; the whole call returns after
    `deadline` seconds (default: `timeout` plus a second) with every cluster still working
    marked unreachable. The threads are daemons: one that never returns does not hold the
    command open after it has printed its answer.
    """
    results: dict[str, Answer[T]] = {}
    lock = threading.Lock()

    def one(context: str) -> None:
        try:
            kube = Kube(replace(connection, context=context, request_timeout=timeout))
            answer = Answer(context, value=work(kube))
        except CliError as error:
            answer = Answer(context, error=error, unreachable=unreachable_error(error))
        except Exception as error:  # one cluster's surprise is its own answer
            answer = Answer(context, error=CliError(f"{type(error).__name__}: {error}"))
        with lock:
            results[context] = answer

    threads = [
        threading.Thread(target=one, args=(c,), name=f"lapse-fleet-{c}", daemon=True)
        for c in contexts
    ]
    for thread in threads:
        thread.start()
    # A second of grace past the requests' own timeout: reading the kubeconfig and the TLS
    # handshake come before the first request is timed.
    ends = time.monotonic() + (deadline if deadline is not None else timeout + 1.0)
    for thread in threads:
        thread.join(max(0.0, ends - time.monotonic()))
    with lock:
        return [
            results.get(c)
            or Answer(
                c,
                error=CliError(f"no answer within {deadline or timeout:g}s"),
                unreachable=True,
            )
            for c in contexts
        ]


def overall_code(codes: Sequence[int], *, unreachable: bool) -> int:
    """One exit code for a fleet: the first failure among the clusters that answered (in the
    contexts' order), else UNREACHABLE when a cluster did not answer, else OK."""
    for code in codes:
        if code != ExitCode.OK:
            return code
    if unreachable:
        return ExitCode.UNREACHABLE
    return ExitCode.OK
