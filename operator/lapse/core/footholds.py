"""Footholds: what a grantee makes under a grant that could carry access past its end.

Deleting a grant's bindings ends what the bindings allow, not what their holder made with them:
a ServiceAccount token minted during the grant, a long-lived token Secret, a workload running as
a more privileged ServiceAccount, a RoleBinding of their own. Lapse's foothold webhook sees such
writes; these functions decide, for one admission request, whether the caller holds an active
grant that covers it and what to do: refuse what cannot be undone later (tokens), record what
can (workloads and RBAC objects), let everything else through untouched.

A connection into a pod (exec, attach) hands its maker the pod's ServiceAccount token, bound
to the pod and valid for as long as it runs. When that account can do what the grantee cannot
(lapse.core.coverage), the policy's `strongerPods` says whether to refuse the connection, end
the pod when the grant ends (its token stops authenticating once the pod is gone), or report it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lapse.core.bindings import format_time, parse_time
from lapse.core.coverage import Atom, compute_beyond, compute_highlights
from lapse.core.grants import GrantKey
from lapse.core.kinds import BREAK_GLASS
from lapse.core.models import (
    AccessPolicy,
    Foothold,
    FootholdAction,
    FootholdPolicy,
    Phase,
    RoleKind,
    RoleRef,
    StrongerPodAction,
    Subject,
    SubjectKind,
)
from lapse.core.rbac import (
    SA_GROUP,
    SA_PREFIX,
    Held,
    Holdings,
    Snapshot,
    held_by,
    role_key,
)

TOKEN_SECRET_TYPE = "kubernetes.io/service-account-token"
# Where each workload kind keeps the pod spec whose ServiceAccount it runs as.
POD_SPEC_PATHS: Mapping[str, tuple[str, ...]] = {
    "pods": ("spec",),
    "deployments": ("spec", "template", "spec"),
    "statefulsets": ("spec", "template", "spec"),
    "daemonsets": ("spec", "template", "spec"),
    "replicasets": ("spec", "template", "spec"),
    "jobs": ("spec", "template", "spec"),
    "cronjobs": ("spec", "jobTemplate", "spec", "template", "spec"),
}
RBAC_RESOURCES = frozenset({"roles", "rolebindings", "clusterroles", "clusterrolebindings"})
CONNECTS = ("exec", "attach", "portforward")
# The connections that reach a container's files (and its token); port-forward reaches ports.
TOKEN_CONNECTS = ("exec", "attach")
AUTHENTICATED = "system:authenticated"
# How many things a stronger account can do that the grant cannot a sentence names.
SHOWN = 3
# What the bootstrap policy lets every ServiceAccount read and few people may
# (system:service-account-issuer-discovery, bound to system:serviceaccounts): the token
# issuer's discovery document and public keys. Public by nature, they give no access, so they
# make no account stronger than a grantee.
ISSUER_DISCOVERY = frozenset(
    Atom("get", url=url)
    for path in ("/.well-known/openid-configuration", "/openid/v1/jwks")
    for url in (path, f"{path}/")
)
CLUSTER_SCOPED = frozenset({"clusterroles", "clusterrolebindings"})
_MADE_OR_CHANGED = ("CREATE", "UPDATE")
# What the webhook is registered for: (group, version, resource, subresource, operations). A
# pod's ServiceAccount cannot change, so pods are watched on create only.
WATCHED: tuple[tuple[str, str, str, str | None, tuple[str, ...]], ...] = (
    ("", "v1", "serviceaccounts", "token", ("CREATE",)),
    ("", "v1", "secrets", None, ("CREATE",)),
    ("", "v1", "pods", None, ("CREATE",)),
    *(("", "v1", "pods", connect, ("CONNECT",)) for connect in CONNECTS),
    ("apps", "v1", "deployments", None, _MADE_OR_CHANGED),
    ("apps", "v1", "statefulsets", None, _MADE_OR_CHANGED),
    ("apps", "v1", "daemonsets", None, _MADE_OR_CHANGED),
    ("apps", "v1", "replicasets", None, _MADE_OR_CHANGED),
    ("batch", "v1", "jobs", None, _MADE_OR_CHANGED),
    ("batch", "v1", "cronjobs", None, _MADE_OR_CHANGED),
    ("rbac.authorization.k8s.io", "v1", "roles", None, _MADE_OR_CHANGED),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", None, _MADE_OR_CHANGED),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", None, _MADE_OR_CHANGED),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", None, _MADE_OR_CHANGED),
)
# What of an RBAC object gives access: a change to it under a grant is a foothold.
_RBAC_GIVES = ("subjects", "rules", "aggregationRule")


@dataclass(frozen=True)
class GranteeGrant:
    """What the webhook needs to know of one active grant, kept in an index by subject."""

    key: GrantKey
    subject: Subject
    # The namespaces the grant reaches; empty for a cluster-wide break-glass.
    namespaces: tuple[str, ...]
    expires_at: datetime
    policy: str | None
    # The role it binds: its rules count as the grantee's even before the binding is seen.
    role: RoleRef | None = None

    def covers(self, namespace: str | None) -> bool:
        if not self.namespaces:
            return True
        return namespace is not None and namespace in self.namespaces

    def describe(self) -> str:
        name = f"{self.key.namespace}/{self.key.name}" if self.key.namespace else self.key.name
        return f"{self.key.kind} {name}"


@dataclass(frozen=True)
class Connection:
    """What the webhook read for a connection into a pod: the pod as the API server holds it
    (None: it could not be read, `error` says why), the caller's groups from admission, and the
    cluster's RBAC (`holdings` None: not loaded yet)."""

    pod: Mapping[str, Any] | None
    groups: tuple[str, ...] = ()
    holdings: Holdings | None = None
    snapshot: Snapshot | None = None
    error: str | None = None


@dataclass(frozen=True)
class FootholdVerdict:
    """Allow (both None), refuse with a sentence, or allow and record on `grant`."""

    refusal: str | None = None
    foothold: Foothold | None = None
    grant: GranteeGrant | None = None


def subject_index_key(kind: SubjectKind, name: str) -> str:
    return f"{kind.value}:{name}"


def compute_caller_keys(username: str, groups: Iterable[str]) -> list[str]:
    """The index keys under which a caller's grants are kept: their user name (a
    ServiceAccount's user name names it too) and each of their groups."""
    keys = [subject_index_key(SubjectKind.USER, username)]
    prefix = "system:serviceaccount:"
    if username.startswith(prefix):
        keys.append(subject_index_key(SubjectKind.SERVICE_ACCOUNT, username.removeprefix(prefix)))
    keys += [subject_index_key(SubjectKind.GROUP, g) for g in groups]
    return keys


def build_grantee_grant(kind: str, body: Mapping[str, Any]) -> tuple[str, GranteeGrant] | None:
    """The index entry of an active grant (by its subject), or None for anything else."""
    status = body.get("status") or {}
    subject = status.get("subject") or {}
    metadata = body.get("metadata") or {}
    if status.get("phase") != Phase.ACTIVE.value or not status.get("expiresAt"):
        return None
    if not subject.get("kind") or not subject.get("name"):
        return None
    try:
        subject_kind = SubjectKind(subject["kind"])
    except ValueError:
        return None
    expires_at = parse_time(str(status["expiresAt"]))
    if expires_at is None:
        return None
    name = str(subject["name"])
    if subject_kind == SubjectKind.SERVICE_ACCOUNT:
        name = f"{subject.get('namespace') or ''}:{name}"
    spec = body.get("spec") or {}
    if kind == BREAK_GLASS.kind:
        namespaces = tuple(spec.get("namespaces") or ())
    else:
        namespaces = (str(metadata.get("namespace") or ""),)
    role = spec.get("role") or {}
    try:
        role_ref = RoleRef(kind=RoleKind(str(role.get("kind"))), name=str(role.get("name") or ""))
    except ValueError:
        role_ref = None
    grant = GranteeGrant(
        key=GrantKey(kind, metadata.get("namespace"), metadata["name"], metadata.get("uid", "")),
        subject=Subject(
            kind=subject_kind, name=str(subject["name"]), namespace=subject.get("namespace")
        ),
        namespaces=namespaces,
        expires_at=expires_at,
        policy=status.get("policy"),
        role=role_ref,
    )
    return subject_index_key(subject_kind, name), grant


def build_foothold_uids(kind: str, body: Mapping[str, Any]) -> dict[str, GrantKey] | None:
    """The UIDs of what an active grant's holder made, by the grant: a change to one of them
    by someone else makes it theirs too."""
    status = body.get("status") or {}
    metadata = body.get("metadata") or {}
    if status.get("phase") != Phase.ACTIVE.value:
        return None
    key = GrantKey(
        kind, metadata.get("namespace"), metadata.get("name", ""), metadata.get("uid", "")
    )
    uids = {
        str(f["uid"]): key
        for f in status.get("footholds") or []
        if f.get("uid") and not f.get("outcome") and not f.get("connect")
        and not f.get("changed") and not f.get("adoptedBy")
    }  # fmt: skip
    return uids or None


def compute_covering_grant(
    grants: Sequence[GranteeGrant], namespace: str | None, now: datetime, *, known: bool = True
) -> GranteeGrant | None:
    """Of the caller's grants, the one that covers `namespace` and lasts longest. When the
    request does not say where (`known` False), any live grant of the caller counts: deciding
    as if it covered is the side that never lets a grantee through."""
    live = [g for g in grants if g.expires_at > now and (not known or g.covers(namespace))]
    return max(live, key=lambda g: g.expires_at, default=None)


def service_account_of(resource: str, body: Mapping[str, Any]) -> str | None:
    """The ServiceAccount a workload's pods run as; None for anything that runs nothing."""
    if resource not in POD_SPEC_PATHS:
        return None
    node: Any = body
    for step in POD_SPEC_PATHS.get(resource, ()):
        node = node.get(step) if isinstance(node, Mapping) else None
    if not isinstance(node, Mapping):
        return None
    return str(node.get("serviceAccountName") or node.get("serviceAccount") or "default")


def _action(resource: str, policy: FootholdPolicy) -> FootholdAction:
    return policy.rbac if resource in RBAC_RESOURCES else policy.workloads


def compute_foothold_verdict(
    *,
    username: str,
    resource: str,
    subresource: str | None,
    namespace: str | None,
    name: str,
    body: Mapping[str, Any],
    grant: GranteeGrant | None,
    policies: Mapping[str, AccessPolicy],
    now: datetime,
    old: Mapping[str, Any] | None = None,
    connection: Connection | None = None,
) -> FootholdVerdict:
    """What to do with one create (or, with `old`, update) by `username`, who holds `grant`
    here (None: nothing); for a connection into a pod, with what was read of it."""
    if grant is None:
        return FootholdVerdict()
    if old is not None:
        return _changed(resource, namespace, name, body, old, grant, now)
    held = f"{username} holds {grant.describe()} until {format_time(grant.expires_at)}"
    if resource == "serviceaccounts" and subresource == "token":
        return FootholdVerdict(
            refusal=f"{held}; a ServiceAccount token minted under a grant would outlive it, so "
            "Lapse refuses TokenRequests made with temporary access. Ask for a token outside "
            "the grant, or use the grant itself."
        )
    if resource == "secrets":
        if body.get("type") != TOKEN_SECRET_TYPE:
            return FootholdVerdict()
        return FootholdVerdict(
            refusal=f"{held}; a Secret of type {TOKEN_SECRET_TYPE} would hold a token that never "
            "expires, so Lapse refuses it under a grant."
        )
    if resource == "pods" and subresource in CONNECTS:
        return _connected(
            held,
            username,
            namespace or "",
            name,
            subresource,
            grant,
            policies.get(grant.policy or ""),
            connection or Connection(pod=None, error="it was not read"),
            now,
        )
    if subresource or (resource not in POD_SPEC_PATHS and resource not in RBAC_RESOURCES):
        return FootholdVerdict()
    policy = policies.get(grant.policy or "")
    rules = policy.spec.footholds if policy is not None else FootholdPolicy()
    foothold = build_foothold(
        resource, namespace, name, body, now, action=_action(resource, rules), changed=False
    )
    return FootholdVerdict(foothold=foothold, grant=grant)


def mounts_token(pod: Mapping[str, Any]) -> bool:
    """Whether a pod's containers can read a ServiceAccount token: a projected volume with a
    `serviceAccountToken` source (kube-apiserver's ServiceAccount admission adds one,
    `kube-api-access-*`, to every pod that does not opt out with automountServiceAccountToken).
    Any container will do: whoever may exec may choose the container."""
    for volume in (pod.get("spec") or {}).get("volumes") or ():
        projected = (volume.get("projected") or {}) if isinstance(volume, Mapping) else {}
        for source in projected.get("sources") or ():
            if isinstance(source, Mapping) and source.get("serviceAccountToken") is not None:
                return True
    return False


def compute_account_held(holdings: Holdings, namespace: str, account: str) -> list[Held]:
    """Everything a ServiceAccount's token gives: what is bound to the account and to the
    groups the API server puts every ServiceAccount in."""
    groups = (SA_GROUP, f"{SA_GROUP}:{namespace}", AUTHENTICATED)
    return held_by(holdings, f"{SA_PREFIX}{namespace}:{account}", groups)


def compute_grantee_held(
    holdings: Holdings,
    snapshot: Snapshot | None,
    username: str,
    groups: Sequence[str],
    grant: GranteeGrant,
) -> list[Held]:
    """Everything the caller holds, the grant's role in the grant's namespaces included even
    if its binding has not reached the RBAC index yet (never refuse over a watch's lag)."""
    held = held_by(holdings, username, groups)
    if grant.role is None or snapshot is None:
        return held
    for scope in grant.namespaces or (None,):
        role = snapshot.roles.get(role_key(grant.role.kind.value, grant.role.name, scope))
        if role is not None:
            held += [Held(rule, scope, grant.describe()) for rule in role.rules]
    return held


def _connected(
    held: str,
    username: str,
    namespace: str,
    name: str,
    connect: str,
    grant: GranteeGrant,
    policy: AccessPolicy | None,
    connection: Connection,
    now: datetime,
) -> FootholdVerdict:
    """A connection into a pod: recorded, and for exec or attach into a pod whose token gives
    more than the caller holds, refused, recorded to end the pod, or reported, as the policy's
    strongerPods says."""
    record = Foothold(
        api_version="v1",
        kind="Pod",
        resource="pods",
        namespace=namespace,
        name=name,
        connect=connect,
        at=now,
        action=FootholdAction.REPORT,
    )
    choice = policy.spec.footholds.stronger_pods if policy else StrongerPodAction.REFUSE
    where = f"Pod {namespace}/{name}"
    pod = connection.pod
    if pod is None:
        if connect in TOKEN_CONNECTS and choice == StrongerPodAction.REFUSE:
            return FootholdVerdict(
                refusal=f"{held}; Lapse could not read {where} ({connection.error}), so it "
                f"cannot tell whether the token an {connect} could read there gives more than "
                "the grant, and refuses it. Try again in a moment."
            )
        return FootholdVerdict(foothold=record, grant=grant)
    account = service_account_of("pods", pod) or "default"
    uid = (pod.get("metadata") or {}).get("uid")
    record = record.model_copy(update={"service_account": account, "uid": uid})
    if connect not in TOKEN_CONNECTS or not mounts_token(pod):
        return FootholdVerdict(foothold=record, grant=grant)
    runs_as = f"{where} runs as ServiceAccount {namespace}/{account} and mounts its token"
    if connection.holdings is None:
        return FootholdVerdict(
            refusal=f"{held}; {runs_as}, and Lapse has not loaded the cluster's RBAC yet to "
            "tell whether that token gives more than the grant, so it refuses the "
            f"{connect}. Try again in a moment."
        )
    beyond = compute_beyond(
        compute_account_held(connection.holdings, namespace, account),
        compute_grantee_held(
            connection.holdings, connection.snapshot, username, connection.groups, grant
        ),
    )
    beyond = [b for b in beyond if b.atom not in ISSUER_DISCOVERY]
    if not beyond:
        return FootholdVerdict(foothold=record, grant=grant)
    lines = compute_highlights(beyond)
    record = record.model_copy(update={"beyond": lines[:SHOWN]})
    if choice == StrongerPodAction.REFUSE:
        more = f", and {len(lines) - SHOWN} more" if len(lines) > SHOWN else ""
        return FootholdVerdict(
            refusal=f"{held}; {runs_as}, which can do what this grant cannot: "
            f"{'; '.join(lines[:SHOWN])}{more}. Whoever reads that token keeps those rights "
            "after the grant ends and acts under the account's name, so Lapse refuses "
            f"{connect} into such pods under a grant. Use a pod whose ServiceAccount can do "
            "no more than the grant (or that mounts no token), or ask for access that covers "
            "what the account can do."
        )
    if choice == StrongerPodAction.END_PODS:
        record = record.model_copy(update={"action": FootholdAction.REMOVE})
    return FootholdVerdict(foothold=record, grant=grant)


def build_foothold(
    resource: str,
    namespace: str | None,
    name: str,
    body: Mapping[str, Any],
    now: datetime,
    *,
    action: FootholdAction,
    changed: bool,
) -> Foothold:
    """The record of one object a grantee made or changed, as admission saw it."""
    metadata = body.get("metadata") or {}
    return Foothold(
        api_version=str(body.get("apiVersion") or ""),
        kind=str(body.get("kind") or ""),
        resource=resource,
        namespace=namespace,
        name=str(metadata.get("name") or name),
        uid=metadata.get("uid"),
        service_account=service_account_of(resource, body),
        changed=changed,
        at=now,
        action=action,
    )


def _changed(
    resource: str,
    namespace: str | None,
    name: str,
    body: Mapping[str, Any],
    old: Mapping[str, Any],
    grant: GranteeGrant,
    now: datetime,
) -> FootholdVerdict:
    """An existing object changed by a grantee: a foothold when the change is one of access
    (a workload's ServiceAccount, a binding's subjects, a role's rules)."""
    if resource in POD_SPEC_PATHS:
        gives = service_account_of(resource, body) != service_account_of(resource, old)
    elif resource in RBAC_RESOURCES:
        gives = any(body.get(part) != old.get(part) for part in _RBAC_GIVES)
    else:
        gives = False
    if not gives:
        return FootholdVerdict()
    foothold = build_foothold(
        resource, namespace, name, body, now, action=FootholdAction.REPORT, changed=True
    )
    return FootholdVerdict(foothold=foothold, grant=grant)


def compute_object_path(foothold: Foothold) -> str:
    """The API path of a foothold's object."""
    group_version = foothold.api_version
    base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    scope = f"/namespaces/{foothold.namespace}" if foothold.namespace else ""
    return f"{base}{scope}/{foothold.resource}/{foothold.name}"


def describe_foothold(foothold: Foothold) -> str:
    where = f"{foothold.namespace}/" if foothold.namespace else ""
    runs_as = f" (runs as {foothold.service_account})" if foothold.service_account else ""
    if foothold.changed:
        return f"{foothold.kind} {where}{foothold.name}, changed{runs_as}"
    if foothold.adopted_by:
        changer = foothold.adopted_by
        return f"{foothold.kind} {where}{foothold.name}{runs_as}, since changed by {changer}"
    if foothold.connect:
        account = foothold.service_account or "its ServiceAccount"
        pod = f"Pod {where}{foothold.name}"
        can = f", which can {'; '.join(foothold.beyond)}" if foothold.beyond else ""
        return f"{foothold.connect} into {pod} (could read the token of {account}{can})"
    return f"{foothold.kind} {where}{foothold.name}{runs_as}"


def pod_ended(foothold: Foothold) -> bool:
    """A connection whose pod is gone at the grant's end (ended by Lapse, or already deleted
    or replaced): no token read through it authenticates any more."""
    return bool(foothold.connect) and foothold.outcome in ("Ended", "Gone", "Changed")


def compute_settle_message(footholds: Sequence[Foothold]) -> tuple[str, bool]:
    """The end-of-grant sentence on what the grantee made, and whether anything remains."""
    removed = [describe_foothold(f) for f in footholds if f.outcome == "Removed"]
    made = [f for f in footholds if not f.connect]
    remains = [describe_foothold(f) for f in made if f.outcome in ("Reported", "Kept")]
    ended = [describe_foothold(f) for f in footholds if pod_ended(f)]
    connected = [describe_foothold(f) for f in footholds if f.connect and not pod_ended(f)]
    parts = []
    if removed:
        parts.append(f"Removed what was made under the grant: {', '.join(removed)}.")
    if remains:
        parts.append(f"Still in place, made under the grant (review them): {', '.join(remains)}.")
    if ended:
        parts.append(
            "Pods connected to under the grant are gone, and the tokens bound to them with "
            f"them: {', '.join(ended)}."
        )
    if connected:
        parts.append(
            "Connections made under the grant (rotate the credentials they could read): "
            f"{', '.join(connected)}."
        )
    others = len(footholds) - len(removed) - len(remains) - len(ended) - len(connected)
    if others:
        parts.append(f"{others} object(s) made under the grant were already gone or replaced.")
    return " ".join(parts), bool(remains or connected)
