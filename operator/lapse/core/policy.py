"""Who may have which role, where, for how long: the policy decision, deny by default.

The decision is a plain function of the request, the policies and the namespace's labels, so
every rule can be tested without a cluster. The checks narrow in the order a person would ask:
is there a policy for me, does it allow this role, here, for this long — and the answer names
the first check that failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from lapse.core.durations import DurationError, format_duration, parse_duration
from lapse.core.models import (
    AccessPolicy,
    AccessRequest,
    ApprovalMode,
    Identities,
    LabelSelector,
    RoleRef,
    Subject,
    SubjectKind,
    UserInfo,
)


class Outcome(StrEnum):
    GRANT = "Grant"
    PENDING = "Pending"
    DENY = "Deny"
    INVALID = "Invalid"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    message: str
    policy: str | None = None
    duration: timedelta | None = None


def matches_identities(identities: Identities, user: UserInfo) -> bool:
    return user.username in identities.users or any(g in identities.groups for g in user.groups)


def matches_selector(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Label-selector semantics; an empty selector matches every namespace, as in Kubernetes."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        value = labels.get(requirement.key)
        if requirement.operator == "In" and value not in requirement.values:
            return False
        if requirement.operator == "NotIn" and present and value in requirement.values:
            return False
        if requirement.operator == "Exists" and not present:
            return False
        if requirement.operator == "DoesNotExist" and present:
            return False
    return True


def is_trusted_applier(policy: AccessPolicy, user: UserInfo) -> bool:
    """Whether creation by `user` counts as approval under `policy` (e.g. a GitOps controller)."""
    return matches_identities(policy.spec.approval.trusted_appliers, user)


def subject_principal(subject: Subject) -> UserInfo:
    """The identity a named subject would have, for matching a policy's requesters.

    A user's groups are known only to the API server at login, so a named user matches a
    policy through `requesters.users` alone; a group through `requesters.groups`.
    """
    if subject.kind == SubjectKind.USER:
        return UserInfo(username=subject.name)
    if subject.kind == SubjectKind.GROUP:
        return UserInfo(username="", groups=[subject.name])
    namespace = subject.namespace or ""
    return UserInfo(
        username=f"system:serviceaccount:{namespace}:{subject.name}",
        groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
    )


def allows_role(policy: AccessPolicy, role: RoleRef) -> bool:
    return any(r.kind == role.kind and r.name == role.name for r in policy.spec.roles)


def allows_namespace(
    policy: AccessPolicy, namespace: str, labels: Mapping[str, str] | None
) -> bool:
    if namespace in policy.spec.namespaces:
        return True
    selector = policy.spec.namespace_selector
    return selector is not None and labels is not None and matches_selector(selector, labels)


def parse_policy(body: Mapping[str, Any]) -> AccessPolicy | None:
    """An AccessPolicy object as the model, or None when it cannot be read: a policy that
    cannot be read matches nothing, because a broken policy must not grant."""
    try:
        return AccessPolicy.model_validate(body)
    except ValidationError:
        return None


def needs_namespace_labels(policies: Sequence[AccessPolicy]) -> bool:
    """Whether deciding could depend on namespace labels, so the caller fetches them only then."""
    return any(p.spec.namespace_selector is not None for p in policies)


def compute_policy_window(policy: AccessPolicy) -> tuple[timedelta, timedelta] | None:
    """(default, max) of a policy, or None when its durations are malformed: it then matches
    nothing, because a broken policy must not grant."""
    try:
        default = parse_duration(policy.spec.default_duration)
        longest = parse_duration(policy.spec.max_duration)
    except DurationError:
        return None
    return min(default, longest), longest


def compute_decision(
    request: AccessRequest,
    policies: Sequence[AccessPolicy],
    namespace_labels: Mapping[str, str] | None = None,
) -> Decision:
    """Grant, leave pending, deny or call invalid — with a CamelCase reason and a sentence."""
    spec = request.spec
    requester = spec.requester
    namespace = request.metadata.namespace or ""
    role = f"{spec.role.kind} {spec.role.name}"
    if requester is None:
        return Decision(
            Outcome.INVALID,
            "MissingRequester",
            "The request carries no requester; it was not admitted through the Lapse webhook.",
        )
    asked: timedelta | None = None
    if spec.duration is not None:
        try:
            asked = parse_duration(spec.duration)
        except DurationError as error:
            return Decision(Outcome.INVALID, "InvalidDuration", f"Duration {error}.")
    ordered = sorted(policies, key=lambda p: p.metadata.name)
    trusting = [p for p in ordered if is_trusted_applier(p, requester)]
    subject = spec.subject
    # Whose eligibility counts: the requester's own, or — when a trusted applier (GitOps)
    # names someone — the subject's, under the policies that trust that applier.
    principal, who, pool = requester, requester.username, ordered
    if subject is not None and not (
        subject.kind == SubjectKind.USER and subject.name == requester.username
    ):
        if not trusting:
            return Decision(
                Outcome.DENY,
                "SubjectNotAllowed",
                f"{requester.username} may not request access for {subject.kind} "
                f"{subject.name}; only a policy's trusted appliers may name another subject.",
            )
        principal, who, pool = (
            subject_principal(subject),
            f"{subject.kind} {subject.name}",
            trusting,
        )

    mine = [p for p in pool if matches_identities(p.spec.requesters, principal)]
    if not mine:
        return Decision(
            Outcome.DENY,
            "NoMatchingPolicy",
            f"No AccessPolicy lets {who} request access.",
        )
    with_role = [p for p in mine if allows_role(p, spec.role)]
    if not with_role:
        return Decision(
            Outcome.DENY,
            "RoleNotAllowed",
            f"No AccessPolicy lets {who} request {role}.",
        )
    here = [p for p in with_role if allows_namespace(p, namespace, namespace_labels)]
    if not here:
        return Decision(
            Outcome.DENY,
            "NamespaceNotAllowed",
            f"No AccessPolicy lets {who} request {role} in namespace {namespace}.",
        )

    fitting: list[tuple[AccessPolicy, timedelta]] = []
    longest_allowed = timedelta(0)
    for policy in here:
        window = compute_policy_window(policy)
        if window is None:
            continue
        default, longest = window
        wanted = asked if asked is not None else default
        longest_allowed = max(longest_allowed, longest)
        if wanted <= longest:
            fitting.append((policy, wanted))
    if not fitting:
        wanted_text = spec.duration or "the default duration"
        return Decision(
            Outcome.DENY,
            "DurationExceedsPolicy",
            f"Duration {wanted_text} exceeds the {format_duration(longest_allowed)} "
            f"that policy allows for {role} in namespace {namespace}.",
        )

    applied = [(p, d) for p, d in fitting if is_trusted_applier(p, requester)]
    if applied:
        policy, duration = applied[0]
        return Decision(
            Outcome.GRANT,
            "GitOpsApproved",
            f"AccessPolicy {policy.metadata.name} trusts {requester.username} as an applier: "
            f"creating the request approved {role} in namespace {namespace} "
            f"for {format_duration(duration)}.",
            policy=policy.metadata.name,
            duration=duration,
        )
    automatic = [(p, d) for p, d in fitting if p.spec.approval.mode == ApprovalMode.AUTO]
    if automatic:
        policy, duration = automatic[0]
        return Decision(
            Outcome.GRANT,
            "AutoApproved",
            f"AccessPolicy {policy.metadata.name} grants {role} in namespace {namespace} "
            f"for {format_duration(duration)} without approval.",
            policy=policy.metadata.name,
            duration=duration,
        )
    policy, duration = fitting[0]
    return Decision(
        Outcome.PENDING,
        "AwaitingApproval",
        f"AccessPolicy {policy.metadata.name} requires approval for {role} "
        f"in namespace {namespace}.",
        policy=policy.metadata.name,
        duration=duration,
    )
