"""Whether an approval rests on identities nobody else can assume, per policy and per request.

A policy trusts its appliers' creation of a request as a merged pull request, and counts its
approvers' decisions. Both are identities the API server authenticated — and an identity can be
borrowed: impersonated, its tokens minted or read, a pod run as it (lapse.core.rbac finds who
can). This module turns those paths into what a policy's status shows, decides what a request
created by an exposed applier becomes (it waits for approvers), which approvals a requester
could have forged (they do not count), and what a grant would let its holder act as.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from lapse.core.conditions import ConditionStatus, compute_conditions
from lapse.core.models import (
    AccessPolicy,
    Condition,
    ExposureRecord,
    Identities,
    Subject,
    UserInfo,
)
from lapse.core.policy import Decision, Outcome
from lapse.core.rbac import (
    Actor,
    Held,
    Holdings,
    Identity,
    Path,
    Snapshot,
    Trusted,
    compute_exposure,
    compute_ways,
)

EXPOSED = "Exposed"
APPLIER = "Applier"
APPROVER = "Approver"
# How many paths a sentence names before it counts the rest.
NAMED = 3


def compute_identities(identities: Identities) -> list[Identity]:
    return [Identity.of_username(u) for u in identities.users] + [
        Identity("Group", g) for g in identities.groups
    ]


def accepts(accepted: Identities, actor: Actor) -> bool:
    """Whether the policy trusts `actor` as much as the identities it can act as."""
    if actor.kind == "Group":
        return actor.name in accepted.groups
    return (actor.username or "") in accepted.users


@dataclass(frozen=True)
class Roles:
    """Every identity an approval rests on, across policies: what a grant must not reach."""

    appliers: Mapping[Identity, tuple[str, ...]]
    approvers: Mapping[Identity, tuple[str, ...]]


def compute_roles(policies: Iterable[AccessPolicy]) -> Roles:
    appliers: dict[Identity, tuple[str, ...]] = {}
    approvers: dict[Identity, tuple[str, ...]] = {}
    for policy in sorted(policies, key=lambda p: p.metadata.name):
        name = policy.metadata.name
        for identity in compute_identities(policy.spec.approval.trusted_appliers):
            appliers[identity] = (*appliers.get(identity, ()), name)
        for identity in compute_identities(policy.spec.approval.approvers):
            approvers[identity] = (*approvers.get(identity, ()), name)
    return Roles(appliers, approvers)


def compute_policy_exposure(
    policy: AccessPolicy,
    snapshot: Snapshot,
    trusted: Trusted,
    holdings: Holdings,
) -> list[ExposureRecord]:
    """Everyone besides administrators who can act as one of the policy's appliers or
    approvers, how, and through which binding."""
    accepted = policy.spec.approval.exposure_accepted
    records: list[ExposureRecord] = []
    for role, identities in (
        (APPLIER, policy.spec.approval.trusted_appliers),
        (APPROVER, policy.spec.approval.approvers),
    ):
        for identity in compute_identities(identities):
            for path in compute_exposure(snapshot, identity, trusted, holdings):
                records.append(
                    ExposureRecord(
                        role=role,
                        identity=identity.describe(),
                        actor=path.actor.describe(),
                        way=path.way,
                        through=path.through,
                        accepted=accepts(accepted, path.actor),
                    )
                )
    return records


def describe_records(records: Sequence[ExposureRecord]) -> str:
    named = [f"{r.actor} can {r.way} ({r.identity}, through {r.through})" for r in records[:NAMED]]
    more = len(records) - NAMED
    return "; ".join(named) + (f"; and {more} more (see status.exposures)" if more > 0 else "")


def compute_exposure_conditions(
    records: Sequence[ExposureRecord],
    previous: Sequence[Condition],
    *,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """The conditions with `Exposed` set: True while someone not accepted can act as an
    applier or an approver."""
    open_ = [r for r in records if not r.accepted]
    appliers = [r for r in open_ if r.role == APPLIER]
    if appliers:
        reason = "ApplierExposed"
        message = (
            f"Requests these appliers create wait for approvers: {describe_records(appliers)}."
        )
        approvers = [r for r in open_ if r.role == APPROVER]
        if approvers:
            message += f" Approvers exposed too: {describe_records(approvers)}."
    elif open_:
        reason = "ApproverExposed"
        message = (
            "Their approvals do not count on a request by whoever can act as them: "
            f"{describe_records(open_)}."
        )
    else:
        reason = "NotExposed"
        message = "Nobody but administrators can act as this policy's appliers or approvers."
        if records:
            message += f" Accepted: {describe_records(records)}."
    status: ConditionStatus = "True" if open_ else "False"
    return compute_conditions(previous, EXPOSED, status, reason, message, now, generation)


def _rests_on(identity: Identity, user: UserInfo) -> bool:
    if identity.kind == "Group":
        return identity.name in user.groups
    return Identity.of_username(user.username) == identity


def compute_applier_check(
    decision: Decision,
    policy: AccessPolicy | None,
    requester: UserInfo,
    records: Sequence[ExposureRecord],
    *,
    unverified: str | None = None,
) -> Decision:
    """A GitOps approval only from an applier nobody else can act as: otherwise the request
    waits for approvers. `unverified` says why the requester cannot be the applier it names
    (a ServiceAccount without that account's UID: impersonated)."""
    if decision.reason != "GitOpsApproved" or policy is None:
        return decision
    if unverified is not None:
        return Decision(
            Outcome.PENDING,
            "ApplierUnverified",
            f"{unverified}; Lapse does not take it as a GitOps approval, so it waits for an "
            "approver.",
            policy=decision.policy,
            duration=decision.duration,
        )
    mine = [
        identity
        for identity in compute_identities(policy.spec.approval.trusted_appliers)
        if _rests_on(identity, requester)
    ]
    exposed = [
        r
        for r in records
        if r.role == APPLIER and not r.accepted and any(r.identity == i.describe() for i in mine)
    ]
    if not exposed:
        return decision
    return Decision(
        Outcome.PENDING,
        "ApplierExposed",
        f"AccessPolicy {policy.metadata.name} trusts {requester.username} as an applier, but "
        f"others can act as it: {describe_records(exposed)}. Its creating this request is not "
        "taken as approval; it waits for an approver.",
        policy=decision.policy,
        duration=decision.duration,
    )


def compute_forged(
    approver: UserInfo,
    policy: AccessPolicy,
    snapshot: Snapshot,
    trusted: Trusted,
    holdings: Holdings,
    suspects: Sequence[UserInfo],
) -> Path | None:
    """How one of `suspects` (the requester, the subject) could have made `approver`'s
    decision themselves, or None. An approver counted through a group needs that group
    impersonated too; one named by user name, the name alone."""
    by_name = approver.username in policy.spec.approval.approvers.users
    needed = [Identity.of_username(approver.username)]
    if not by_name:
        needed += [Identity("Group", g) for g in approver.groups]
        needed = (
            needed[:1]
            + [i for i in needed[1:] if i.name in policy.spec.approval.approvers.groups][:1]
        )
    for suspect in suspects:
        if suspect.username == approver.username:
            continue
        found: Path | None = None
        for identity in needed:
            paths = [
                p
                for p in compute_exposure(snapshot, identity, trusted, holdings)
                if p.actor.matches(suspect.username, suspect.groups)
            ]
            if not paths:
                found = None
                break
            found = found or paths[0]
        if found is not None:
            return found
    return None


def describe_forgery(approver: str, path: Path) -> str:
    return (
        f"{path.actor.describe()}, who asked for it or receives it, can act as {approver}: "
        f"{path.way} (through {path.through})"
    )


def subject_user(subject: Subject | None, requester: UserInfo) -> UserInfo | None:
    """The subject as a caller, where it is not the requester: its groups are not known."""
    if subject is None or subject.kind == "Group":
        return None
    if subject.kind == "ServiceAccount":
        return UserInfo(
            username=f"system:serviceaccount:{subject.namespace}:{subject.name}",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{subject.namespace}"],
        )
    if subject.name == requester.username:
        return None
    return UserInfo(username=subject.name)


@dataclass(frozen=True)
class ActingAs:
    """What a grant would let its holder act as: the identity, the policies resting on it as
    applier or approver, and how."""

    identity: Identity
    role: str
    policies: tuple[str, ...]
    way: str

    def describe(self) -> str:
        role = "a trusted applier" if self.role == APPLIER else "an approver"
        policies = ", ".join(self.policies)
        return f"{self.identity.describe()}, {role} of AccessPolicy {policies} ({self.way})"


GRANT_THROUGH = "this grant"


def compute_acting_as(
    grant_rules: Sequence[Held],
    held: Sequence[Held],
    snapshot: Snapshot,
    roles: Roles,
) -> list[ActingAs]:
    """The appliers and approvers a grant's rules (`grant_rules`, their `through` naming the
    grant) would let its holder act as, beyond what `held` lets them already."""
    found: list[ActingAs] = []
    for role, identities in ((APPLIER, roles.appliers), (APPROVER, roles.approvers)):
        for identity, policies in identities.items():
            before = {w for w, _ in compute_ways(held, snapshot, identity)}
            for way, through in compute_ways([*held, *grant_rules], snapshot, identity):
                if GRANT_THROUGH in through and way not in before:
                    found.append(ActingAs(identity, role, policies, way))
                    break
    return found


def describe_acting_as(found: Sequence[ActingAs]) -> str:
    return "; ".join(a.describe() for a in found)
