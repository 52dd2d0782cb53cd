"""`kubectl lapse request` and `kubectl lapse breakglass`: ask, then watch until Lapse decides.

Asking is one object; the useful answer is what Lapse made of it. So the command creates the
object and follows it with a watch (the answer arrives the moment Lapse writes it), stopping at
the first phase a person can act on: Active, Pending (someone must approve), Denied or Invalid.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lapse.cli.client import Kube
from lapse.cli.errors import AlreadyExists, ExitCode
from lapse.cli.explain import explain
from lapse.cli.objects import Io, parse_grant, read_policy
from lapse.cli.render import Grant, dump
from lapse.core.kinds import ACCESS_REQUEST, API_VERSION, BREAK_GLASS, Kind
from lapse.core.models import AccessRequest, Phase

# Phases where waiting longer would not change what the user should do next.
DECIDED = frozenset(
    {
        Phase.ACTIVE,
        Phase.SCHEDULED,
        Phase.PENDING,
        Phase.DENIED,
        Phase.INVALID,
        Phase.EXPIRED,
        Phase.REVOKED,
    }
)
REFUSED = frozenset({Phase.DENIED, Phase.INVALID, Phase.REVOKED})


def name_prefix(role: str) -> str:
    """A generateName prefix from a role name: `system:aggregate-to-edit` → `system-aggregate-…`."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", role.lower()).strip("-")[:40].strip("-")
    return f"{cleaned or 'access'}-"


def incident_name(incident: str | None) -> str | None:
    """The object name an incident gives a break-glass: `INC-4711` → `inc-4711`, so the
    runbook's later commands (`revoke bg/inc-4711`, `review inc-4711`) name what was made."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", (incident or "").lower()).strip("-")[:50].strip("-")
    return cleaned or None


def request_manifest(
    role: str,
    role_kind: str,
    namespace: str,
    duration: str | None,
    reason: str,
    ticket: str | None,
    name: str | None,
    *,
    start_at: str | None = None,
    extends: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"role": {"kind": role_kind, "name": role}, "reason": reason}
    if duration:
        spec["duration"] = duration
    if ticket:
        spec["ticket"] = ticket
    if start_at:
        spec["startAt"] = start_at
    if extends:
        spec["extends"] = extends
    prefix = f"{extends[:45]}-x-" if extends else name_prefix(role)
    metadata: dict[str, Any] = {"namespace": namespace}
    metadata.update({"name": name} if name else {"generateName": prefix})
    return {"apiVersion": API_VERSION, "kind": "AccessRequest", "metadata": metadata, "spec": spec}


def breakglass_manifest(
    role: str,
    namespaces: list[str],
    duration: str,
    reason: str,
    incident: str | None,
    name: str | None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "role": {"kind": "ClusterRole", "name": role},
        "namespaces": namespaces,
        "duration": duration,
        "reason": reason,
    }
    if incident:
        spec["incident"] = incident
    chosen = name or incident_name(incident)
    metadata: dict[str, Any] = {"name": chosen} if chosen else {"generateName": name_prefix(role)}
    return {"apiVersion": API_VERSION, "kind": "BreakGlass", "metadata": metadata, "spec": spec}


def phase_of(body: dict[str, Any]) -> Phase | None:
    raw = (body.get("status") or {}).get("phase")
    try:
        return Phase(raw) if raw else None
    except ValueError:
        return None


def decided(phase: Phase | None) -> bool:
    return phase in DECIDED


def wait_until(
    kube: Kube,
    resource: Kind,
    body: dict[str, Any],
    timeout: float,
    done: Callable[[Phase | None], bool] = decided,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any] | None:
    """The object once `done(phase)` holds, or None after `timeout` seconds."""
    metadata = body.get("metadata") or {}
    name, namespace = str(metadata.get("name")), metadata.get("namespace")
    deadline = clock() + timeout
    current = body
    while not done(phase_of(current)):
        remaining = deadline - clock()
        if remaining <= 0:
            return None
        version = (current.get("metadata") or {}).get("resourceVersion")
        for update in kube.watch(resource, name, namespace, version, remaining):
            current = update
            if done(phase_of(current)) or clock() >= deadline:
                break
        else:
            # The server ended the watch (its timeout, or a version too old): read and resume.
            current = kube.get(resource, name, namespace)
    return current


def _label(grant: Grant) -> str:
    if grant.kind == "BreakGlass":
        return f'breakglass "{grant.metadata.name}"'
    return f'accessrequest "{grant.metadata.name}" in namespace "{grant.metadata.namespace}"'


def create_and_wait(
    kube: Kube,
    io: Io,
    resource: Kind,
    manifest: dict[str, Any],
    wait: bool,
    timeout: float,
    output: str | None,
    *,
    taken: dict[str, Any] | None = None,
) -> int:
    """Create `manifest` (or, when its name is held already, `taken`) and follow it."""
    try:
        created = kube.create(resource, manifest)
    except AlreadyExists:
        if taken is None:
            raise
        created = kube.create(resource, taken)
    name = created["metadata"]["name"]
    where = f" in namespace {created['metadata']['namespace']}" if resource.namespaced else ""
    io.progress(f"{resource.singular}/{name} created{where}")
    final = created
    if wait:
        io.progress("waiting for Lapse to decide…")
        try:
            decided = wait_until(kube, resource, created, timeout)
        except KeyboardInterrupt:
            io.error(f"stopped waiting; {resource.singular}/{name} stays in place")
            return ExitCode.INTERRUPTED
        if decided is None:
            grant = parse_grant(kube.get(resource, name, created["metadata"].get("namespace")))
            state = grant.status.phase.value if grant.status.phase else "not decided"
            io.error(
                f"timed out after {timeout:g}s waiting for {_label(grant)} ({state}); "
                f"it stays in place: kubectl lapse explain {_ref(grant)}"
            )
            return ExitCode.TIMEOUT
        final = decided
    grant = parse_grant(final)
    if output:
        io.result(dump(final, output))
    if not wait:
        return ExitCode.OK
    phase = grant.status.phase
    if phase in REFUSED:
        reason = f" ({grant.status.reason})" if grant.status.reason else ""
        message = f": {grant.status.message}" if grant.status.message else ""
        verb = (
            "is invalid"
            if phase == Phase.INVALID
            else f"was {phase.value.lower() if phase else ''}"
        )
        io.error(f"{_label(grant)} {verb}{reason}{message}")
        return ExitCode.REFUSED
    policy = read_policy(kube, grant.status.policy)
    io.progress(explain(grant, policy, datetime.now(UTC)))
    return ExitCode.OK


def _ref(grant: Grant) -> str:
    if grant.kind == "BreakGlass":
        return f"bg/{grant.metadata.name}"
    return f"{grant.metadata.name} -n {grant.metadata.namespace}"


def run_request(kube: Kube, io: Io, args: Any) -> int:
    namespace = kube.namespace
    manifest = request_manifest(
        args.role,
        args.role_kind,
        namespace,
        args.duration,
        args.reason,
        args.ticket,
        args.name,
        start_at=args.start_at,
    )
    return create_and_wait(
        kube, io, ACCESS_REQUEST, manifest, not args.no_wait, args.timeout, args.output
    )


def run_extend(kube: Kube, io: Io, args: Any) -> int:
    """A new request that names the one it extends, for the same role; Lapse judges it."""
    namespace = kube.namespace
    original = AccessRequest.model_validate(kube.get(ACCESS_REQUEST, args.name, namespace))
    phase = original.status.phase
    if phase != Phase.ACTIVE:
        io.error(
            f"AccessRequest {args.name} is {phase.value if phase else 'not decided'}; only an "
            "active grant can be extended (kubectl lapse request asks anew)."
        )
        return ExitCode.REFUSED
    role = original.spec.role
    manifest = request_manifest(
        role.name,
        str(role.kind),
        namespace,
        args.by,
        args.reason,
        args.ticket or original.spec.ticket,
        None,
        extends=args.name,
    )
    return create_and_wait(
        kube, io, ACCESS_REQUEST, manifest, not args.no_wait, args.timeout, args.output
    )


def run_breakglass(kube: Kube, io: Io, args: Any) -> int:
    namespaces = [n for group in args.grant_namespaces or [] for n in group if n]
    manifest = breakglass_manifest(
        args.role, namespaces, args.duration, args.reason, args.incident, args.name
    )
    # A second break-glass of the same incident takes the incident's name with a suffix.
    slug = incident_name(args.incident)
    taken = None
    if slug and not args.name:
        taken = {**manifest, "metadata": {"generateName": f"{slug}-"}}
    return create_and_wait(
        kube,
        io,
        BREAK_GLASS,
        manifest,
        not args.no_wait,
        args.timeout,
        args.output,
        taken=taken,
    )
