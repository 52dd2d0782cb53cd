"""Verified revocation: after a grant ends, the API server itself says whether access is gone.

Deleting a binding should end what it allowed, but only the authorizer knows what a subject
may do. After a grant's bindings are deleted Lapse asks it (SubjectAccessReview) about what the
role gave, in the places it gave it, and asks as little as proves the point: a binding allows
every rule of its role or none, so one permission of the role denied in a place proves the
grant's binding there no longer counts. Only when a permission is still allowed does Lapse
ask about the next one; a place where every one checked is allowed is one of two things: one of
the grant's own bindings survived (the authorizer names it: a failure, loud), or the subject
holds the access independently of this grant — a binding of their own, a group, another grant
— which is reported, not called a failure, since Lapse never granted it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lapse.core.models import Subject, SubjectKind, UserInfo
from lapse.core.rbac import Rule

# At most this many reviews a place: enough to speak for a role whose first permissions the
# subject also holds elsewhere, without a review per rule of a role of hundreds.
MAX_CHECKS = 8
# How the RBAC authorizer's reason names the binding that allowed a review.
RBAC_ALLOWED = "allowed by "
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


def compute_access_checks(rules: Sequence[Rule], namespaces: Sequence[str]) -> list[AccessCheck]:
    """What to ask about, place by place (cluster-wide when `namespaces` is empty): the role's
    resource rules that a binding grants to any name, in a stable order, at most MAX_CHECKS a
    place. A rule limited to resourceNames is left out: a review without the name would be
    denied even while the binding stands, which proves nothing."""
    checks: list[AccessCheck] = []
    places: list[str | None] = list(namespaces) or [None]
    for place in places:
        asked = 0
        for rule in rules:
            if rule.resource_names or not rule.resources:
                continue
            for group in sorted(rule.api_groups):
                for resource in sorted(rule.resources):
                    for verb in sorted(rule.verbs):
                        if asked >= MAX_CHECKS:
                            break
                        check = AccessCheck(verb, group, resource, place)
                        if check not in checks:
                            checks.append(check)
                            asked += 1
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


def compute_next_check(
    checks: Sequence[AccessCheck], answers: Sequence[tuple[AccessCheck, bool, str]]
) -> AccessCheck | None:
    """The next check worth asking, or None when the answers settle it. A place is settled
    by its first denial, or by an allowance the RBAC authorizer attributes to a binding: the
    grant's own (it survived) or another (the subject holds the access without this grant,
    which no further review of that place would change). Only an allowance without a named
    binding (another authorizer, a group like system:masters) leads to the next permission."""
    settled = {c.namespace for c, ok, reason in answers if not ok or RBAC_ALLOWED in reason}
    asked = {check for check, _, _ in answers}
    for check in checks:
        if check.namespace not in settled and check not in asked:
            return check
    return None


def compute_verification(
    answers: Sequence[tuple[AccessCheck, bool, str]], bindings: Sequence[tuple[str, str | None]]
) -> Verification:
    """The verdict from each check's answer (allowed, the authorizer's reason), given the
    grant's bindings (name, namespace): a place is clear once one check there was denied."""
    if not answers:
        return Verification("True", "NothingToCheck", "The role grants no resource access.")
    held = [(c, reason) for c, ok, reason in answers if ok]
    own = {f'"{name}/{namespace}"' if namespace else f'"{name}"' for name, namespace in bindings}
    through_grant = [(c, reason) for c, reason in held if any(o in reason for o in own)]
    if through_grant:
        remaining = tuple(f"{c.describe()} ({reason})" for c, reason in through_grant)
        return Verification(
            "False",
            "AccessRemains",
            "The grant ended but the API server still allows through its own binding: "
            f"{'; '.join(remaining)}.",
            remaining=remaining,
        )
    if not held:
        proofs = ", ".join(c.describe() for c, ok, _ in answers if not ok)
        return Verification(
            "True",
            "AccessGone",
            f"The API server confirms the access is gone: it denies {proofs}, which the role "
            f"gives ({len(answers)} review(s)).",
        )
    elsewhere = tuple(f"{check.describe()} ({reason or 'allowed'})" for check, reason in held)
    return Verification(
        "True",
        "HeldElsewhere",
        "The grant's bindings are gone; the subject still holds, through access Lapse did not "
        f"grant: {'; '.join(elsewhere)}.",
        elsewhere=elsewhere,
    )
