"""Label and field selectors, parsed once per request and matched against stored objects.

List and watch both filter with them; the grammar follows the API server's
`labels.Parse` (equality and set-based) and `fields.ParseSelector` (equality on dotted paths).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from . import errors

Predicate = Callable[[dict[str, Any]], bool]

_SET_RE = re.compile(r"^\s*([^\s!=()]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def _label_requirement(term: str) -> Predicate:
    match = _SET_RE.match(term)
    if match:
        key, op, raw = match.groups()
        values = {v.strip() for v in raw.split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: key not in labels or labels[key] not in values
    for op in ("!=", "==", "="):
        if op in term:
            key, value = (s.strip() for s in term.split(op, 1))
            if not key:
                raise errors.bad_request(f"unable to parse requirement: {term!r}")
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: key in labels and labels[key] == value
    if term.startswith("!"):
        key = term[1:].strip()
        return lambda labels: key not in labels
    if re.search(r"[\s<>]", term):
        raise errors.bad_request(f"unable to parse requirement: {term!r}")
    return lambda labels: term in labels


def label_selector(text: str | None) -> Predicate | None:
    """A predicate over whole objects, or None when the selector selects everything."""
    if not text or not text.strip():
        return None
    requirements = [_label_requirement(t) for t in _split_top(text)]

    def matches(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(r(labels) for r in requirements)

    return matches


def label_selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A `metav1.LabelSelector` object (matchLabels, matchExpressions) against labels; an empty
    or absent selector matches everything, as in Kubernetes."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or ()
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def field_value(obj: dict[str, Any], path: str) -> str:
    """A field as the API server's field sets render it: strings as they are, absent as ''."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, dict):
            return ""
        current = current.get(part)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def field_selector(
    text: str | None, supported: Callable[[str], None] | None = None
) -> Predicate | None:
    """A predicate for a field selector; `supported(label)` raises for a field the kind does
    not index, as the API server refuses selectors on arbitrary fields."""
    if not text or not text.strip():
        return None
    terms: list[tuple[str, bool, str]] = []
    for term in _split_top(text):
        for op, equal in (("!=", False), ("==", True), ("=", True)):
            if op in term:
                key, value = (s.strip() for s in term.split(op, 1))
                if supported is not None:
                    supported(key)
                terms.append((key, equal, value))
                break
        else:
            raise errors.bad_request(f"invalid selector: '{text}'; can't understand '{term}'")

    def matches(obj: dict[str, Any]) -> bool:
        return all((field_value(obj, k) == v) == eq for k, eq, v in terms)

    return matches


def combine(*predicates: Predicate | None) -> Predicate | None:
    active = [p for p in predicates if p is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]
    return lambda obj: all(p(obj) for p in active)


# Field labels each built-in kind supports beyond metadata.name and metadata.namespace.
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)
BUILTIN_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "events"): _EVENT_FIELDS,
    ("events.k8s.io", "events"): (
        "reason",
        "type",
        "reportingController",
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "regarding.apiVersion",
        "regarding.resourceVersion",
        "regarding.fieldPath",
    ),
    ("", "namespaces"): ("status.phase",),
    ("", "secrets"): ("type",),
    ("", "pods"): (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
}


def supported_fields(group: str, plural: str, crd_version: dict[str, Any] | None) -> set[str]:
    """The field labels a kind can be selected by: CRDs add their `selectableFields`."""
    fields = {"metadata.name", "metadata.namespace"}
    fields.update(BUILTIN_FIELDS.get((group, plural), ()))
    for selectable in (crd_version or {}).get("selectableFields") or ():
        fields.add(str(selectable.get("jsonPath", "")).lstrip("."))
    return fields
