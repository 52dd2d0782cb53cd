"""Role-based access control as the API server's RBAC authorizer evaluates it.

Lapse's security tests stand on this: `kubectl auth can-i ... --as alice` and alice's own
requests must be judged exactly as a real cluster would judge them, before and after Lapse
grants or revokes a binding. The rules follow kube-apiserver v1.30 (`plugin/pkg/auth/authorizer/
rbac` and `pkg/registry/rbac/validation`): rule matching with wildcards and subresources,
bindings to Roles and ClusterRoles, subjects, ClusterRole aggregation, escalation prevention,
the access reviews and the bootstrap roles.

The authorizer runs on every request, so the stored RBAC objects are compiled into per-namespace
indexes keyed by subject and rebuilt only when those objects change.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import errors
from .identity import Attributes, UserInfo
from .selectors import label_selector_matches

GROUP = "rbac.authorization.k8s.io"
AUTHORIZATION_GROUP = "authorization.k8s.io"
SA_PREFIX = "system:serviceaccount:"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"

ListObjects = Callable[[str, "str | None"], list[dict[str, Any]]]


# -- rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One PolicyRule with its lists as tuples, so it can be compared and hashed."""

    verbs: tuple[str, ...] = ()
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, rule: Mapping[str, Any]) -> Rule:
        return cls(
            verbs=tuple(rule.get("verbs") or ()),
            api_groups=tuple(rule.get("apiGroups") or ()),
            resources=tuple(rule.get("resources") or ()),
            resource_names=tuple(rule.get("resourceNames") or ()),
            non_resource_urls=tuple(rule.get("nonResourceURLs") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"verbs": list(self.verbs)}
        if self.api_groups or self.resources:
            out["apiGroups"] = list(self.api_groups)
        if self.resources:
            out["resources"] = list(self.resources)
        if self.resource_names:
            out["resourceNames"] = list(self.resource_names)
        if self.non_resource_urls:
            out["nonResourceURLs"] = list(self.non_resource_urls)
        return out

    def allows(self, attrs: Attributes) -> bool:
        """`RuleAllows` of the RBAC authorizer."""
        if "*" not in self.verbs and attrs.verb not in self.verbs:
            return False
        if not attrs.resource_request:
            return any(_url_matches(url, attrs.path) for url in self.non_resource_urls)
        if "*" not in self.api_groups and attrs.api_group not in self.api_groups:
            return False
        if not self._resource_matches(attrs.resource, attrs.subresource):
            return False
        return not self.resource_names or attrs.name in self.resource_names

    def _resource_matches(self, resource: str, subresource: str) -> bool:
        combined = f"{resource}/{subresource}" if subresource else resource
        for allowed in self.resources:
            if allowed == "*" or allowed == combined:
                return True
            if subresource and allowed == f"*/{subresource}":
                return True
        return False

    def compact_string(self) -> str:
        """`rbacv1helpers.CompactString`: how escalation errors list missing rules."""
        parts = []
        for label, values in (
            ("APIGroups", self.api_groups),
            ("Resources", self.resources),
            ("NonResourceURLs", self.non_resource_urls),
            ("ResourceNames", self.resource_names),
            ("Verbs", self.verbs),
        ):
            if values:
                parts.append(f"{label}:{_go_quote_list(values)}")
        return "{" + ", ".join(parts) + "}"


def _go_quote_list(values: Iterable[str]) -> str:
    """Go's `%q` of a []string: `["a" "b"]`."""
    return "[" + " ".join(json.dumps(v) for v in values) + "]"


def _url_matches(allowed: str, path: str) -> bool:
    if allowed == "*" or allowed == path:
        return True
    return allowed.endswith("*") and path.startswith(allowed[:-1])


def _breakdown(rule: Rule) -> list[Rule]:
    """`BreakdownRule`: one verb, group, resource (and name) per rule."""
    out = []
    for group in rule.api_groups:
        for resource in rule.resources:
            for verb in rule.verbs:
                if rule.resource_names:
                    out.extend(
                        Rule((verb,), (group,), (resource,), (name,))
                        for name in rule.resource_names
                    )
                else:
                    out.append(Rule((verb,), (group,), (resource,)))
    for url in rule.non_resource_urls:
        out.extend(Rule(verbs=(verb,), non_resource_urls=(url,)) for verb in rule.verbs)
    return out


def _covers_resources(owned: tuple[str, ...], wanted: tuple[str, ...]) -> bool:
    if "*" in owned or all(w in owned for w in wanted):
        return True
    for path in wanted:
        if path in owned:
            continue
        if "/" not in path:
            return False
        if "*/" + path.split("/", 1)[1] not in owned:
            return False
    return True


def _rule_covers(owner: Rule, sub: Rule) -> bool:
    """`ruleCovers` of the escalation check."""
    verbs = "*" in owner.verbs or all(v in owner.verbs for v in sub.verbs)
    groups = "*" in owner.api_groups or all(g in owner.api_groups for g in sub.api_groups)
    resources = _covers_resources(owner.resources, sub.resources)
    urls = all(
        any(
            o == p or (o.endswith("*") and p.startswith(o.rstrip("*")))
            for o in owner.non_resource_urls
        )
        for p in sub.non_resource_urls
    )
    if sub.resource_names:
        names = not owner.resource_names or all(
            n in owner.resource_names for n in sub.resource_names
        )
    else:
        names = not owner.resource_names
    return verbs and groups and resources and names and urls


def covers(owned: Iterable[Rule], wanted: Iterable[Rule]) -> list[Rule]:
    """The broken-down rules of `wanted` that `owned` does not cover (empty: covered)."""
    owned = list(owned)
    missing = []
    for rule in wanted:
        for sub in _breakdown(rule):
            if not any(_rule_covers(o, sub) for o in owned):
                missing.append(sub)
    return missing


def _compact(rules: list[Rule]) -> list[Rule]:
    """`CompactRules`: merge single group/resource rules that differ only by verb."""
    simple: dict[tuple[str, str, tuple[str, ...]], Rule] = {}
    out: list[Rule] = []
    for rule in rules:
        is_simple = (
            len(rule.resource_names) <= 1
            and not rule.non_resource_urls
            and len(rule.api_groups) == 1
            and len(rule.resources) == 1
        )
        if not is_simple:
            out.append(rule)
            continue
        key = (rule.api_groups[0], rule.resources[0], rule.resource_names)
        if key in simple:
            prior = simple[key]
            simple[key] = Rule(
                prior.verbs + rule.verbs, prior.api_groups, prior.resources, prior.resource_names
            )
        else:
            simple[key] = rule
    return out + list(simple.values())


# -- label selectors (aggregation) --------------------------------------------------------


def aggregate(clusterroles: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The `rules` of every ClusterRole with an `aggregationRule`, as kube-controller-manager's
    clusterrole-aggregation controller writes them: the union, without duplicates, of the rules
    of every other ClusterRole its selectors match, in name order, to a fixed point (so `admin`
    takes in `edit`, which takes in `view` and the roles labelled `aggregate-to-edit`).

    The authorizer applies the same aggregation itself; the server may use this to write the
    rules into the stored objects so that reading `edit` shows them, as on a real cluster.
    """
    by_name = {r["metadata"]["name"]: r for r in clusterroles}
    rules = {name: [Rule.from_dict(x) for x in r.get("rules") or ()] for name, r in by_name.items()}
    aggregated = {name for name, r in by_name.items() if r.get("aggregationRule") is not None}
    for _ in range(len(aggregated) + 1):
        changed = False
        for name in sorted(aggregated):
            selectors = by_name[name]["aggregationRule"].get("clusterRoleSelectors") or ()
            merged: list[Rule] = []
            for other in sorted(by_name):
                if other == name:
                    continue
                labels = by_name[other]["metadata"].get("labels") or {}
                if any(label_selector_matches(s, labels) for s in selectors):
                    merged.extend(r for r in rules[other] if r not in merged)
            if merged != rules[name]:
                rules[name] = merged
                changed = True
        if not changed:
            break
    return {name: [r.to_dict() for r in rules[name]] for name in sorted(aggregated)}


# -- compiled view of the stored objects --------------------------------------------------


@dataclass(frozen=True)
class _Grant:
    """One (binding, subject) pair: the binding grants its role to that subject."""

    subject_index: int  # the first subject of a binding that applies is the one reported
    kind: str  # RoleBinding or ClusterRoleBinding
    binding: str
    namespace: str  # the binding's namespace; "" for a ClusterRoleBinding
    role_kind: str
    role_name: str
    subject: str  # described as the real authorizer does, e.g. `User "alice"`

    def describe(self) -> str:
        name = f"{self.binding}/{self.namespace}" if self.namespace else self.binding
        return f'{self.kind} "{name}" of {self.role_kind} "{self.role_name}" to {self.subject}'


def _subject_keys(subject: Mapping[str, Any], namespace: str) -> tuple[tuple[str, str], str] | None:
    kind, name = subject.get("kind", ""), subject.get("name", "")
    if kind == "User":
        return ("user", name), f'User "{name}"'
    if kind == "Group":
        return ("group", name), f'Group "{name}"'
    if kind == "ServiceAccount":
        sa_ns = subject.get("namespace") or namespace
        return ("user", f"{SA_PREFIX}{sa_ns}:{name}"), f'ServiceAccount "{name}/{sa_ns}"'
    return None


def _user_keys(user: UserInfo) -> list[tuple[str, str]]:
    return [("user", user.username), *(("group", g) for g in user.groups)]


class _Bindings:
    """Bindings of one scope, indexed by subject, kept current one write at a time.

    A namespace with thousands of bindings is written many times a second while access
    reviews arrive just as often: rebuilding the index per write made each review cost the
    whole namespace. Bindings are visited by name, a stable order (the real authorizer's
    informer cache has none to mirror)."""

    def __init__(self, kind: str, objects: Iterable[dict[str, Any]]) -> None:
        self.kind = kind
        self.by_subject: dict[tuple[str, str], dict[str, _Grant]] = {}
        self._keys_of: dict[str, list[tuple[str, str]]] = {}
        for obj in objects:
            self.put(obj)

    def put(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")
        self.remove(name)
        namespace = meta.get("namespace", "") if self.kind == "RoleBinding" else ""
        ref = obj.get("roleRef") or {}
        keys: list[tuple[str, str]] = []
        for index, subject in enumerate(obj.get("subjects") or ()):
            keyed = _subject_keys(subject, namespace)
            if keyed is None or keyed[0] in keys:
                continue
            keys.append(keyed[0])
            grant = _Grant(
                index,
                self.kind,
                name,
                namespace,
                ref.get("kind", ""),
                ref.get("name", ""),
                keyed[1],
            )
            self.by_subject.setdefault(keyed[0], {})[name] = grant
        self._keys_of[name] = keys

    def remove(self, name: str) -> None:
        for key in self._keys_of.pop(name, ()):
            grants = self.by_subject[key]
            del grants[name]
            if not grants:
                del self.by_subject[key]

    def for_user(self, user: UserInfo) -> list[_Grant]:
        found: dict[str, _Grant] = {}
        for key in _user_keys(user):
            for name, grant in self.by_subject.get(key, {}).items():
                prior = found.get(name)
                if prior is None or grant.subject_index < prior.subject_index:
                    found[name] = grant
        return [found[k] for k in sorted(found)]


def _compile_roles(roles: Iterable[Mapping[str, Any]]) -> dict[str, tuple[Rule, ...]]:
    return {
        r["metadata"]["name"]: tuple(Rule.from_dict(x) for x in r.get("rules") or ()) for r in roles
    }


class _ClusterView:
    def __init__(self, clusterroles: list[dict[str, Any]], bindings: list[dict[str, Any]]) -> None:
        self.roles: dict[str, tuple[Rule, ...]] = {}
        effective = aggregate(clusterroles)
        for role in clusterroles:
            name = role["metadata"]["name"]
            raw = effective[name] if name in effective else role.get("rules") or ()
            self.roles[name] = tuple(Rule.from_dict(r) for r in raw)
        self.bindings = _Bindings("ClusterRoleBinding", bindings)


class _NamespaceView:
    def __init__(self, roles: list[dict[str, Any]], bindings: list[dict[str, Any]]) -> None:
        self.roles = _compile_roles(roles)
        self.bindings = _Bindings("RoleBinding", bindings)

    def observe(self, plural: str, name: str, obj: Mapping[str, Any] | None) -> None:
        if plural == "roles":
            self.roles.pop(name, None)
            if obj is not None:
                self.roles.update(_compile_roles([obj]))
        elif obj is None:
            self.bindings.remove(name)
        else:
            self.bindings.put(obj)


def _fingerprint(objects: list[dict[str, Any]]) -> tuple[Hashable, ...]:
    return tuple((o.get("metadata") or {}).get("resourceVersion") or id(o) for o in objects)


# -- the authorizer -----------------------------------------------------------------------


class Authorizer:
    """The RBAC authorizer over the objects `list_objects(plural, namespace)` returns.

    `revision`, when given, must return a value that changes whenever a ClusterRole or a
    ClusterRoleBinding is written (e.g. a counter bumped by a store listener), and every write
    of a Role or RoleBinding must be passed to `observe`: compiled indexes are then reused
    and kept current. Without it, each call compares the resourceVersions of the listed
    objects with the ones the indexes were built from.
    """

    def __init__(
        self, list_objects: ListObjects, revision: Callable[[], Hashable] | None = None
    ) -> None:
        self._list = list_objects
        self._revision = revision
        self._cluster: tuple[Hashable, _ClusterView] | None = None
        self._namespaces: dict[str, tuple[Hashable, _NamespaceView]] = {}

    def observe(self, plural: str, namespace: str, name: str, obj: dict[str, Any] | None) -> None:
        """One write of a Role or RoleBinding (`obj` None: deleted)."""
        cached = self._namespaces.get(namespace)
        if cached is not None:
            cached[1].observe(plural, name, obj)

    # compiled views

    def _cluster_view(self) -> _ClusterView:
        if self._revision is not None:
            rev = self._revision()
            if self._cluster is not None and self._cluster[0] == rev:
                return self._cluster[1]
            roles = self._list("clusterroles", None)
            bindings = self._list("clusterrolebindings", None)
        else:
            roles = self._list("clusterroles", None)
            bindings = self._list("clusterrolebindings", None)
            rev = (_fingerprint(roles), _fingerprint(bindings))
            if self._cluster is not None and self._cluster[0] == rev:
                return self._cluster[1]
        view = _ClusterView(roles, bindings)
        self._cluster = (rev, view)
        return view

    def _namespace_view(self, namespace: str) -> _NamespaceView:
        cached = self._namespaces.get(namespace)
        if self._revision is not None:
            if cached is not None:
                return cached[1]
            roles, bindings = self._list("roles", namespace), self._list("rolebindings", namespace)
            rev: Hashable = None
        else:
            roles, bindings = self._list("roles", namespace), self._list("rolebindings", namespace)
            rev = (_fingerprint(roles), _fingerprint(bindings))
            if cached is not None and cached[0] == rev:
                return cached[1]
        view = _NamespaceView(roles, bindings)
        if len(self._namespaces) > 4096:
            self._namespaces.clear()
        self._namespaces[namespace] = (rev, view)
        return view

    def _role_rules(
        self, grant: _Grant, cluster: _ClusterView, local: _NamespaceView | None
    ) -> tuple[Rule, ...] | str:
        """A bound role's rules, or the real resolution error when it is missing."""
        if grant.role_kind == "ClusterRole":
            rules = cluster.roles.get(grant.role_name)
            if rules is None:
                return f'clusterrole.{GROUP} "{grant.role_name}" not found'
            return rules
        if grant.role_kind == "Role" and local is not None:
            rules = local.roles.get(grant.role_name)
            if rules is None:
                return f'role.{GROUP} "{grant.role_name}" not found'
            return rules
        return f'unsupported role reference kind: "{grant.role_kind}"'

    def _visit(
        self, user: UserInfo, namespace: str
    ) -> Iterable[tuple[_Grant, tuple[Rule, ...] | str]]:
        """Every grant that applies to the user, with its rules: ClusterRoleBindings first, then
        the RoleBindings of the namespace, as `VisitRulesFor` walks them."""
        cluster = self._cluster_view()
        for grant in cluster.bindings.for_user(user):
            yield grant, self._role_rules(grant, cluster, None)
        if namespace:
            local = self._namespace_view(namespace)
            for grant in local.bindings.for_user(user):
                yield grant, self._role_rules(grant, cluster, local)

    # the authorizer interface

    def authorize(self, user: UserInfo, attrs: Attributes) -> tuple[bool, str]:
        """(allowed, reason) for one request, with the real authorizer's reasons."""
        if user.is_admin:
            return True, ""
        failures: list[str] = []
        namespace = attrs.namespace if attrs.resource_request else ""
        for grant, rules in self._visit(user, namespace):
            if isinstance(rules, str):
                failures.append(rules)
                continue
            if any(rule.allows(attrs) for rule in rules):
                return True, f"RBAC: allowed by {grant.describe()}"
        return False, _failure_reason(failures)

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[Rule], list[str]]:
        """Every rule the user holds in a namespace (cluster-wide when ""), with resolution
        errors."""
        rules: list[Rule] = []
        failures: list[str] = []
        for _grant, found in self._visit(user, namespace):
            if isinstance(found, str):
                failures.append(found)
            else:
                rules.extend(found)
        return rules, failures

    # escalation prevention

    def check_escalation(
        self,
        user: UserInfo,
        verb: str,
        plural: str,
        obj: dict[str, Any],
        old_obj: dict[str, Any] | None = None,
    ) -> None:
        """Refuse to create or update a role or binding that grants what the user lacks.

        `verb` is `create` or `update` (a patch is an update). Mirrors the RBAC registry: a
        member of system:masters may do anything; a role needs `escalate` on it or rules the
        user already holds; a binding needs `bind` on its role or the role's rules. An update
        that only touches the fields garbage collection needs (finalizers, owner references)
        passes, as on a real server.
        """
        if user.is_admin or plural not in (
            "roles",
            "clusterroles",
            "rolebindings",
            "clusterrolebindings",
        ):
            return
        if old_obj is not None and _only_gc_fields_changed(old_obj, obj):
            return
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")
        namespace = meta.get("namespace", "") if plural in ("roles", "rolebindings") else ""
        if plural in ("roles", "clusterroles"):
            escalate = Attributes("escalate", plural, GROUP, "", namespace, name)
            if self.authorize(user, escalate)[0]:
                return
            wanted = [Rule.from_dict(r) for r in obj.get("rules") or ()]
            if plural == "clusterroles" and obj.get("aggregationRule") is not None:
                # The aggregated rules are written by the controller, not granted by the user.
                return
        else:
            ref = obj.get("roleRef") or {}
            ref_kind, ref_name = ref.get("kind", ""), ref.get("name", "")
            ref_plural = "clusterroles" if ref_kind == "ClusterRole" else "roles"
            bind = Attributes("bind", ref_plural, GROUP, "", namespace, ref_name)
            if self.authorize(user, bind)[0]:
                return
            resolved = self._referenced_rules(ref_kind, ref_name, namespace)
            if isinstance(resolved, str):
                raise _forbidden_object(plural, name, resolved)
            wanted = list(resolved)
        owned, failures = self.rules_for(user, namespace)
        missing = covers(owned, wanted)
        if not missing:
            return
        described = sorted({r.compact_string() for r in _compact(missing)})
        message = (
            f"user {json.dumps(user.username)} (groups={_go_quote_list(user.groups)}) is "
            f"attempting to grant RBAC permissions not currently held:\n" + "\n".join(described)
        )
        if failures:
            message += f"; resolution errors: [{', '.join(failures)}]"
        raise _forbidden_object(plural, name, message)

    def _referenced_rules(self, kind: str, name: str, namespace: str) -> tuple[Rule, ...] | str:
        cluster = self._cluster_view()
        if kind == "ClusterRole":
            found = cluster.roles.get(name)
            return found if found is not None else f'clusterroles.{GROUP} "{name}" not found'
        if kind == "Role" and namespace:
            found = self._namespace_view(namespace).roles.get(name)
            return found if found is not None else f'roles.{GROUP} "{name}" not found'
        return f'unsupported role reference kind: "{kind}"'

    # access reviews

    def review(self, kind: str, body: dict[str, Any], requester: UserInfo) -> dict[str, Any]:
        """Answer a SubjectAccessReview, SelfSubjectAccessReview, LocalSubjectAccessReview or
        SelfSubjectRulesReview: the posted object with its `status` filled in.

        For a LocalSubjectAccessReview the server puts the URL's namespace into
        `metadata.namespace`; the spec's namespace must match it, as on a real server.
        """
        out = copy.deepcopy(body)
        out.setdefault("apiVersion", f"{AUTHORIZATION_GROUP}/v1")
        out["kind"] = kind
        meta = out.setdefault("metadata", {})
        meta.setdefault("creationTimestamp", None)
        spec = out.setdefault("spec", {})
        if kind == "SelfSubjectRulesReview":
            namespace = spec.get("namespace") or ""
            out["status"] = self._rules_review(requester, namespace)
            return out
        _validate_access_review(kind, spec, meta)
        if kind in ("SubjectAccessReview", "LocalSubjectAccessReview"):
            extra = spec.get("extra") or {}
            subject = UserInfo(
                username=spec.get("user") or "",
                groups=tuple(spec.get("groups") or ()),
                uid=spec.get("uid") or "",
                extra=tuple((k, tuple(v)) for k, v in extra.items()),
            )
        else:
            subject = requester
        attrs = _review_attributes(spec)
        allowed, reason = self.authorize(subject, attrs)
        status: dict[str, Any] = {"allowed": allowed}
        if reason:
            status["reason"] = reason
        out["status"] = status
        return out

    def _rules_review(self, user: UserInfo, namespace: str) -> dict[str, Any]:
        if user.is_admin:
            return {
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": False,
            }
        rules, failures = self.rules_for(user, namespace)
        resource_rules: list[dict[str, Any]] = []
        non_resource_rules: list[dict[str, Any]] = []
        for rule in rules:
            if rule.resources:
                entry: dict[str, Any] = {
                    "verbs": list(rule.verbs),
                    "apiGroups": list(rule.api_groups),
                    "resources": list(rule.resources),
                }
                if rule.resource_names:
                    entry["resourceNames"] = list(rule.resource_names)
                resource_rules.append(entry)
            if rule.non_resource_urls:
                non_resource_rules.append(
                    {"verbs": list(rule.verbs), "nonResourceURLs": list(rule.non_resource_urls)}
                )
        status: dict[str, Any] = {
            "resourceRules": resource_rules,
            "nonResourceRules": non_resource_rules,
            "incomplete": bool(failures),
        }
        if failures:
            status["evaluationError"] = _failure_reason(failures).removeprefix("RBAC: ")
        return status


def _failure_reason(failures: list[str]) -> str:
    if not failures:
        return ""
    listed = failures[0] if len(failures) == 1 else "[" + ", ".join(failures) + "]"
    return f"RBAC: {listed}"


def _only_gc_fields_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    def strip(obj: dict[str, Any]) -> dict[str, Any]:
        copied = copy.deepcopy(obj)
        meta = copied.get("metadata") or {}
        for key in (
            "finalizers",
            "ownerReferences",
            "resourceVersion",
            "managedFields",
            "generation",
        ):
            meta.pop(key, None)
        return copied

    return strip(old) == strip(new)


def _forbidden_object(plural: str, name: str, why: str) -> errors.ApiError:
    """`apierrors.NewForbidden(rbac.Resource(plural), name, err)`."""
    qualified = f"{plural}.{GROUP}"
    subject = f'{qualified} "{name}"' if name else qualified
    details: dict[str, Any] = {"group": GROUP, "kind": plural}
    if name:
        details["name"] = name
    return errors.ApiError(403, "Forbidden", f"{subject} is forbidden: {why}", details)


def forbidden(user: UserInfo, attrs: Attributes, reason: str = "") -> errors.ApiError:
    """The 403 the API server returns when the authorizer denies a request, in its words,
    for resource requests (with subresources) and non-resource paths alike."""
    if not attrs.resource_request:
        message = f'forbidden: User "{user.username}" cannot {attrs.verb} path "{attrs.path}"'
        if reason:
            message += f": {reason}"
        return errors.ApiError(403, "Forbidden", message, {})
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    subject = (
        f'{qualified} "{attrs.name}" is forbidden' if attrs.name else f"{qualified} is forbidden"
    )
    scope = f' in the namespace "{attrs.namespace}"' if attrs.namespace else " at the cluster scope"
    message = (
        f'{subject}: User "{user.username}" cannot {attrs.verb} resource "{resource}" '
        f'in API group "{attrs.api_group}"{scope}'
    )
    if reason:
        message += f": {reason}"
    details: dict[str, Any] = {"kind": attrs.resource}
    if attrs.name:
        details["name"] = attrs.name
    if attrs.api_group:
        details["group"] = attrs.api_group
    return errors.ApiError(403, "Forbidden", message, details)


def _validate_access_review(kind: str, spec: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    causes: list[errors.Cause] = []
    resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if resource is not None and non_resource is not None:
        causes.append(
            errors.Cause(
                "spec.resourceAttributes",
                "Invalid value: cannot be specified in combination with resourceAttributes",
            )
        )
    elif resource is None and non_resource is None:
        causes.append(
            errors.Cause(
                "spec.resourceAttributes",
                "Required value: exactly one of nonResourceAttributes or resourceAttributes "
                "must be specified",
                "FieldValueRequired",
            )
        )
    if kind in ("SubjectAccessReview", "LocalSubjectAccessReview") and not (
        spec.get("user") or spec.get("groups")
    ):
        causes.append(
            errors.Cause(
                "spec.user", 'Invalid value: "": at least one of user or group must be specified'
            )
        )
    if kind == "LocalSubjectAccessReview":
        namespace = meta.get("namespace") or ""
        if resource is not None and (resource.get("namespace") or "") != namespace:
            causes.append(
                errors.Cause(
                    "spec.resourceAttributes.namespace",
                    f"Invalid value: {json.dumps(resource.get('namespace') or '')}: "
                    "must match metadata.namespace",
                )
            )
        if non_resource is not None:
            causes.append(
                errors.Cause(
                    "spec.nonResourceAttributes",
                    "Invalid value: disallowed on this kind of request",
                )
            )
    if causes:
        raise errors.invalid(kind, AUTHORIZATION_GROUP, "", causes)


def _review_attributes(spec: Mapping[str, Any]) -> Attributes:
    resource = spec.get("resourceAttributes")
    if resource is not None:
        return Attributes(
            verb=resource.get("verb") or "",
            resource=resource.get("resource") or "",
            api_group=resource.get("group") or "",
            subresource=resource.get("subresource") or "",
            namespace=resource.get("namespace") or "",
            name=resource.get("name") or "",
        )
    non_resource = spec.get("nonResourceAttributes") or {}
    return Attributes(
        verb=non_resource.get("verb") or "",
        path=non_resource.get("path") or "",
        resource_request=False,
    )


# -- bootstrap policy ---------------------------------------------------------------------

_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]
_BOOTSTRAP_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_AUTOUPDATE = {"rbac.authorization.kubernetes.io/autoupdate": "true"}


def _rule(verbs: list[str], groups: list[str], resources: list[str]) -> dict[str, Any]:
    return {"verbs": verbs, "apiGroups": groups, "resources": resources}


def _clusterrole(
    name: str,
    rules: list[dict[str, Any]] | None = None,
    aggregate_from: str | None = None,
    aggregate_to: str | None = None,
) -> dict[str, Any]:
    labels = dict(_BOOTSTRAP_LABELS)
    if aggregate_to:
        labels[f"{GROUP}/aggregate-to-{aggregate_to}"] = "true"
    role: dict[str, Any] = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels, "annotations": dict(_AUTOUPDATE)},
        "rules": rules or [],
    }
    if aggregate_from:
        role["aggregationRule"] = {
            "clusterRoleSelectors": [
                {"matchLabels": {f"{GROUP}/aggregate-to-{aggregate_from}": "true"}}
            ]
        }
    return role


def _clusterrolebinding(name: str, role: str, groups: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": name,
            "labels": dict(_BOOTSTRAP_LABELS),
            "annotations": dict(_AUTOUPDATE),
        },
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": g} for g in groups],
    }


def bootstrap_objects() -> list[dict[str, Any]]:
    """The default ClusterRoles and ClusterRoleBindings a v1.30 API server creates at start,
    for the kinds this server serves (rules of `pkg/apis/rbac/v1/bootstrappolicy`)."""
    aggregate_to_view = [
        _rule(
            _READ,
            [""],
            [
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "configmaps",
            ],
        ),
        _rule(
            _READ,
            [""],
            [
                "limitranges",
                "resourcequotas",
                "bindings",
                "events",
                "pods/status",
                "resourcequotas/status",
                "namespaces/status",
                "replicationcontrollers/status",
                "pods/log",
            ],
        ),
        _rule(_READ, [""], ["namespaces"]),
        _rule(_READ, ["discovery.k8s.io"], ["endpointslices"]),
        _rule(
            _READ,
            ["apps"],
            [
                "controllerrevisions",
                "statefulsets",
                "statefulsets/status",
                "statefulsets/scale",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/status",
                "deployments/scale",
                "replicasets",
                "replicasets/status",
                "replicasets/scale",
            ],
        ),
        _rule(
            _READ, ["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]
        ),
        _rule(_READ, ["batch"], ["jobs", "cronjobs", "cronjobs/status", "jobs/status"]),
        _rule(
            _READ,
            ["extensions"],
            [
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "ingresses",
                "ingresses/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "replicationcontrollers/scale",
                "networkpolicies",
            ],
        ),
        _rule(_READ, ["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        _rule(_READ, ["networking.k8s.io"], ["networkpolicies", "ingresses", "ingresses/status"]),
    ]
    aggregate_to_edit = [
        _rule(
            _READ,
            [""],
            [
                "pods/attach",
                "pods/proxy",
                "pods/exec",
                "pods/portforward",
                "secrets",
                "services/proxy",
            ],
        ),
        _rule(["impersonate"], [""], ["serviceaccounts"]),
        _rule(_WRITE, [""], ["pods", "pods/attach", "pods/proxy", "pods/exec", "pods/portforward"]),
        _rule(["create"], [""], ["pods/eviction"]),
        _rule(
            _WRITE,
            [""],
            [
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/proxy",
                "persistentvolumeclaims",
                "configmaps",
                "secrets",
                "events",
            ],
        ),
        _rule(["create"], [""], ["serviceaccounts/token"]),
        _rule(
            _WRITE,
            ["apps"],
            [
                "statefulsets",
                "statefulsets/scale",
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "replicasets",
                "replicasets/scale",
            ],
        ),
        _rule(_WRITE, ["autoscaling"], ["horizontalpodautoscalers"]),
        _rule(_WRITE, ["batch"], ["jobs", "cronjobs"]),
        _rule(
            _WRITE,
            ["extensions"],
            [
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "ingresses",
                "replicasets",
                "replicasets/scale",
                "replicationcontrollers/scale",
                "networkpolicies",
            ],
        ),
        _rule(_WRITE, ["policy"], ["poddisruptionbudgets"]),
        _rule(_WRITE, ["networking.k8s.io"], ["networkpolicies", "ingresses"]),
        _rule(_READ + _WRITE, ["coordination.k8s.io"], ["leases"]),
    ]
    aggregate_to_admin = [
        _rule(["create"], [AUTHORIZATION_GROUP], ["localsubjectaccessreviews"]),
        _rule(_READ + _WRITE, [GROUP], ["roles", "rolebindings"]),
    ]
    discovery_urls = [
        "/livez",
        "/readyz",
        "/healthz",
        "/version",
        "/version/",
        "/openapi",
        "/openapi/*",
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
    ]
    roles = [
        _clusterrole(
            "cluster-admin",
            [
                {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                {"verbs": ["*"], "nonResourceURLs": ["*"]},
            ],
        ),
        _clusterrole("admin", aggregate_from="admin"),
        _clusterrole("edit", aggregate_from="edit", aggregate_to="admin"),
        _clusterrole("view", aggregate_from="view", aggregate_to="edit"),
        _clusterrole("system:aggregate-to-admin", aggregate_to_admin, aggregate_to="admin"),
        _clusterrole("system:aggregate-to-edit", aggregate_to_edit, aggregate_to="edit"),
        _clusterrole("system:aggregate-to-view", aggregate_to_view, aggregate_to="view"),
        _clusterrole("system:discovery", [{"verbs": ["get"], "nonResourceURLs": discovery_urls}]),
        _clusterrole(
            "system:basic-user",
            [
                _rule(
                    ["create"],
                    [AUTHORIZATION_GROUP],
                    ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                _rule(["create"], ["authentication.k8s.io"], ["selfsubjectreviews"]),
            ],
        ),
        _clusterrole(
            "system:public-info-viewer",
            [
                {
                    "verbs": ["get"],
                    "nonResourceURLs": ["/livez", "/readyz", "/healthz", "/version", "/version/"],
                }
            ],
        ),
    ]
    effective = aggregate(roles)
    for role in roles:
        if role["metadata"]["name"] in effective:
            role["rules"] = effective[role["metadata"]["name"]]
    bindings = [
        _clusterrolebinding("cluster-admin", "cluster-admin", ["system:masters"]),
        _clusterrolebinding("system:discovery", "system:discovery", [AUTHENTICATED]),
        _clusterrolebinding("system:basic-user", "system:basic-user", [AUTHENTICATED]),
        _clusterrolebinding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            [AUTHENTICATED, UNAUTHENTICATED],
        ),
    ]
    return roles + bindings
