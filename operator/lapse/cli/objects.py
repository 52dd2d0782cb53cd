"""Names as users type them (`NAME`, `ar/NAME`, `bg/NAME`) and API objects as Lapse models.

Every command accepts the same spellings kubectl accepts for kinds, and every object read from
the API goes through the pydantic models once, so the renderers work on typed data only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from pydantic import ValidationError

from lapse.cli.client import Kube
from lapse.cli.errors import CliError, ExitCode, NotFound
from lapse.cli.render import Grant
from lapse.core.kinds import ACCESS_POLICY, ACCESS_REQUEST, BREAK_GLASS, Kind
from lapse.core.models import AccessPolicy, AccessRequest, BreakGlass

_KIND_PREFIXES: dict[str, Kind] = {
    name: kind for kind in (ACCESS_REQUEST, BREAK_GLASS) for name in kind.names
}


@dataclass(frozen=True)
class Ref:
    """A name as typed; `resource` is None when the user named no kind."""

    name: str
    resource: Kind | None


def parse_ref(text: str, breakglass: bool = False) -> Ref:
    """`NAME`, `ar/NAME` or `bg/NAME` (and the long kind names); `--breakglass` means `bg/`."""
    prefix, slash, name = text.partition("/")
    if not slash:
        return Ref(text, BREAK_GLASS if breakglass else None)
    resource = _KIND_PREFIXES.get(prefix.lower())
    if resource is None:
        raise CliError(
            f"unknown kind {prefix!r} in {text!r}; use NAME, ar/NAME or bg/NAME", ExitCode.USAGE
        )
    if not name:
        raise CliError(f"{text!r} names no object", ExitCode.USAGE)
    if breakglass and resource is not BREAK_GLASS:
        raise CliError(f"--breakglass contradicts {text!r}", ExitCode.USAGE)
    return Ref(name, resource)


def parse_grant(body: Mapping[str, Any]) -> Grant:
    """An AccessRequest or BreakGlass model; an unreadable object is an error, not a crash."""
    kind = body.get("kind")
    name = (body.get("metadata") or {}).get("name", "?")
    try:
        if kind == "BreakGlass":
            return BreakGlass.model_validate(body)
        return AccessRequest.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CliError(f"{kind} {name!r} cannot be read: {where}: {first['msg']}") from None


def read_policy(kube: Kube, name: str | None) -> AccessPolicy | None:
    """The policy that decided, if the user may read it; explanations degrade without it."""
    if not name:
        return None
    body = kube.get_optional(ACCESS_POLICY, name)
    if body is None:
        return None
    try:
        return AccessPolicy.model_validate(body)
    except ValidationError:
        return None


def fetch(kube: Kube, ref: Ref, namespace: str | None) -> dict[str, Any]:
    """The named object; a bare NAME is an AccessRequest, or else a BreakGlass of that name."""
    if ref.resource is not None:
        return kube.get(ref.resource, ref.name, namespace)
    try:
        return kube.get(ACCESS_REQUEST, ref.name, namespace)
    except NotFound as missing:
        try:
            return kube.get(BREAK_GLASS, ref.name)
        except CliError:
            raise missing from None


@dataclass(frozen=True)
class Io:
    """Where output goes: results on stdout; progress on stderr when stdout carries -o data."""

    out: TextIO
    err: TextIO
    colour: bool
    machine: bool = False
    # A person at a terminal who can answer a question (stdin and stdout are TTYs).
    interactive: bool = False
    ask: Callable[[], str] = input

    def result(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def progress(self, text: str) -> None:
        print(text, file=self.err if self.machine else self.out, flush=True)

    def error(self, text: str) -> None:
        print(f"error: {text}", file=self.err, flush=True)
