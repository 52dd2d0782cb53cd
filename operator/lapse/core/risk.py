"""What a grant really gives: a role's rules in plain words, with the risky parts named.

An approver of "edit in payments for 2h" sees a role name; what they approve is a list of
PolicyRules, and `edit` lets its holder read every Secret, exec into pods, mint tokens and
impersonate ServiceAccounts. These functions turn rules into short phrases ("read and write
deployments"), flag the capabilities a security reviewer asks about by stable names that
policies can use, and split what is new for a subject from what they already held.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lapse.core.grants import GrantKey
from lapse.core.models import AccessPolicy, RiskSummary
from lapse.core.policy import Decision, Outcome

READ = frozenset({"get", "list", "watch"})
WRITE = frozenset({"create", "update", "patch", "delete", "deletecollection"})
WORKLOADS = frozenset(
    {
        "pods",
        "deployments",
        "statefulsets",
        "daemonsets",
        "replicasets",
        "replicationcontrollers",
        "jobs",
        "cronjobs",
    }
)
RBAC_KINDS = frozenset({"roles", "rolebindings", "clusterroles", "clusterrolebindings"})
CONNECT = frozenset({"pods/exec", "pods/attach", "pods/portforward"})
# What each flagged capability means, in the words the summary uses; the keys are what an
# AccessPolicy names in `capabilities.requireApproval` and `capabilities.refuse`.
CAPABILITIES: Mapping[str, str] = {
    "ReadSecrets": "read Secrets",
    "ExecIntoPods": "exec, attach or port-forward into pods",
    "RunWorkloads": "create pods or workloads (and so run as any ServiceAccount there)",
    "MintTokens": "mint ServiceAccount tokens",
    "Impersonate": "impersonate users, groups or ServiceAccounts",
    "WriteRBAC": "create or change Roles and bindings",
    "BindOrEscalate": "bind or escalate roles",
    "DeleteNamespaces": "delete namespaces",
    "Wildcards": "use wildcard rules (anything, present or future)",
    "NodeProxy": "proxy to nodes (the kubelet API)",
    # Not read from the rules alone: what they reach among the policies' appliers and
    # approvers (lapse.core.exposure). Always needs an approver, GitOps or not.
    "ActAsApprover": "act as an approver or a trusted applier of an AccessPolicy",
}
ACT_AS_APPROVER = "ActAsApprover"
MAX_LISTED = 12


@dataclass(frozen=True)
class Permission:
    """One phrase of the summary and the access check that tells whether a subject holds it."""

    text: str
    verb: str
    group: str
    resource: str


def _strings(rule: Mapping[str, Any], key: str) -> list[str]:
    return [str(v) for v in rule.get(key) or ()]


def _matches(values: Iterable[str], wanted: Iterable[str]) -> bool:
    have = set(values)
    return "*" in have or bool(have & set(wanted))


def compute_capabilities(rules: Sequence[Mapping[str, Any]]) -> list[str]:
    """The flagged capabilities the rules give, in CAPABILITIES' order."""
    found: set[str] = set()
    for rule in rules:
        verbs, resources = _strings(rule, "verbs"), _strings(rule, "resources")
        groups = _strings(rule, "apiGroups")
        if "*" in verbs or "*" in resources or "*" in groups:
            found.add("Wildcards")
        if not resources:
            continue
        core = _matches(groups, [""])
        rbac = _matches(groups, ["rbac.authorization.k8s.io"])
        if core and _matches(resources, ["secrets"]) and _matches(verbs, READ):
            found.add("ReadSecrets")
        if core and (_matches(resources, CONNECT) or "pods/*" in resources):
            found.add("ExecIntoPods")
        if _matches(resources, WORKLOADS) and _matches(verbs, ["create"]):
            found.add("RunWorkloads")
        if core and _matches(resources, ["serviceaccounts/token"]) and _matches(verbs, ["create"]):
            found.add("MintTokens")
        if "impersonate" in verbs or ("*" in verbs and _matches(resources, ["users", "groups"])):
            found.add("Impersonate")
        if rbac and _matches(resources, RBAC_KINDS) and _matches(verbs, WRITE):
            found.add("WriteRBAC")
        if rbac and _matches(verbs, ["bind", "escalate"]):
            found.add("BindOrEscalate")
        if core and _matches(resources, ["namespaces"]) and _matches(verbs, ["delete"]):
            found.add("DeleteNamespaces")
        if core and _matches(resources, ["nodes/proxy"]):
            found.add("NodeProxy")
    return [name for name in CAPABILITIES if name in found]


def compute_permissions(rules: Sequence[Mapping[str, Any]]) -> list[Permission]:
    """The rules as phrases: `read pods`, `write deployments.apps`, `create pods/exec`,
    `do anything with *`; in the order the rules name them."""
    verbs_of: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in _strings(rule, "apiGroups") or [""]:
            for resource in _strings(rule, "resources"):
                verbs_of.setdefault((group, resource), set()).update(_strings(rule, "verbs"))
    permissions = []
    for (group, resource), verbs in verbs_of.items():
        named = resource if group in ("", "*") or resource == "*" else f"{resource}.{group}"
        if "*" in verbs:
            permissions.append(Permission(f"do anything with {named}", "*", group, resource))
            continue
        reads, writes = bool(verbs & READ), bool(verbs & WRITE)
        if "/" in resource:
            main = sorted(verbs & (READ | WRITE)) or sorted(verbs)
            verb = "create" if "create" in verbs else main[0]
            permissions.append(Permission(f"{verb} {named}", verb, group, resource))
        else:
            # Read and write apart: a subject often reads already what a grant lets them write.
            if reads:
                verb = "get" if "get" in verbs else sorted(verbs & READ)[0]
                permissions.append(Permission(f"read {named}", verb, group, resource))
            if writes:
                verb = "create" if "create" in verbs else sorted(verbs & WRITE)[0]
                permissions.append(Permission(f"write {named}", verb, group, resource))
        for special in sorted(verbs - READ - WRITE):
            permissions.append(Permission(f"{special} {named}", special, group, resource))
    return permissions


_RISKY_RESOURCES = frozenset(
    {"secrets", "serviceaccounts/token", "nodes/proxy", "*", *CONNECT, *RBAC_KINDS}
)


def _rank(permission: Permission) -> int:
    """What a reviewer should read first: the flagged kinds of access, then writes (workloads
    first), then reads, then reads of subresources such as status and logs."""
    if permission.resource in _RISKY_RESOURCES or permission.verb in (
        "*",
        "impersonate",
        "bind",
        "escalate",
    ):
        return 0
    if permission.verb in WRITE or permission.verb == "create":
        return 1 if permission.resource in WORKLOADS else 2
    if "/" in permission.resource:
        return 4
    return 3


def compute_ranked_permissions(rules: Sequence[Mapping[str, Any]]) -> list[Permission]:
    """The phrases, most telling first (the order is stable within a rank)."""
    return sorted(compute_permissions(rules), key=_rank)


def _listed(items: Sequence[str]) -> str:
    if len(items) <= MAX_LISTED:
        return ", ".join(items)
    return f"{', '.join(items[:MAX_LISTED])} and {len(items) - MAX_LISTED} more"


def build_risk_summary(
    role: str,
    rules: Sequence[Mapping[str, Any]],
    held: Iterable[str] | None = None,
    checked: Iterable[str] | None = None,
) -> RiskSummary:
    """What `role` gives, what of it is new (`held`: the phrases the subject already holds, of
    those `checked`, all by default; None when unknown), and the flagged capabilities, as one
    summary line. Phrases come most telling first."""
    permissions = [p.text for p in compute_ranked_permissions(rules)]
    capabilities = compute_capabilities(rules)
    already = set(held or ())
    compared = set(checked) if checked is not None else set(permissions)
    adds = [p for p in permissions if p in compared and p not in already]
    had = [p for p in permissions if p in compared and p in already]
    unchecked = [p for p in permissions if p not in compared]
    if not permissions:
        text = f"{role} gives no access to resources."
    elif held is None:
        text = f"{role} gives: {_listed(permissions)}."
    else:
        text = f"{role} adds: {_listed(adds) or 'nothing new'}"
        text += f"; already had: {_listed(had)}" if had else ""
        if unchecked:
            text += f"; and {len(unchecked)} more not compared with what is held"
        text += "."
    if capabilities:
        named = "; ".join(CAPABILITIES[c] for c in capabilities)
        text += f" It can {named}."
    return RiskSummary(
        capabilities=capabilities,
        adds=adds,
        already_had=had,
        summary=text,
    )


def compute_capability_decision(
    decision: Decision, policy: AccessPolicy | None, risk: RiskSummary | None, role: str
) -> Decision:
    """The decision once the policy's capability rules have seen what the role gives: refused
    outright, or held for an approver although the policy is self-service. A merged pull
    request (GitOps) already is an approval."""
    if policy is None or risk is None or decision.outcome not in (Outcome.GRANT, Outcome.PENDING):
        return decision
    rules = policy.spec.capabilities
    name = policy.metadata.name
    refused = [c for c in risk.capabilities if c in rules.refuse]
    if refused:
        words = "; ".join(CAPABILITIES[c] for c in refused)
        return Decision(
            Outcome.DENY,
            "CapabilityRefused",
            f"{role} can {words}, and AccessPolicy {name} does not grant that "
            f"({', '.join(refused)}).",
            policy=decision.policy,
        )
    needing = [c for c in risk.capabilities if c in rules.require_approval]
    if ACT_AS_APPROVER in risk.capabilities:
        # A merged pull request is no approval here: the applier may be what it reaches.
        needing = [ACT_AS_APPROVER, *(c for c in needing if c != ACT_AS_APPROVER)]
    elif decision.reason == "GitOpsApproved":
        needing = []
    if decision.outcome == Outcome.GRANT and ACT_AS_APPROVER in needing:
        return Decision(
            Outcome.PENDING,
            "GrantActsAsApprover",
            f"{role} here would let its holder act as an approver or a trusted applier of an "
            "AccessPolicy (see the risk summary); such a grant always waits for an approver.",
            policy=decision.policy,
            duration=decision.duration,
        )
    if decision.outcome == Outcome.GRANT and needing:
        words = "; ".join(CAPABILITIES[c] for c in needing)
        return Decision(
            Outcome.PENDING,
            "CapabilityNeedsApproval",
            f"{role} can {words}; AccessPolicy {name} wants an approver for that "
            f"({', '.join(needing)}).",
            policy=decision.policy,
            duration=decision.duration,
        )
    return decision


@dataclass(frozen=True)
class RoleDrift:
    """How a role changed under a grant, in the summary's words."""

    gained: tuple[str, ...]
    lost: tuple[str, ...]
    new_capabilities: tuple[str, ...]
    message: str


def compute_role_drift(
    role: str, recorded: RiskSummary, rules: Sequence[Mapping[str, Any]] | None
) -> RoleDrift | None:
    """The change between what a grant was decided on and the role's rules now (None: the
    role was deleted); None when nothing a summary says has changed."""
    before = [*recorded.adds, *recorded.already_had]
    if rules is None:
        return RoleDrift((), tuple(before), (), f"{role} was deleted during the grant.")
    now = [p.text for p in compute_permissions(rules)]
    gained = tuple(p for p in now if p not in before)
    lost = tuple(p for p in before if p not in now)
    capabilities = compute_capabilities(rules)
    new_capabilities = tuple(c for c in capabilities if c not in recorded.capabilities)
    if not gained and not lost and not new_capabilities:
        return None
    parts = [f"{role} changed during the grant"]
    if gained:
        parts.append(f"it now also gives: {_listed(list(gained))}")
    if lost:
        parts.append(f"it no longer gives: {_listed(list(lost))}")
    if new_capabilities:
        words = "; ".join(CAPABILITIES[c] for c in new_capabilities)
        parts.append(f"newly, it can {words}")
    return RoleDrift(gained, lost, new_capabilities, "; ".join(parts) + ".")


def role_index_key(kind: str, name: str, namespace: str | None) -> str:
    return f"Role/{namespace}/{name}" if kind == "Role" else f"ClusterRole/{name}"


def build_role_index_entry(
    kind: str, body: Mapping[str, Any]
) -> dict[str, tuple[GrantKey, RiskSummary]] | None:
    """An active grant with a recorded summary, by the role it binds: what a change to that
    role is compared with."""
    status = body.get("status") or {}
    spec_role = (body.get("spec") or {}).get("role") or {}
    metadata = body.get("metadata") or {}
    if status.get("phase") != "Active" or not status.get("risk") or not spec_role.get("name"):
        return None
    try:
        risk = RiskSummary.model_validate(status["risk"])
    except ValueError:
        return None
    key = GrantKey(kind, metadata.get("namespace"), metadata["name"], metadata.get("uid", ""))
    role_key = role_index_key(
        str(spec_role.get("kind") or "ClusterRole"), str(spec_role["name"]), key.namespace
    )
    return {role_key: (key, risk)}
