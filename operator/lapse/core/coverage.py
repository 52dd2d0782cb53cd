"""Whether what one subject holds covers what another holds, as Kubernetes' RBAC decides it.

A grantee who reads a ServiceAccount token out of a pod (exec, attach) can act as that account
for as long as the token lives. Whether that gives them anything the grant did not is the
question kube-apiserver asks before it lets anyone create a role or a binding (escalation
prevention, `Covers` in k8s.io/component-helpers/auth/rbac/validation): break every rule of
the one side into atoms of a single verb on a single group, resource and name (or a single
non-resource URL), and look for an atom no rule of the other side allows. The matching is the
authorizer's: `*` covers everything, a rule without resourceNames covers every name, `*/scale`
covers the `scale` subresource of every resource, and a non-resource URL ending in `*` covers
every path under it.

Unlike `Covers`, rules here carry a scope (a namespace, or None for cluster-wide): what an
account may do in one namespace is covered only by what the other side may do in that same
namespace or cluster-wide, and what it may do cluster-wide only by cluster-wide rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lapse.core.rbac import RBAC_GROUP, Held, Rule

ALL = "*"
# The first things a person reviewing a refusal wants to read: whole wildcards, then what
# rewrites access (RBAC, tokens, secrets), then the rest in the order the roles list them.
_TELLING_RESOURCES = ("serviceaccounts/token", "secrets", "pods/exec", "pods", "nodes/proxy")


@dataclass(frozen=True)
class Atom:
    """One verb on one resource (of one group, optionally one name), or on one non-resource
    URL (`url` set, the rest empty)."""

    verb: str
    group: str = ""
    resource: str = ""
    name: str = ""
    url: str = ""

    def describe(self) -> str:
        verb = "do anything to" if self.verb == ALL else self.verb
        if self.url:
            return f"{verb} {self.url}"
        resource = "every resource" if self.resource == ALL else self.resource
        if self.group == ALL:
            resource += " of every API group"
        elif self.group and self.resource != ALL:
            resource += f".{self.group}"
        named = f" named {self.name}" if self.name else ""
        return f"{verb} {resource}{named}"


def build_atoms(rule: Rule) -> list[Atom]:
    """A rule broken down as the escalation check breaks it down: one atom per group, resource,
    verb and name; non-resource URLs combine with verbs only."""
    atoms = [
        Atom(verb, group, resource, name)
        for group in sorted(rule.api_groups)
        for resource in sorted(rule.resources)
        for verb in sorted(rule.verbs)
        for name in (sorted(rule.resource_names) or [""])
    ]
    atoms += [Atom(verb, url=url) for url in sorted(rule.non_resource_urls) for verb in rule.verbs]
    return atoms


def _resource_covers(owned: frozenset[str], wanted: str) -> bool:
    if ALL in owned or wanted in owned:
        return True
    # `*/status` covers the status of every resource; a plain resource needs its own name.
    return "/" in wanted and f"*/{wanted.split('/', 1)[1]}" in owned


def _url_covers(owned: Iterable[str], wanted: str) -> bool:
    return any(
        path == wanted or (path.endswith(ALL) and wanted.startswith(path.rstrip(ALL)))
        for path in owned
    )


def rule_covers(owner: Rule, atom: Atom) -> bool:
    """Whether `owner` allows everything `atom` allows (an atom with a wildcard is covered only
    by a wildcard: `get *` is not covered by `get pods`)."""
    if not owner.verbs & {ALL, atom.verb}:
        return False
    if atom.url:
        return not owner.resource_names and _url_covers(owner.non_resource_urls, atom.url)
    if not owner.api_groups & {ALL, atom.group}:
        return False
    if not _resource_covers(owner.resources, atom.resource):
        return False
    return not owner.resource_names or atom.name in owner.resource_names


def compute_uncovered(owner: Sequence[Rule], servant: Iterable[Rule]) -> list[Atom]:
    """The atoms of `servant`'s rules that no rule of `owner` covers, in order, once each:
    empty when `owner` may do everything `servant` may (kube-apiserver's `Covers`)."""
    seen: set[Atom] = set()
    uncovered: list[Atom] = []
    for rule in servant:
        for atom in build_atoms(rule):
            if atom in seen:
                continue
            seen.add(atom)
            if not any(rule_covers(o, atom) for o in owner):
                uncovered.append(atom)
    return uncovered


@dataclass(frozen=True)
class Beyond:
    """Something one subject may do that the other may not: the atom, where (None:
    cluster-wide) and the binding that gives it."""

    atom: Atom
    scope: str | None
    through: str

    def describe(self) -> str:
        where = f"in {self.scope}" if self.scope is not None else "cluster-wide"
        return f"{self.atom.describe()} {where}"


def compute_beyond(servant: Sequence[Held], owner: Sequence[Held]) -> list[Beyond]:
    """What `servant` holds that `owner` does not hold in the same scope (a namespace's rules
    are covered by the owner's rules there and its cluster-wide ones; cluster-wide rules only
    by cluster-wide ones). Non-resource URLs mean nothing in a namespace (a RoleBinding never
    gives them), so they count only cluster-wide."""
    cluster_wide = [h.rule for h in owner if h.scope is None]
    by_scope: dict[str | None, list[Rule]] = {None: cluster_wide}
    beyond: list[Beyond] = []
    seen: set[tuple[Atom, str | None]] = set()
    for held in servant:
        rules = by_scope.get(held.scope)
        if rules is None:
            rules = cluster_wide + [h.rule for h in owner if h.scope == held.scope]
            by_scope[held.scope] = rules
        for atom in compute_uncovered(rules, (held.rule,)):
            if (atom.url and held.scope is not None) or (atom, held.scope) in seen:
                continue
            seen.add((atom, held.scope))
            beyond.append(Beyond(atom, held.scope, held.through))
    return beyond


def _weight(item: Beyond) -> tuple[int, int]:
    atom = item.atom
    if ALL in (atom.verb, atom.group, atom.resource):
        return (0, 0)
    if atom.group == RBAC_GROUP:
        return (1, 0)
    if atom.resource in _TELLING_RESOURCES and not atom.group:
        return (2, _TELLING_RESOURCES.index(atom.resource))
    return (3, 0)


def compute_highlights(beyond: Sequence[Beyond]) -> list[str]:
    """`beyond` for a sentence, the most telling first (take the first few), the verbs on one
    resource in one place said together ("create, delete rolebindings.rbac.authorization.k8s.io
    in shop")."""
    verbs: dict[tuple[str, str, str, str, str | None], list[str]] = {}
    first: dict[tuple[str, str, str, str, str | None], Beyond] = {}
    for item in sorted(beyond, key=_weight):
        atom = item.atom
        key = (atom.group, atom.resource, atom.name, atom.url, item.scope)
        verbs.setdefault(key, []).append(atom.verb)
        first.setdefault(key, item)
    lines = []
    for key, item in first.items():
        said = ALL if ALL in verbs[key] else ", ".join(verbs[key])
        atom = Atom(said, item.atom.group, item.atom.resource, item.atom.name, item.atom.url)
        lines.append(Beyond(atom, item.scope, item.through).describe())
    return lines
