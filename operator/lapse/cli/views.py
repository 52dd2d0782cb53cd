"""`list`, `get` and `explain`: reading grants the way a person wants to see them.

`kubectl get accessrequests` shows what is stored; these views add what a person asks next —
how much time is left, how many approvals are in, and why something is the way it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from lapse.cli.client import Kube
from lapse.cli.errors import CliError, ExitCode
from lapse.cli.explain import explain
from lapse.cli.objects import Io, fetch, parse_grant, parse_ref, read_policy
from lapse.cli.render import (
    COLUMNS,
    WIDE_COLUMNS,
    Grant,
    as_list,
    describe,
    dump,
    row,
    sort_key,
    table,
)
from lapse.core.kinds import ACCESS_POLICY, ACCESS_REQUEST, BREAK_GLASS
from lapse.core.models import AccessPolicy, BreakGlass


def covers(glass: BreakGlass, namespace: str) -> bool:
    """Whether a break-glass gives access in `namespace` (a cluster-wide one does everywhere)."""
    return not glass.spec.namespaces or namespace in glass.spec.namespaces


def _policies(kube: Kube) -> dict[str, AccessPolicy]:
    """Every readable policy by name; developers usually may not list them, and that is fine."""
    try:
        bodies = kube.list(ACCESS_POLICY, None)
    except CliError:
        return {}
    found: dict[str, AccessPolicy] = {}
    for body in bodies:
        try:
            policy = AccessPolicy.model_validate(body)
        except ValidationError:
            continue
        found[policy.metadata.name] = policy
    return found


def _parse_all(bodies: list[dict[str, Any]], warnings: list[str]) -> list[Grant]:
    grants: list[Grant] = []
    for body in bodies:
        try:
            grants.append(parse_grant(body))
        except CliError as error:
            warnings.append(f"skipped: {error.message}")
    return grants


@dataclass(frozen=True)
class Listing:
    """What `list` read from one cluster: the grants to show, in order, their bodies, the
    policies that decided them (those the user may read) and what was left out."""

    namespace: str | None
    grants: list[Grant]
    raw: list[dict[str, Any]]
    policies: dict[str, AccessPolicy]
    glasses_asked: bool
    warnings: list[str]


def read_listing(kube: Kube, *, all_namespaces: bool, breakglass: bool) -> Listing:
    namespace = None if all_namespaces else kube.namespace
    bodies = kube.list(ACCESS_REQUEST, namespace)
    if breakglass:
        glasses = kube.list(BREAK_GLASS, None)
    elif all_namespaces:
        # Break-glasses are cluster-scoped, so "all" includes them — when the user may see them.
        try:
            glasses = kube.list(BREAK_GLASS, None)
        except CliError:
            glasses = []
    else:
        glasses = []
    warnings: list[str] = []
    requests = _parse_all(bodies, warnings)
    breaks = [g for g in _parse_all(glasses, warnings) if isinstance(g, BreakGlass)]
    if namespace is not None:
        breaks = [g for g in breaks if covers(g, namespace)]
    grants: list[Grant] = sorted(requests, key=sort_key) + sorted(breaks, key=sort_key)
    shown = {g.metadata.uid for g in grants}
    raw = [b for b in bodies + glasses if (b.get("metadata") or {}).get("uid") in shown]
    policies = _policies(kube) if requests else {}
    return Listing(namespace, grants, raw, policies, bool(glasses) or breakglass, warnings)


def run_list(kube: Kube, io: Io, args: Any) -> int:
    listing = read_listing(kube, all_namespaces=args.all_namespaces, breakglass=args.breakglass)
    for warning in listing.warnings:
        print(f"warning: {warning}", file=io.err)
    if args.output in ("json", "yaml"):
        io.result(dump(as_list(listing.raw), args.output))
        return ExitCode.OK
    if not listing.grants:
        namespace = listing.namespace
        where = "in any namespace" if namespace is None else f"in namespace {namespace}"
        what = "access requests or break-glasses" if listing.glasses_asked else "access requests"
        print(f"No {what} found {where}.", file=io.err)
        return ExitCode.OK
    now = datetime.now(UTC)
    wide = args.output == "wide"
    rows = [row(g, listing.policies.get(g.status.policy or ""), now, wide) for g in listing.grants]
    io.result(table(WIDE_COLUMNS if wide else COLUMNS, rows, io.colour))
    return ExitCode.OK


def run_get(kube: Kube, io: Io, args: Any) -> int:
    body = fetch(kube, parse_ref(args.name, breakglass=args.breakglass), None)
    if args.output in ("json", "yaml"):
        io.result(dump(body, args.output))
        return ExitCode.OK
    grant = parse_grant(body)
    policy = read_policy(kube, grant.status.policy)
    io.result(describe(grant, policy, datetime.now(UTC), io.colour))
    return ExitCode.OK


def run_explain(kube: Kube, io: Io, args: Any) -> int:
    grant = parse_grant(fetch(kube, parse_ref(args.name, breakglass=args.breakglass), None))
    policy = read_policy(kube, grant.status.policy)
    io.result(explain(grant, policy, datetime.now(UTC)))
    return ExitCode.OK
