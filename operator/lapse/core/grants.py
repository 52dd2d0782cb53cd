"""A grant, whatever asked for it: the one shape the binding, expiry and audit machinery use.

An AccessRequest and a BreakGlass both end up as "this subject holds this role in these
namespaces until then"; keeping that shape separate from either kind lets both share one
mechanism for binding, expiry, revocation and audit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lapse.core.kinds import API_VERSION
from lapse.core.models import (
    AccessRequest,
    GrantStatus,
    RoleRef,
    Subject,
    SubjectKind,
    UserInfo,
)


@dataclass(frozen=True, order=True)
class GrantKey:
    """Identifies a grant owner across renames of nothing: kind, namespace, name and UID."""

    kind: str
    namespace: str | None
    name: str
    uid: str

    @property
    def api_version(self) -> str:
        return API_VERSION

    def describe(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


@dataclass(frozen=True)
class Grant:
    """What a binding must say: who holds which role where, on whose behalf, until when."""

    key: GrantKey
    requester: UserInfo
    subject: Subject
    role: RoleRef
    # Namespaces to bind in; empty means cluster-wide (a ClusterRoleBinding).
    namespaces: tuple[str, ...]
    policy: str | None
    expires_at: datetime


def compute_request_key(request: AccessRequest) -> GrantKey:
    return GrantKey(
        kind=request.kind,
        namespace=request.metadata.namespace,
        name=request.metadata.name,
        uid=request.metadata.uid or "",
    )


def compute_subject(requester: UserInfo, named: Subject | None) -> Subject:
    """The subject written into the binding: the one named, or else the requester."""
    if named is not None:
        return named
    return Subject(kind=SubjectKind.USER, name=requester.username)


def compute_request_grant(
    request: AccessRequest, requester: UserInfo, policy: str | None, expires_at: datetime
) -> Grant:
    return Grant(
        key=compute_request_key(request),
        requester=requester,
        subject=compute_subject(requester, request.spec.subject),
        role=request.spec.role,
        namespaces=(request.metadata.namespace or "",),
        policy=policy,
        expires_at=expires_at,
    )


def compute_status_grant(key: GrantKey, role: RoleRef, status: GrantStatus) -> Grant | None:
    """The grant an active status describes, or None if the status is not a complete grant."""
    if status.requester is None or status.expires_at is None:
        return None
    subject = status.subject or compute_subject(status.requester, None)
    namespaces = tuple(b.namespace for b in status.bindings if b.namespace)
    return Grant(
        key=key,
        requester=status.requester,
        subject=subject,
        role=role,
        namespaces=namespaces,
        policy=status.policy,
        expires_at=status.expires_at,
    )
