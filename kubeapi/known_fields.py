"""The fields the Go types of the built-in kinds know: strict decoding for built-in objects.

Under `fieldValidation=Strict` (kubectl's default) a real API server refuses a built-in object
with a field its Go type lacks, e.g. a RoleBinding with `subject:`; under `Warn` it answers with
a warning. Custom objects are checked against their CRD schema elsewhere. Kinds not listed here
(pods, services, deployments) are not checked.
"""

from __future__ import annotations

from typing import Any

from . import errors
from .resources import ResourceInfo
from .schema import OBJECT_META_FIELDS

# A spec maps a field to None (any content), to a nested spec, or to ("list", item spec).
Spec = dict[str, Any]
ANY = None

OWNER_REFERENCE: Spec = dict.fromkeys(
    ("apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion")
)
OBJECT_META: Spec = {
    **dict.fromkeys(OBJECT_META_FIELDS),
    "ownerReferences": ("list", OWNER_REFERENCE),
}
POLICY_RULE: Spec = dict.fromkeys(
    ("verbs", "apiGroups", "resources", "resourceNames", "nonResourceURLs")
)
SUBJECT: Spec = dict.fromkeys(("kind", "apiGroup", "name", "namespace"))
ROLE_REF: Spec = dict.fromkeys(("apiGroup", "kind", "name"))
BINDING: Spec = {"subjects": ("list", SUBJECT), "roleRef": ROLE_REF}
RBAC = "rbac.authorization.k8s.io"

KINDS: dict[tuple[str, str], Spec] = {
    ("", "ConfigMap"): dict.fromkeys(("data", "binaryData", "immutable")),
    ("", "Secret"): dict.fromkeys(("data", "stringData", "type", "immutable")),
    ("", "Namespace"): {"spec": {"finalizers": ANY}, "status": ANY},
    ("", "ServiceAccount"): dict.fromkeys(
        ("secrets", "imagePullSecrets", "automountServiceAccountToken")
    ),
    ("", "Event"): dict.fromkeys(
        (
            "involvedObject",
            "reason",
            "message",
            "source",
            "firstTimestamp",
            "lastTimestamp",
            "count",
            "type",
            "eventTime",
            "series",
            "action",
            "related",
            "reportingComponent",
            "reportingInstance",
        )
    ),
    (RBAC, "Role"): {"rules": ("list", POLICY_RULE)},
    (RBAC, "ClusterRole"): {
        "rules": ("list", POLICY_RULE),
        "aggregationRule": {"clusterRoleSelectors": ANY},
    },
    (RBAC, "RoleBinding"): BINDING,
    (RBAC, "ClusterRoleBinding"): BINDING,
    ("coordination.k8s.io", "Lease"): {
        "spec": dict.fromkeys(
            (
                "holderIdentity",
                "leaseDurationSeconds",
                "acquireTime",
                "renewTime",
                "leaseTransitions",
                "strategy",
                "preferredHolder",
            )
        )
    },
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): {"webhooks": ANY},
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): {"webhooks": ANY},
}


def _walk(spec: Spec, value: Any, path: str, found: list[str], drop: bool) -> None:
    if not isinstance(value, dict):
        return
    for key, child in list(value.items()):
        where = f"{path}.{key}" if path else key
        if key not in spec:
            found.append(where)
            if drop:
                del value[key]
            continue
        nested = spec[key]
        if isinstance(nested, dict):
            _walk(nested, child, where, found, drop)
        elif isinstance(nested, tuple) and isinstance(child, list):
            for i, item in enumerate(child):
                _walk(nested[1], item, f"{where}[{i}]", found, drop)


def unknown_fields(info: ResourceInfo, obj: dict[str, Any], drop: bool = False) -> list[str]:
    """Paths of the fields the kind's Go type lacks (removed from `obj` with `drop`, as
    decoding into the Go type loses them); empty for kinds not described here."""
    group = "" if info.group == "events.k8s.io" else info.group
    spec = KINDS.get((group, info.kind))
    if spec is None:
        return []
    found: list[str] = []
    _walk({"apiVersion": ANY, "kind": ANY, "metadata": OBJECT_META, **spec}, obj, "", found, drop)
    return found


def check(info: ResourceInfo, obj: dict[str, Any], mode: str, warnings: list[str]) -> None:
    """Apply `fieldValidation` to an object about to be stored: Strict refuses (400), Warn
    adds warnings; unknown fields are dropped in every mode but Strict."""
    unknown = unknown_fields(info, obj, drop=mode != "Strict")
    if not unknown or mode not in ("Strict", "Warn"):
        return
    listed = [f'unknown field "{p}"' for p in unknown]
    if mode == "Strict":
        raise errors.bad_request(
            f'{info.kind} in version "{info.version}" cannot be handled as a {info.kind}: '
            f"strict decoding error: {', '.join(listed)}"
        )
    warnings.extend(listed)
