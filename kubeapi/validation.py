"""Built-in validation the real API server does before storing: object names, RBAC shapes.

Custom objects are validated against their CRD's schema elsewhere; this covers what the Go
types' validation would reject for the built-in kinds Lapse relies on.
"""

from __future__ import annotations

import re
from typing import Any

from . import endpoints, errors
from .errors import Cause
from .resources import ResourceInfo

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
RBAC = "rbac.authorization.k8s.io"


def _name_errors(info: ResourceInfo, name: str) -> list[str]:
    if info.group == RBAC:
        # RBAC names are path segments: `system:aggregate-to-edit` is fine.
        if name in (".", ".."):
            return [f"may not be '{name}'"]
        bad = [c for c in ("/", "%") if c in name]
        return [f"may not contain '{c}'" for c in bad]
    if info.group == "" and info.plural in ("namespaces", "services"):
        if len(name) > 63:
            return ["must be no more than 63 characters"]
        if not _LABEL.match(name):
            return [
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
                "or '-', and must start and end with an alphanumeric character (e.g. 'my-name',"
                "  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            ]
        return []
    problems = []
    if len(name) > 253:
        problems.append("must be no more than 253 characters")
    if not _SUBDOMAIN.match(name):
        problems.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character (e.g. "
            "'example.com', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    return problems


def check_name(info: ResourceInfo, name: str, generated: bool = False) -> None:
    problems = _name_errors(info, name)
    if problems:
        field = "metadata.generateName" if generated else "metadata.name"
        causes = [Cause(field, f'Invalid value: "{name}": {p}') for p in problems]
        raise errors.invalid(info.kind, info.group, name, causes)


def _subject_causes(subjects: Any, cluster: bool) -> list[Cause]:
    causes: list[Cause] = []
    for i, subject in enumerate(subjects or ()):
        where = f"subjects[{i}]"
        kind = subject.get("kind", "")
        if not subject.get("name"):
            causes.append(Cause(f"{where}.name", "Required value", "FieldValueRequired"))
        if kind == "ServiceAccount":
            if subject.get("apiGroup"):
                causes.append(
                    Cause(
                        f"{where}.apiGroup",
                        f'Unsupported value: "{subject["apiGroup"]}": supported values: ""',
                        "FieldValueNotSupported",
                    )
                )
            if cluster and not subject.get("namespace"):
                causes.append(Cause(f"{where}.namespace", "Required value", "FieldValueRequired"))
        elif kind in ("User", "Group"):
            if subject.get("apiGroup") != RBAC:
                causes.append(
                    Cause(
                        f"{where}.apiGroup",
                        f'Unsupported value: "{subject.get("apiGroup", "")}"'
                        f': supported values: "{RBAC}"',
                        "FieldValueNotSupported",
                    )
                )
        else:
            causes.append(
                Cause(
                    f"{where}.kind",
                    f'Unsupported value: "{kind}": supported values: '
                    '"ServiceAccount", "User", "Group"',
                    "FieldValueNotSupported",
                )
            )
    return causes


def _rules_causes(rules: Any, cluster: bool) -> list[Cause]:
    causes: list[Cause] = []
    for i, rule in enumerate(rules or ()):
        where = f"rules[{i}]"
        if not rule.get("verbs"):
            causes.append(
                Cause(
                    f"{where}.verbs",
                    "Required value: verbs must contain at least one value",
                    "FieldValueRequired",
                )
            )
        if rule.get("nonResourceURLs"):
            if not cluster:
                causes.append(
                    Cause(
                        f"{where}.nonResourceURLs",
                        "Invalid value: namespaced rules cannot apply to non-resource URLs",
                    )
                )
        elif not rule.get("resources"):
            causes.append(
                Cause(
                    f"{where}.resources",
                    "Required value: resource rules must supply at least one resource",
                    "FieldValueRequired",
                )
            )
        elif "apiGroups" not in rule:
            causes.append(
                Cause(
                    f"{where}.apiGroups",
                    "Required value: resource rules must supply at least one api group",
                    "FieldValueRequired",
                )
            )
    return causes


_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_NAME_PART = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_LABEL_VALUE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


def _key_problems(key: str) -> list[str]:
    prefix, _, name = key.rpartition("/")
    problems = []
    if "/" in prefix:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character, with an optional "
            "DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        problems.append("prefix part must be a lowercase RFC 1123 subdomain")
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > 63:
        problems.append("name part must be no more than 63 characters")
    elif not _QUALIFIED_NAME.match(name):
        problems.append(_NAME_PART)
    return problems


def check_metadata(info: ResourceInfo, obj: dict[str, Any]) -> None:
    """ObjectMeta validation shared by every kind: labels, annotations, owner references."""
    meta = obj.get("metadata") or {}
    causes: list[Cause] = []
    for key, value in (meta.get("labels") or {}).items():
        causes += [
            Cause("metadata.labels", f'Invalid value: "{key}": {p}') for p in _key_problems(key)
        ]
        if not isinstance(value, str):
            causes.append(Cause(f"metadata.labels[{key}]", "Invalid value: must be a string"))
        elif len(value) > 63:
            causes.append(
                Cause(
                    "metadata.labels",
                    f'Invalid value: "{value}": must be no more than 63 characters',
                )
            )
        elif value and not _QUALIFIED_NAME.match(value):
            causes.append(Cause("metadata.labels", f'Invalid value: "{value}": {_LABEL_VALUE}'))
    annotations = meta.get("annotations") or {}
    for key, value in annotations.items():
        causes += [
            Cause("metadata.annotations", f'Invalid value: "{key}": {p}')
            for p in _key_problems(key)
        ]
        if not isinstance(value, str):
            causes.append(Cause(f"metadata.annotations[{key}]", "Invalid value: must be a string"))
    size = sum(len(k) + len(v) for k, v in annotations.items() if isinstance(v, str))
    if size > 256 * 1024:
        causes.append(
            Cause(
                "metadata.annotations",
                f"Too long: must have at most {256 * 1024} bytes",
                "FieldValueTooLong",
            )
        )
    controllers = 0
    for i, ref in enumerate(meta.get("ownerReferences") or ()):
        where = f"metadata.ownerReferences[{i}]"
        for field in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(field):
                causes.append(
                    Cause(f"{where}.{field}", f'Invalid value: "": {field} must not be empty')
                )
        controllers += bool(ref.get("controller"))
    if controllers > 1:
        causes.append(
            Cause(
                "metadata.ownerReferences",
                "Invalid value: only one reference can have Controller set to true",
            )
        )
    if causes:
        raise errors.invalid(info.kind, info.group, meta.get("name", ""), causes)


SA_TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"


def _secret_causes(obj: dict[str, Any]) -> list[Cause]:
    """A service account token Secret must name its ServiceAccount."""
    if obj.get("type") != SA_TOKEN_TYPE:
        return []
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if annotations.get(SA_NAME_ANNOTATION):
        return []
    return [
        Cause(f"metadata.annotations[{SA_NAME_ANNOTATION}]", "Required value", "FieldValueRequired")
    ]


def _webhook_causes(obj: dict[str, Any]) -> list[Cause]:
    """A webhook's name is a qualified domain of at least three labels (`x.example.com`)."""
    causes = []
    for index, hook in enumerate(obj.get("webhooks") or ()):
        name = str((hook or {}).get("name") or "")
        labels = name.split(".")
        # Names that are no DNS subdomain at all get another message there, not mirrored.
        if len(labels) < 3:
            causes.append(
                Cause(
                    f"webhooks[{index}].name",
                    f'Invalid value: "{name}": should be a domain with at least three segments '
                    "separated by dots",
                )
            )
    return causes


def check_builtin(info: ResourceInfo, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Raise 422 for a built-in object the real API server would refuse."""
    causes: list[Cause] = []
    if info.group == "admissionregistration.k8s.io" and info.plural.endswith(
        "webhookconfigurations"
    ):
        causes += _webhook_causes(obj)
    if info.group == RBAC:
        cluster = not info.namespaced
        if info.kind in ("RoleBinding", "ClusterRoleBinding"):
            ref = obj.get("roleRef") or {}
            if not ref.get("name"):
                causes.append(Cause("roleRef.name", "Required value", "FieldValueRequired"))
            allowed = ("ClusterRole",) if cluster else ("Role", "ClusterRole")
            if ref.get("kind") not in allowed:
                causes.append(
                    Cause(
                        "roleRef.kind",
                        f'Unsupported value: "{ref.get("kind", "")}": supported '
                        f"values: {', '.join(repr(a).replace(chr(39), chr(34)) for a in allowed)}",
                        "FieldValueNotSupported",
                    )
                )
            if ref.get("apiGroup") != RBAC:
                causes.append(
                    Cause(
                        "roleRef.apiGroup",
                        f'Unsupported value: "{ref.get("apiGroup", "")}": '
                        f'supported values: "{RBAC}"',
                        "FieldValueNotSupported",
                    )
                )
            if old is not None and old.get("roleRef") != obj.get("roleRef"):
                causes.append(Cause("roleRef", "Invalid value: cannot change roleRef"))
            causes += _subject_causes(obj.get("subjects"), cluster)
        else:
            causes += _rules_causes(obj.get("rules"), cluster)
    if (
        info.group == ""
        and info.plural in ("configmaps", "secrets")
        and old is not None
        and old.get("immutable")
    ):
        for field in ("data", "binaryData", "immutable"):
            if (obj.get(field) or None) != (old.get(field) or None):
                causes.append(
                    Cause(
                        field,
                        "Forbidden: field is immutable when `immutable` is set",
                        "FieldValueForbidden",
                    )
                )
    if info.group == RBAC:
        pass
    elif info.group == "" and info.plural == "configmaps":
        for key in list(obj.get("data") or {}) + list(obj.get("binaryData") or {}):
            if not re.fullmatch(r"[-._a-zA-Z0-9]+", key):
                causes.append(
                    Cause(
                        f"data[{key}]",
                        f'Invalid value: "{key}": a valid config key '
                        "must consist of alphanumeric characters, '-', '_' or '.'",
                    )
                )
    elif info.group == "" and info.plural == "secrets":
        causes += _secret_causes(obj)
    elif info.group == "" and info.plural == "endpoints":
        causes += endpoints.endpoints_causes(obj)
    elif info.group == endpoints.DISCOVERY and info.plural == "endpointslices":
        causes += endpoints.slice_causes(obj)
    elif info.group == "coordination.k8s.io" and info.plural == "leases":
        duration = (obj.get("spec") or {}).get("leaseDurationSeconds")
        if duration is not None and duration <= 0:
            causes.append(
                Cause(
                    "spec.leaseDurationSeconds",
                    f"Invalid value: {duration}: must be greater than 0",
                )
            )
    if causes:
        raise errors.invalid(info.kind, info.group, obj["metadata"].get("name", ""), causes)
