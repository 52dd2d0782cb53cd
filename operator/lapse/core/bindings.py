"""RoleBinding manifests, and the checks that tell Lapse's bindings from everyone else's.

A binding is Lapse's only when three independent marks agree: the managed-by label, a
controller ownerReference to the owner's UID, and the `lapse.dev/request-uid` annotation. Labels
alone are easy to copy; requiring all three means a look-alike is never adopted, patched or
deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lapse.core.grants import Grant, GrantKey
from lapse.core.kinds import API_VERSION
from lapse.core.models import BindingRef, Subject, SubjectKind
from lapse.core.naming import compute_binding_name, compute_label_value

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_API_VERSION = f"{RBAC_GROUP}/v1"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "lapse"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
OWNER_NAME_LABEL = "lapse.dev/request"
OWNER_KIND_LABEL = "lapse.dev/kind"
EXPIRES_AT_ANNOTATION = "lapse.dev/expires-at"
OWNER_UID_ANNOTATION = "lapse.dev/request-uid"
POLICY_ANNOTATION = "lapse.dev/policy"
OWNER_KINDS = frozenset({"AccessRequest", "BreakGlass"})


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, as Kubernetes writes times."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 time, or None for anything unreadable (a tampered annotation, say)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(UTC)


def build_subject(subject: Subject) -> dict[str, str]:
    if subject.kind == SubjectKind.SERVICE_ACCOUNT:
        return {
            "kind": "ServiceAccount",
            "name": subject.name,
            "namespace": subject.namespace or "",
        }
    return {"kind": str(subject.kind), "name": subject.name, "apiGroup": RBAC_GROUP}


def build_role_ref(grant: Grant) -> dict[str, str]:
    return {"apiGroup": RBAC_GROUP, "kind": str(grant.role.kind), "name": grant.role.name}


def compute_binding_refs(grant: Grant) -> list[BindingRef]:
    """Where the grant's bindings live: one RoleBinding per namespace, or one ClusterRoleBinding."""
    name = compute_binding_name(grant.key.kind, grant.key.namespace, grant.key.name, grant.key.uid)
    if not grant.namespaces:
        return [BindingRef(kind="ClusterRoleBinding", name=name)]
    return [BindingRef(kind="RoleBinding", name=name, namespace=ns) for ns in grant.namespaces]


def build_owner_reference(key: GrantKey) -> dict[str, Any]:
    return {
        "apiVersion": key.api_version,
        "kind": key.kind,
        "name": key.name,
        "uid": key.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_binding(grant: Grant, ref: BindingRef) -> dict[str, Any]:
    """The manifest of one binding of `grant`."""
    metadata: dict[str, Any] = {
        "name": ref.name,
        "labels": {
            MANAGED_BY_LABEL: MANAGED_BY,
            OWNER_NAME_LABEL: compute_label_value(grant.key.name),
            OWNER_KIND_LABEL: grant.key.kind,
        },
        "annotations": {
            EXPIRES_AT_ANNOTATION: format_time(grant.expires_at),
            OWNER_UID_ANNOTATION: grant.key.uid,
            POLICY_ANNOTATION: grant.policy or "",
        },
        "ownerReferences": [build_owner_reference(grant.key)],
    }
    if ref.namespace:
        metadata["namespace"] = ref.namespace
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": ref.kind,
        "metadata": metadata,
        "roleRef": build_role_ref(grant),
        "subjects": [build_subject(grant.subject)],
    }


def compute_owner_uid(binding: Mapping[str, Any]) -> str | None:
    """The UID of the Lapse object that owns `binding`, or None if it is not Lapse's.

    All three marks must agree; anything less is a look-alike (or someone else's binding).
    """
    metadata = binding.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
        return None
    uid = annotations.get(OWNER_UID_ANNOTATION)
    if not uid:
        return None
    for owner in metadata.get("ownerReferences") or []:
        if (
            owner.get("uid") == uid
            and owner.get("controller") is True
            and owner.get("apiVersion") == API_VERSION
            and owner.get("kind") in OWNER_KINDS
            and owner.get("kind") == labels.get(OWNER_KIND_LABEL, owner.get("kind"))
        ):
            return str(uid)
    return None


def compute_owner_kind(binding: Mapping[str, Any]) -> str | None:
    uid = compute_owner_uid(binding)
    for owner in (binding.get("metadata") or {}).get("ownerReferences") or []:
        if uid is not None and owner.get("uid") == uid:
            return str(owner.get("kind"))
    return None


def compute_binding_ref(binding: Mapping[str, Any]) -> BindingRef:
    metadata = binding.get("metadata") or {}
    kind = "ClusterRoleBinding" if binding.get("kind") == "ClusterRoleBinding" else "RoleBinding"
    return BindingRef(
        kind=kind,
        name=metadata.get("name", ""),
        namespace=metadata.get("namespace") if kind == "RoleBinding" else None,
        uid=metadata.get("uid"),
    )


def binding_expiry(binding: Mapping[str, Any]) -> datetime | None:
    annotations = (binding.get("metadata") or {}).get("annotations") or {}
    return parse_time(annotations.get(EXPIRES_AT_ANNOTATION))


@dataclass(frozen=True)
class Drift:
    """How a live binding differs from what its grant says."""

    subjects: bool
    role_ref: bool
    expires_at: bool
    # Lapse's labels changed or taken off: the binding would drop out of every listing by
    # them (the sweep's, an operator's `kubectl get -l`) while it still grants.
    labels: bool = False

    @property
    def any(self) -> bool:
        return self.subjects or self.role_ref or self.expires_at or self.labels


def _subject_key(subject: Mapping[str, Any]) -> tuple[str, str, str]:
    return (
        str(subject.get("kind", "")),
        str(subject.get("name", "")),
        str(subject.get("namespace", "") or ""),
    )


def compute_drift(actual: Mapping[str, Any], desired: Mapping[str, Any]) -> Drift:
    actual_subjects = sorted(_subject_key(s) for s in actual.get("subjects") or [])
    desired_subjects = sorted(_subject_key(s) for s in desired.get("subjects") or [])
    actual_ref = actual.get("roleRef") or {}
    desired_ref = desired.get("roleRef") or {}
    actual_labels = (actual.get("metadata") or {}).get("labels") or {}
    desired_labels = (desired.get("metadata") or {}).get("labels") or {}
    return Drift(
        subjects=actual_subjects != desired_subjects,
        role_ref=(actual_ref.get("kind"), actual_ref.get("name"))
        != (desired_ref.get("kind"), desired_ref.get("name")),
        expires_at=binding_expiry(actual) != binding_expiry(desired),
        labels=any(actual_labels.get(k) != v for k, v in desired_labels.items()),
    )


def build_restore_patch(desired: Mapping[str, Any], resource_version: str | None) -> dict[str, Any]:
    """A merge patch putting subjects, Lapse's labels and the expiry mirror back as the
    grant says.

    The resourceVersion makes it conditional: if the binding changed again (or was replaced)
    since it was read, the API server refuses the patch instead of applying it blindly.
    """
    annotations = desired["metadata"]["annotations"]
    metadata: dict[str, Any] = {
        "annotations": {EXPIRES_AT_ANNOTATION: annotations[EXPIRES_AT_ANNOTATION]},
        "labels": dict(desired["metadata"].get("labels") or {}),
    }
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {"metadata": metadata, "subjects": desired["subjects"]}


def compute_owner_key(binding: Mapping[str, Any]) -> GrantKey | None:
    """The owner a Lapse binding belongs to, from its controller ownerReference."""
    uid = compute_owner_uid(binding)
    if uid is None:
        return None
    metadata = binding.get("metadata") or {}
    for owner in metadata.get("ownerReferences") or []:
        if owner.get("uid") == uid:
            kind = str(owner["kind"])
            namespace = metadata.get("namespace") if kind == "AccessRequest" else None
            return GrantKey(kind=kind, namespace=namespace, name=str(owner["name"]), uid=uid)
    return None
