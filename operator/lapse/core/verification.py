"""Verified revocation: after a grant ends, the API server itself says whether access is gone.

Deleting a binding should end what it allowed, but only the authorizer knows what a subject
may do. After a grant's bindings are deleted Lapse asks it (SubjectAccessReview) about what the
role gave, in the places it gave it. A permission still allowed is one of two things: one of
the grant's own bindings survived (a failure, loud), or the subject holds it independently of
this grant — a binding of their own, a group, another grant — which is reported, not called a
failure, since Lapse never granted it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lapse.core.models import Subject, SubjectKind, UserInfo

# Enough to speak for the role without a review per rule for a role of hundreds of rules.
MAX_CHECKS = 8
VERIFIED = "Verified"


@dataclass(frozen=True)
class AccessCheck:
    verb: str
    group: str
    resource: str
    namespace: str | None

    def describe(self) -> str:
        what = f"{self.resource}.{self.group}" if self.group else self.resource
        where = f" in {self.namespace}" if self.namespace else " cluster-wide"
        return f"{self.verb} {what}{where}"


@dataclass(frozen=True)
class Verification:
    status: str  # "True" access is gone (or held only independently); "False" it remains
    reason: str
    message: str
    remaining: tuple[str, ...] = ()
    elsewhere: tuple[str, ...] = ()


def compute_access_checks(
    rules: Sequence[Mapping[str, Any]], namespaces: Sequence[str]
) -> list[AccessCheck]:
    """What to ask about: the role's resource rules, in each place the grant reached
    (cluster-wide when `namespaces` is empty), at most MAX_CHECKS."""
    checks: list[AccessCheck] = []
    places: list[str | None] = list(namespaces) or [None]
    for rule in rules:
        for group in rule.get("apiGroups") or ():
            for resource in rule.get("resources") or ():
                for verb in rule.get("verbs") or ():
                    for place in places:
                        check = AccessCheck(str(verb), str(group), str(resource), place)
                        if check not in checks:
                            checks.append(check)
                        if len(checks) >= MAX_CHECKS:
                            return checks
    return checks


def build_access_review(
    check: AccessCheck, subject: Subject, requester: UserInfo | None
) -> dict[str, Any]:
    """A SubjectAccessReview of `check` for the grant's subject, as the API server would see
    them: a user with their groups from admission, a group, or a ServiceAccount."""
    resource, _, subresource = check.resource.partition("/")
    attributes: dict[str, Any] = {"verb": check.verb, "group": check.group, "resource": resource}
    if subresource:
        attributes["subresource"] = subresource
    if check.namespace:
        attributes["namespace"] = check.namespace
    spec: dict[str, Any] = {"resourceAttributes": attributes}
    if subject.kind == SubjectKind.USER:
        spec["user"] = subject.name
        if requester is not None and requester.username == subject.name:
            spec["groups"] = list(requester.groups)
    elif subject.kind == SubjectKind.GROUP:
        spec["groups"] = [subject.name]
    else:
        namespace = subject.namespace or ""
        spec["user"] = f"system:serviceaccount:{namespace}:{subject.name}"
        spec["groups"] = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def compute_verification(
    answers: Sequence[tuple[AccessCheck, bool, str]], bindings_left: Sequence[str]
) -> Verification:
    """The verdict from each check's answer (allowed, the authorizer's reason) and the grant's
    bindings that still exist."""
    allowed = [(check, reason) for check, ok, reason in answers if ok]
    if not answers:
        return Verification("True", "NothingToCheck", "The role grants no resource access.")
    if bindings_left:
        remaining = tuple(check.describe() for check, _ in allowed)
        return Verification(
            "False",
            "AccessRemains",
            f"The grant ended but its binding(s) {', '.join(bindings_left)} still exist; the "
            f"API server still allows: {', '.join(remaining) or 'nothing checked'}.",
            remaining=remaining,
        )
    if not allowed:
        return Verification(
            "True",
            "AccessGone",
            f"The API server confirms the access is gone ({len(answers)} permission(s) checked).",
        )
    elsewhere = tuple(f"{check.describe()} ({reason or 'allowed'})" for check, reason in allowed)
    return Verification(
        "True",
        "HeldElsewhere",
        "The grant's bindings are gone; the subject still holds, through access Lapse did not "
        f"grant: {'; '.join(elsewhere)}.",
        elsewhere=elsewhere,
    )
