"""The fields the Go types of the built-in kinds know: strict decoding for built-in objects.

Under `fieldValidation=Strict` (kubectl's default) a real API server refuses a built-in object
with a field its Go type lacks, e.g. a RoleBinding with `subject:`; under `Warn` it answers with
a warning. Custom objects are checked against their CRD schema elsewhere. Kinds not listed here
(pods, services, deployments) are not checked.
"""

from __future__ import annotations

import re
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


# metav1.MicroTime fields: Go decodes them with the layout below and nothing else, so a time
# without six fractional digits (Python's isoformat() of a whole second, say) is refused.
MICRO_TIME_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"
MICRO_TIMES: dict[tuple[str, str], tuple[tuple[str, ...], ...]] = {
    ("", "Event"): (("eventTime",), ("series", "lastObservedTime")),
    ("events.k8s.io", "Event"): (("eventTime",), ("series", "lastObservedTime")),
    ("coordination.k8s.io", "Lease"): (("spec", "acquireTime"), ("spec", "renewTime")),
}
_LAYOUT_ELEMENTS = (
    ("2006", r"\d{4}"),
    ("-", "-"),
    ("01", r"\d{2}"),
    ("-", "-"),
    ("02", r"\d{2}"),
    ("T", "T"),
    ("15", r"\d{2}"),
    (":", ":"),
    ("04", r"\d{2}"),
    (":", ":"),
    ("05", r"\d{2}"),
    (".000000", r"\.\d{6}"),
    ("Z07:00", r"(Z|[+-]\d{2}:\d{2})"),
)


def micro_time_problem(value: str) -> str | None:
    """Go's time.Parse error for `value` under MICRO_TIME_LAYOUT, or None if it parses."""
    rest = value
    for element, pattern in _LAYOUT_ELEMENTS:
        match = re.match(pattern, rest)
        if match is None:
            return (
                f'parsing time "{value}" as "{MICRO_TIME_LAYOUT}": '
                f'cannot parse "{rest}" as "{element}"'
            )
        rest = rest[match.end() :]
    if rest:
        return f'parsing time "{value}": extra text: "{rest}"'
    return None


def check_micro_times(info: ResourceInfo, obj: dict[str, Any]) -> None:
    """Refuse a built-in object whose MicroTime fields Go could not decode (400)."""
    for path in MICRO_TIMES.get((info.group, info.kind), ()):
        value: Any = obj
        for step in path:
            value = value.get(step) if isinstance(value, dict) else None
        if not isinstance(value, str):
            continue
        problem = micro_time_problem(value)
        if problem is not None:
            raise errors.bad_request(
                f'{info.kind} in version "{info.version}" cannot be handled as a {info.kind}: '
                f"{problem}"
            )
