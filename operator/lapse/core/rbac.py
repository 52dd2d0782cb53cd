"""RBAC as the authorizer reads it: rules, bindings, and who a binding lets act as whom.

An approval is only as good as the identity behind it. A trusted applier's ServiceAccount can be
impersonated, have tokens minted for it, have its token Secrets read, or have a pod run as it by
whoever holds the right verbs in its namespace; an approver can be impersonated. These functions
answer, from the cluster's Roles and bindings alone, "who besides the cluster's administrators
can act as this identity, how, and through which binding" — and, for a grant, whether the role
it binds would let its holder do so. They follow the RBAC authorizer's matching (`*`,
`*/subresource`, resourceNames) and kube-apiserver's impersonation checks, legacy and
constrained (KEP-5284, beta in v1.36).

Every record is slotted: with ten thousand grants each rule a subject holds is one `Held`, and
the operator's memory is the budget they share.

Deliberately on the side of saying too much: a path that needs a second step this module cannot
see (a pod that runs as the account already, a token Secret that exists) is still named.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lapse.core.bindings import MANAGED_BY, MANAGED_BY_LABEL

RBAC_GROUP = "rbac.authorization.k8s.io"
AUTHN_GROUP = "authentication.k8s.io"
LAPSE_GROUP = "lapse.dev"
SA_PREFIX = "system:serviceaccount:"
SA_GROUP = "system:serviceaccounts"
WORKLOADS: Mapping[str, tuple[str, ...]] = {
    "": ("pods", "replicationcontrollers"),
    "apps": ("deployments", "statefulsets", "daemonsets", "replicasets"),
    "batch": ("jobs", "cronjobs"),
}
# The requests an impersonator of an applier or approver makes: creating a request, or
# recording a decision on one.
LAPSE_RESOURCES = ("accessrequests", "breakglasses")
LAPSE_VERBS = ("create", "update", "patch")


@dataclass(frozen=True, slots=True)
class Rule:
    """One PolicyRule."""

    verbs: frozenset[str]
    api_groups: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    resource_names: frozenset[str] = frozenset()
    non_resource_urls: frozenset[str] = frozenset()

    def allows(self, verb: str, group: str, resource: str, name: str = "") -> bool:
        """As the RBAC authorizer matches a resource request (`resource` may carry its
        subresource: `pods/exec`)."""
        if not (self.verbs & {verb, "*"}) or not (self.api_groups & {group, "*"}):
            return False
        if not _resource_matches(self.resources, resource):
            return False
        return not self.resource_names or name in self.resource_names

    @property
    def everything(self) -> bool:
        return "*" in self.verbs and "*" in self.api_groups and "*" in self.resources


def _resource_matches(resources: frozenset[str], wanted: str) -> bool:
    if "*" in resources or wanted in resources:
        return True
    if "/" in wanted:
        return f"*/{wanted.split('/', 1)[1]}" in resources
    return False


def parse_rules(rules: Iterable[Mapping[str, Any]] | None) -> tuple[Rule, ...]:
    def strings(rule: Mapping[str, Any], key: str) -> frozenset[str]:
        return frozenset(str(v) for v in rule.get(key) or ())

    return tuple(
        Rule(
            verbs=strings(r, "verbs"),
            api_groups=strings(r, "apiGroups"),
            resources=strings(r, "resources"),
            resource_names=strings(r, "resourceNames"),
            non_resource_urls=strings(r, "nonResourceURLs"),
        )
        for r in rules or ()
        if isinstance(r, Mapping)
    )


@dataclass(frozen=True, slots=True)
class Actor:
    """A binding's subject: User, Group or ServiceAccount."""

    kind: str
    name: str
    namespace: str | None = None

    @property
    def username(self) -> str | None:
        if self.kind == "ServiceAccount":
            return f"{SA_PREFIX}{self.namespace}:{self.name}"
        return self.name if self.kind == "User" else None

    def describe(self) -> str:
        if self.kind == "ServiceAccount":
            return f"ServiceAccount {self.namespace}/{self.name}"
        return f"{self.kind} {self.name}"

    def matches(self, username: str, groups: Iterable[str]) -> bool:
        """Whether a caller with this user name and these groups is this subject."""
        if self.kind == "Group":
            return self.name in set(groups)
        return self.username == username


@dataclass(frozen=True, slots=True)
class RoleRecord:
    kind: str
    name: str
    namespace: str | None
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class BindingRecord:
    kind: str
    name: str
    namespace: str | None
    role_kind: str
    role_name: str
    subjects: tuple[Actor, ...]
    # Made by Lapse for a grant: a temporary administrator is still named, being exactly
    # whose borrowing must not outlast or widen a grant.
    temporary: bool = False

    def describe(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name} ({self.role_kind} {self.role_name})"


def role_key(kind: str, name: str, namespace: str | None) -> str:
    return f"Role/{namespace}/{name}" if kind == "Role" else f"ClusterRole/{name}"


def parse_role(kind: str, body: Mapping[str, Any]) -> RoleRecord:
    metadata = body.get("metadata") or {}
    return RoleRecord(
        kind=kind,
        name=str(metadata.get("name") or ""),
        namespace=metadata.get("namespace") if kind == "Role" else None,
        rules=parse_rules(body.get("rules")),
    )


def parse_binding(kind: str, body: Mapping[str, Any]) -> BindingRecord:
    metadata = body.get("metadata") or {}
    role = body.get("roleRef") or {}
    namespace = metadata.get("namespace") if kind == "RoleBinding" else None
    subjects = tuple(
        Actor(
            kind=str(s.get("kind") or ""),
            name=str(s.get("name") or ""),
            namespace=(s.get("namespace") or namespace)
            if s.get("kind") == "ServiceAccount"
            else None,
        )
        for s in body.get("subjects") or ()
        if isinstance(s, Mapping) and s.get("kind") in ("User", "Group", "ServiceAccount")
    )
    return BindingRecord(
        kind=kind,
        name=str(metadata.get("name") or ""),
        namespace=namespace,
        role_kind=str(role.get("kind") or "ClusterRole"),
        role_name=str(role.get("name") or ""),
        subjects=subjects,
        temporary=(metadata.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY,
    )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The cluster's RBAC at one moment: roles by role_key, and every binding."""

    roles: Mapping[str, RoleRecord]
    bindings: Collection[BindingRecord]

    def rules_of(self, binding: BindingRecord) -> tuple[Rule, ...]:
        # A RoleBinding may name a ClusterRole: its rules then apply in the binding's namespace.
        namespace = binding.namespace if binding.role_kind == "Role" else None
        role = self.roles.get(role_key(binding.role_kind, binding.role_name, namespace))
        return role.rules if role is not None else ()


@dataclass(frozen=True, slots=True)
class Held:
    """A rule a subject holds: where it applies (None: cluster-wide) and what gives it."""

    rule: Rule
    scope: str | None
    through: str
    temporary: bool = False


@dataclass(frozen=True, slots=True)
class Holding:
    """What one binding gives its subjects: the role's rules (one tuple, shared by every
    binding of that role), where they apply, and what gives them."""

    rules: tuple[Rule, ...]
    scope: str | None
    through: str
    temporary: bool = False

    def expand(self) -> list[Held]:
        return [Held(r, self.scope, self.through, self.temporary) for r in self.rules]


Holdings = Mapping["Actor", Sequence[Holding]]


@dataclass(frozen=True, slots=True)
class Identity:
    """Whom an approval rests on: a user, a group, or a ServiceAccount."""

    kind: str  # User, Group or ServiceAccount
    name: str
    namespace: str | None = None

    @classmethod
    def of_username(cls, username: str) -> Identity:
        if username.startswith(SA_PREFIX) and username.count(":") == 3:
            namespace, name = username.removeprefix(SA_PREFIX).split(":", 1)
            return cls("ServiceAccount", name, namespace)
        return cls("User", username)

    def describe(self) -> str:
        if self.kind == "ServiceAccount":
            return f"ServiceAccount {self.namespace}/{self.name}"
        return f"{self.kind.lower()} {self.name}"


@dataclass(frozen=True, slots=True)
class Path:
    """One way to act as an identity: the actor, how, and the binding that allows it."""

    actor: Actor
    way: str
    through: str

    def describe(self) -> str:
        return f"{self.actor.describe()} can {self.way} (through {self.through})"


@dataclass(frozen=True, slots=True)
class Trusted:
    """Who is never named: administrators hold everything anyway, and the control plane and
    Lapse itself are what every grant already rests on."""

    usernames: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset({"system:masters", "system:nodes"})
    namespaces: frozenset[str] = frozenset({"kube-system"})
    prefixes: tuple[str, ...] = ("system:kube-", "system:node:")

    def covers(self, actor: Actor) -> bool:
        if actor.kind == "Group":
            return actor.name in self.groups
        if actor.kind == "ServiceAccount" and actor.namespace in self.namespaces:
            return True
        name = actor.username or ""
        return name in self.usernames or name.startswith(self.prefixes)


def compute_holdings(snapshot: Snapshot) -> dict[Actor, list[Holding]]:
    """Every subject's rules, with where each applies and the binding that gives it."""
    held: dict[Actor, list[Holding]] = {}
    for binding in snapshot.bindings:
        for actor, holding in build_held(snapshot, binding):
            held.setdefault(actor, []).append(holding)
    return held


def build_held(snapshot: Snapshot, binding: BindingRecord) -> list[tuple[Actor, Holding]]:
    """What one binding gives each of its subjects."""
    rules = snapshot.rules_of(binding)
    if not rules:
        return []
    holding = Holding(rules, binding.namespace, binding.describe(), binding.temporary)
    return [(actor, holding) for actor in binding.subjects]


@dataclass(frozen=True, slots=True)
class _Holder:
    """What one subject holds, with one level of roles it could bind itself to."""

    held: list[Held] = field(default_factory=list)

    def find(
        self, verb: str, group: str, resource: str, namespace: str | None, name: str = ""
    ) -> str | None:
        """The first binding that allows the request; a cluster-scoped request (`namespace`
        None) is allowed only by cluster-wide rules."""
        for h in self.held:
            if namespace is None and h.scope is not None:
                continue
            if h.scope is not None and h.scope != namespace:
                continue
            if h.rule.allows(verb, group, resource, name):
                return h.through
        return None

    def find_any(
        self,
        verbs: Iterable[str],
        group: str,
        resources: Iterable[str],
        namespace: str | None,
        name: str = "",
    ) -> str | None:
        for resource in resources:
            for verb in verbs:
                found = self.find(verb, group, resource, namespace, name)
                if found is not None:
                    return found
        return None


def _with_bindable(held: Sequence[Held], snapshot: Snapshot) -> list[Held]:
    """`held` plus what its holder could bind itself to: a subject that may create bindings
    and `bind` (or `escalate`) roles gains those roles' rules where it may bind them."""
    holder = _Holder(list(held))
    gained: list[Held] = []
    scopes = {h.scope for h in held}
    for scope in scopes:
        binding_kind = "rolebindings" if scope is not None else "clusterrolebindings"
        via = holder.find_any(("create", "update", "patch"), RBAC_GROUP, (binding_kind,), scope)
        if via is None:
            continue
        for h in held:
            if h.scope not in (None, scope) or not (h.rule.verbs & {"bind", "escalate", "*"}):
                continue
            if not (h.rule.api_groups & {RBAC_GROUP, "*"}):
                continue
            if not (h.rule.resources & {"roles", "clusterroles", "*"}):
                continue
            how = f"{h.through}, binding itself to "
            if not h.rule.resource_names:
                gained.append(
                    Held(
                        Rule(frozenset({"*"}), frozenset({"*"}), frozenset({"*"})),
                        scope,
                        how + "any role",
                    )
                )
                continue
            for name in sorted(h.rule.resource_names):
                for kind in ("ClusterRole", "Role"):
                    role = snapshot.roles.get(role_key(kind, name, scope))
                    if role is not None and (kind == "ClusterRole" or scope is not None):
                        gained.extend(Held(r, scope, how + f"{kind} {name}") for r in role.rules)
    return [*held, *gained]


def _impersonation_target(holder: _Holder, mode: str) -> str | None:
    """Constrained impersonation's second check: some `impersonate-on:<mode>:<verb>` on a
    Lapse request."""
    verbs = [f"impersonate-on:{mode}:{v}" for v in LAPSE_VERBS]
    for resource in LAPSE_RESOURCES:
        for verb in verbs:
            for h in holder.held:
                if h.rule.allows(verb, LAPSE_GROUP, resource):
                    return h.through
    return None


def _service_account_ways(holder: _Holder, namespace: str, name: str) -> list[tuple[str, str]]:
    ways: list[tuple[str, str]] = []
    found = holder.find("impersonate", "", "serviceaccounts", namespace, name)
    if found:
        ways.append(("impersonate it", found))
    constrained = holder.find(
        "impersonate:serviceaccount", AUTHN_GROUP, "serviceaccounts", namespace, name
    )
    if constrained and _impersonation_target(holder, "serviceaccount"):
        ways.append(("impersonate it (constrained impersonation)", constrained))
    found = holder.find("create", "", "serviceaccounts/token", namespace, name)
    if found:
        ways.append(("mint tokens for it", found))
    found = holder.find_any(("get", "list", "watch"), "", ("secrets",), namespace)
    if found:
        ways.append((f"read its token Secrets in {namespace}", found))
    for group, resources in WORKLOADS.items():
        found = holder.find_any(("create",), group, resources, namespace)
        if found:
            ways.append((f"run pods as it in {namespace}", found))
            break
    found = holder.find_any(("create", "get"), "", ("pods/exec", "pods/attach"), namespace)
    found = found or holder.find_any(
        ("update", "patch"), "", ("pods/ephemeralcontainers",), namespace
    )
    if found:
        ways.append((f"exec into pods that run as it in {namespace}", found))
    found = holder.find_any(("get", "create"), "", ("nodes/proxy",), None)
    if found:
        ways.append(("reach its pods through the kubelet (nodes/proxy)", found))
    return ways


def _user_ways(holder: _Holder, username: str) -> list[tuple[str, str]]:
    ways: list[tuple[str, str]] = []
    found = holder.find("impersonate", "", "users", None, username)
    if found:
        ways.append(("impersonate it", found))
    constrained = holder.find("impersonate:user-info", AUTHN_GROUP, "users", None, username)
    if constrained and _impersonation_target(holder, "user-info"):
        ways.append(("impersonate it (constrained impersonation)", constrained))
    return ways


def _any_user(holder: _Holder, constrained: bool) -> bool:
    """Whether the holder may impersonate some user: groups are only ever impersonated along
    with a user."""
    for h in holder.held:
        if h.scope is not None:
            continue
        verb = "impersonate:user-info" if constrained else "impersonate"
        group = AUTHN_GROUP if constrained else ""
        rule = h.rule
        if (
            rule.verbs & {verb, "*"}
            and rule.api_groups & {group, "*"}
            and rule.resources & {"users", "*"}
        ):
            return True
    return False


def _group_ways(holder: _Holder, group: str) -> list[tuple[str, str]]:
    ways: list[tuple[str, str]] = []
    found = holder.find("impersonate", "", "groups", None, group)
    if found and _any_user(holder, constrained=False):
        ways.append(("impersonate a member of it", found))
    constrained = holder.find("impersonate:user-info", AUTHN_GROUP, "groups", None, group)
    if (
        constrained
        and _any_user(holder, constrained=True)
        and _impersonation_target(holder, "user-info")
    ):
        ways.append(("impersonate a member of it (constrained impersonation)", constrained))
    return ways


def compute_ways(
    held: Sequence[Held], snapshot: Snapshot, identity: Identity
) -> list[tuple[str, str]]:
    """How a subject holding `held` could act as `identity`: (way, through) pairs."""
    holder = _Holder(_with_bindable(held, snapshot))
    if identity.kind == "ServiceAccount":
        return _service_account_ways(holder, identity.namespace or "", identity.name)
    if identity.kind == "Group":
        if identity.name.startswith(f"{SA_GROUP}:"):
            # Every ServiceAccount of the namespace is a member: acting as any of them will do.
            namespace = identity.name.removeprefix(f"{SA_GROUP}:")
            return _service_account_ways(holder, namespace, "") + _group_ways(holder, identity.name)
        return _group_ways(holder, identity.name)
    return _user_ways(holder, identity.name)


def compute_exposure(
    snapshot: Snapshot,
    identity: Identity,
    trusted: Trusted,
    holdings: Holdings | None = None,
) -> list[Path]:
    """Who besides administrators, the control plane and Lapse can act as `identity`, how,
    and through which binding; in a stable order."""
    holdings = holdings if holdings is not None else compute_holdings(snapshot)
    # Only rules where the identity lives can reach it: for the thousands of subjects of
    # grants elsewhere this is the whole cost.
    where = {None, _namespace_of(identity)}
    paths: list[Path] = []
    for actor in sorted(holdings, key=lambda a: (a.kind, a.namespace or "", a.name)):
        held = [h for g in holdings[actor] if g.scope in where for h in g.expand()]
        if not held or trusted.covers(actor) or _is(actor, identity):
            continue
        if any(h.scope is None and h.rule.everything and not h.temporary for h in held):
            continue  # an administrator
        for way, through in compute_ways(held, snapshot, identity):
            paths.append(Path(actor, way, through))
    return paths


def _namespace_of(identity: Identity) -> str | None:
    if identity.kind == "ServiceAccount":
        return identity.namespace
    if identity.kind == "Group" and identity.name.startswith(f"{SA_GROUP}:"):
        return identity.name.removeprefix(f"{SA_GROUP}:")
    return None


def _is(actor: Actor, identity: Identity) -> bool:
    return (actor.kind, actor.name, actor.namespace) == (
        identity.kind,
        identity.name,
        identity.namespace,
    )


def held_by(holdings: Holdings, username: str, groups: Iterable[str]) -> list[Held]:
    """Everything a caller with this user name and these groups holds."""
    found = Identity.of_username(username)
    actors = [Actor(found.kind, found.name, found.namespace)] if username else []
    actors += [Actor("Group", g) for g in groups]
    # A subject holding one role many times over (a user with hundreds of grants of `edit`)
    # holds its rules once: the bindings of one role share one tuple of rules, and what a
    # holding gives depends on nothing else but its scope. The first binding names it.
    seen: set[tuple[int, str | None, bool]] = set()
    held: list[Held] = []
    for actor in actors:
        for holding in holdings.get(actor, ()):
            key = (id(holding.rules), holding.scope, holding.temporary)
            if key not in seen:
                seen.add(key)
                held += holding.expand()
    return held


def can_act_as(paths: Iterable[Path], username: str, groups: Iterable[str]) -> list[Path]:
    """The paths a caller with this user name and these groups could take."""
    groups = set(groups)
    return [p for p in paths if p.actor.matches(username, groups)]
