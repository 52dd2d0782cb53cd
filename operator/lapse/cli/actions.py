"""`approve`, `deny`, `revoke`, `review`: the action annotations of Lapse's contract, as named.

An action is a JSON merge patch of one `lapse.dev/…` annotation, as `kubectl annotate
--overwrite` would send. Lapse's admission webhook checks it against the identity the API server
authenticated, records it and removes it; so the CLI adds no trust of its own, and when the
webhook refuses (approving your own request, say) its sentence is shown as it is.
"""

from __future__ import annotations

from typing import Any

from lapse.cli.client import Kube
from lapse.cli.errors import CliError, ExitCode
from lapse.cli.explain import foothold_sentences
from lapse.cli.grants import wait_until
from lapse.cli.objects import Io, Ref, parse_grant, parse_ref
from lapse.cli.render import dump
from lapse.cli.report import activity_lines
from lapse.core.kinds import ACCESS_REQUEST, BREAK_GLASS, Kind
from lapse.core.models import Phase

APPROVE = "lapse.dev/approve"
DENY = "lapse.dev/deny"
REVOKE = "lapse.dev/revoke"
REVIEW = "lapse.dev/review"

VERDICTS = {"justified": "Justified", "unjustified": "Unjustified"}


def review_value(verdict: str, comment: str) -> str:
    """`Justified: COMMENT` or `Unjustified: COMMENT`, the review annotation's grammar."""
    return f"{VERDICTS[verdict.lower()]}: {comment}"


def _target(ref: Ref, default: Kind) -> Kind:
    return ref.resource or default


def _label(resource: Kind, name: str) -> str:
    return f"{resource.singular}/{name}"


def _finish(io: Io, body: dict[str, Any], output: str | None, line: str) -> int:
    if output:
        io.result(dump(body, output))
    else:
        io.result(line)
    return ExitCode.OK


def run_approve(kube: Kube, io: Io, args: Any) -> int:
    ref = parse_ref(args.name)
    if ref.resource is BREAK_GLASS:
        raise CliError("a break-glass is not approved; review it afterwards", ExitCode.USAGE)
    # An approver approves what the grant gives, not a role's name: say it, and at a terminal
    # ask before the approval is recorded.
    pending = parse_grant(kube.get(ACCESS_REQUEST, ref.name))
    risk = pending.status.risk
    if risk is not None and risk.summary:
        io.progress(f"Approving {ref.name}: {risk.summary}")
    if not args.yes and io.interactive and not confirm(io, "Approve? [y/N] "):
        raise CliError(f"{_label(ACCESS_REQUEST, ref.name)} not approved", ExitCode.INTERRUPTED)
    body = kube.annotate(ACCESS_REQUEST, ref.name, {APPROVE: args.message or ""}, None)
    return _finish(io, body, args.output, f"{_label(ACCESS_REQUEST, ref.name)} approved")


def confirm(io: Io, question: str) -> bool:
    io.progress(question.rstrip())
    answer = io.ask()
    return answer.strip().lower() in ("y", "yes")


def run_deny(kube: Kube, io: Io, args: Any) -> int:
    ref = parse_ref(args.name)
    if ref.resource is BREAK_GLASS:
        raise CliError("a break-glass is not denied; revoke it instead", ExitCode.USAGE)
    body = kube.annotate(ACCESS_REQUEST, ref.name, {DENY: args.message}, None)
    return _finish(io, body, args.output, f"{_label(ACCESS_REQUEST, ref.name)} denied")


def run_revoke(kube: Kube, io: Io, args: Any) -> int:
    ref = parse_ref(args.name, breakglass=args.breakglass)
    resource = _target(ref, ACCESS_REQUEST)
    current = parse_grant(kube.get(resource, ref.name))
    phase = current.status.phase
    if phase is not None and phase.ended:
        raise CliError(
            resource.describe(
                ref.name, current.metadata.namespace, f"already {phase.value.lower()}"
            )
            + "; there is nothing to revoke"
        )
    body = kube.annotate(resource, ref.name, {REVOKE: args.message or ""}, None)
    label = _label(resource, ref.name)
    if args.no_wait:
        return _finish(io, body, args.output, f"{label} revocation sent")
    final = wait_until(kube, resource, body, args.timeout, done=ended)
    if final is None:
        io.error(
            f"{label}: Lapse accepted the revocation but has not ended the access within "
            f"{args.timeout:g}s; check with: kubectl lapse get {_spelled(resource, ref.name)}"
        )
        return ExitCode.TIMEOUT
    outcome = (final.get("status") or {}).get("phase", "Revoked").lower()
    return _finish(io, final, args.output, f"{label} {outcome}; its access is gone")


def _spelled(resource: Kind, name: str) -> str:
    return f"bg/{name}" if resource is BREAK_GLASS else name


def ended(phase: Phase | None) -> bool:
    return phase is not None and phase.ended


def run_review(kube: Kube, io: Io, args: Any) -> int:
    ref = parse_ref(args.name, breakglass=True)
    value = review_value(args.verdict, args.message)
    # The reviewer sees what the access gave, and what was made and done with it, before the
    # verdict is recorded.
    glass = parse_grant(kube.get(BREAK_GLASS, ref.name))
    if glass.status.risk is not None and glass.status.risk.summary:
        io.progress(f"It gave: {glass.status.risk.summary}")
    for line in foothold_sentences(glass):
        io.progress(line)
    for line in activity_lines(glass):
        io.progress(line)
    body = kube.annotate(BREAK_GLASS, ref.name, {REVIEW: value}, None)
    verdict = VERDICTS[args.verdict.lower()]
    return _finish(io, body, args.output, f"{_label(BREAK_GLASS, ref.name)} reviewed: {verdict}")
