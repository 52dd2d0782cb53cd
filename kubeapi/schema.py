"""Structural schemas of CustomResourceDefinitions, applied the way the API server applies them.

Lapse relies on admission-time validation of its custom resources (required fields, enums,
duration patterns, an immutable spec as a CEL rule), so the local API must prune, default and
validate custom objects with the same rules and the same error messages as
apiextensions-apiserver: unknown fields are pruned (or rejected under `fieldValidation=Strict`),
`default`s fill in missing fields wherever their parent object exists, the OpenAPI keywords
are checked with kube-openapi's messages turned into field errors, then the
`x-kubernetes-validations` rules run. `validate_crd` rejects CRDs a real server would reject.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
import re
from typing import Any

from kubeapi import cel, errors
from kubeapi.errors import Cause
from kubeapi.resources import ResourceInfo

Schema = dict[str, Any]

# ObjectMeta's fields: what survives pruning of `metadata` at the root and in embedded objects.
OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
_TYPES = ("array", "boolean", "integer", "number", "object", "string")


# --- field errors, formatted as apimachinery's field.Error -----------------------------------


def _render(value: Any) -> str:
    """A bad value as field.Error.ErrorBody prints it (strings quoted, the rest as JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _number(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


# A value kube-apiserver leaves out of the message (field.OmitValueType): "path: Invalid value: …".
OMIT_VALUE = object()


def invalid_cause(path: str, value: Any, detail: str = "") -> Cause:
    body = "Invalid value" if value is OMIT_VALUE else f"Invalid value: {_render(value)}"
    return Cause(path, f"{body}: {detail}" if detail else body, "FieldValueInvalid")


def type_invalid_cause(path: str, value: Any, detail: str) -> Cause:
    return Cause(path, f"Invalid value: {_render(value)}: {detail}", "FieldValueTypeInvalid")


def required_cause(path: str, detail: str = "") -> Cause:
    return Cause(
        path, f"Required value: {detail}" if detail else "Required value", "FieldValueRequired"
    )


def forbidden_cause(path: str, detail: str = "") -> Cause:
    return Cause(path, f"Forbidden: {detail}" if detail else "Forbidden", "FieldValueForbidden")


def not_supported_cause(path: str, value: Any, supported: list[Any]) -> Cause:
    quoted = ", ".join(
        json.dumps(v if isinstance(v, str) else _render(v), ensure_ascii=False) for v in supported
    )
    message = f"Unsupported value: {_render(value)}"
    if supported:
        message += f": supported values: {quoted}"
    return Cause(path, message, "FieldValueNotSupported")


def duplicate_cause(path: str, value: Any) -> Cause:
    body = "Duplicate value" if value is OMIT_VALUE else f"Duplicate value: {_render(value)}"
    return Cause(path, body, "FieldValueDuplicate")


def too_long_cause(path: str, max_length: int) -> Cause:
    unit = "byte" if max_length == 1 else "bytes"
    return Cause(path, f"Too long: may not be more than {max_length} {unit}", "FieldValueTooLong")


def too_many_cause(path: str, actual: int, max_items: int) -> Cause:
    unit = "item" if max_items == 1 else "items"
    return Cause(
        path, f"Too many: {actual}: must have at most {max_items} {unit}", "FieldValueTooMany"
    )


# --- helpers over schemas ---------------------------------------------------------------------


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _item_schema(schema: Schema) -> Schema | None:
    items = schema.get("items")
    return items if isinstance(items, dict) else None


def _map_schema(schema: Schema) -> Schema | None:
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _preserves(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


# --- unknown fields and pruning ---------------------------------------------------------------


def unknown_fields(schema: Schema, obj: Any) -> list[str]:
    """Paths of fields the schema does not know, as strict decoding names them."""
    found: list[str] = []
    _unknown(schema, obj, "", found, root=True)
    return found


def _unknown(schema: Schema, value: Any, path: str, found: list[str], root: bool = False) -> None:
    if isinstance(value, dict):
        embedded = root or bool(schema.get("x-kubernetes-embedded-resource"))
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, child in value.items():
            child_path = _child(path, key)
            if embedded and key in ("apiVersion", "kind"):
                continue
            if embedded and key == "metadata":
                if isinstance(child, dict):
                    found.extend(
                        _child(child_path, k) for k in child if k not in OBJECT_META_FIELDS
                    )
                continue
            if key in props:
                _unknown(props[key], child, child_path, found)
            elif isinstance(extra, dict):
                _unknown(extra, child, child_path, found)
            elif extra is True or _preserves(schema):
                continue
            else:
                found.append(child_path)
    elif isinstance(value, list):
        items = _item_schema(schema)
        if items is not None:
            for i, item in enumerate(value):
                _unknown(items, item, f"{path}[{i}]", found)


def prune(schema: Schema, value: Any, root: bool = False) -> Any:
    """Drop the fields the schema does not specify (in place), keeping what it preserves."""
    if isinstance(value, dict):
        embedded = root or bool(schema.get("x-kubernetes-embedded-resource"))
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key in list(value):
            child = value[key]
            if embedded and key in ("apiVersion", "kind"):
                continue
            if embedded and key == "metadata":
                if isinstance(child, dict):
                    for k in [k for k in child if k not in OBJECT_META_FIELDS]:
                        del child[k]
                continue
            if key in props:
                prune(props[key], child)
            elif isinstance(extra, dict):
                prune(extra, child)
            elif extra is True or _preserves(schema):
                continue
            else:
                del value[key]
    elif isinstance(value, list):
        items = _item_schema(schema)
        if items is not None:
            for item in value:
                prune(items, item)
    return value


# --- defaulting -------------------------------------------------------------------------------


def apply_defaults(schema: Schema, value: Any) -> Any:
    """Fill in `default`s where the parent object exists (in place), as the API server does.

    A null for a field that is not nullable and has a default is replaced by the default.
    """
    if isinstance(value, dict):
        for key, prop in (schema.get("properties") or {}).items():
            if "default" in prop and (
                key not in value or (value[key] is None and not prop.get("nullable"))
            ):
                value[key] = copy.deepcopy(prop["default"])
            if key in value:
                apply_defaults(prop, value[key])
        extra = _map_schema(schema)
        if extra is not None:
            props = schema.get("properties") or {}
            for key, child in value.items():
                if key not in props:
                    apply_defaults(extra, child)
    elif isinstance(value, list):
        items = _item_schema(schema)
        if items is not None:
            for i, item in enumerate(value):
                if item is None and "default" in items and not items.get("nullable"):
                    value[i] = copy.deepcopy(items["default"])
                apply_defaults(items, value[i])
    return value


# --- OpenAPI keyword validation ---------------------------------------------------------------

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DURATION = re.compile(
    r"^[-+]?((\d+(\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s|m|h|d|w|"
    r"nanoseconds?|microseconds?|milliseconds?|seconds?|minutes?|hours?|days?|weeks?)\s*)+$"
)
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_HOSTNAME = re.compile(
    r"^(?=.{1,255}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


def _valid_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def _valid_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return "/" in text


def _valid_byte(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except ValueError:
        return False
    return True


_FORMATS: dict[str, Any] = {
    "date-time": _DATE_TIME.match,
    "datetime": _DATE_TIME.match,
    "date": _DATE.match,
    "duration": _DURATION.match,
    "uuid": _UUID.match,
    "email": _EMAIL.match,
    "hostname": _HOSTNAME.match,
    "ipv4": lambda t: _valid_ip(t, 4),
    "ipv6": lambda t: _valid_ip(t, 6),
    "cidr": _valid_cidr,
    "byte": _valid_byte,
}


def _type_ok(schema: Schema, value: Any) -> tuple[bool, str]:
    """Whether `value` matches the schema's type; the second item is the JSON type seen."""
    seen = _json_type(value)
    if schema.get("x-kubernetes-int-or-string"):
        return seen in ("integer", "string") or (
            seen == "number" and float(value).is_integer()
        ), seen
    wanted = schema.get("type")
    if not wanted:
        return True, seen
    if seen == wanted:
        return True, seen
    if wanted == "integer" and seen == "number" and float(value).is_integer():
        return True, seen
    if wanted == "number" and seen == "integer":
        return True, seen
    return False, seen


def validate_value(schema: Schema, value: Any, path: str) -> list[Cause]:
    """kube-openapi's checks of one value against its structural schema, as field errors."""
    causes: list[Cause] = []
    _validate(schema, value, path, causes)
    return causes


def _validate(schema: Schema, value: Any, path: str, causes: list[Cause]) -> None:
    name = path
    if value is None:
        if schema.get("nullable") or not (
            schema.get("type") or schema.get("x-kubernetes-int-or-string")
        ):
            return
        wanted = schema.get("type") or "integer,string"
        causes.append(
            type_invalid_cause(path, "null", f'{name} in body must be of type {wanted}: "null"')
        )
        return
    ok, seen = _type_ok(schema, value)
    if not ok:
        causes.append(
            type_invalid_cause(
                path, seen, f'{name} in body must be of type {schema.get("type")}: "{seen}"'
            )
        )
        return

    if "enum" in schema and value not in schema["enum"]:
        causes.append(not_supported_cause(path, value, list(schema["enum"])))

    if isinstance(value, str):
        _validate_string(schema, value, path, causes)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _validate_number(schema, value, path, causes)
    elif isinstance(value, list):
        _validate_array(schema, value, path, causes)
    elif isinstance(value, dict):
        _validate_object(schema, value, path, causes)


def _validate_string(schema: Schema, value: str, path: str, causes: list[Cause]) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        causes.append(too_long_cause(path, int(schema["maxLength"])))
    if "minLength" in schema and len(value) < schema["minLength"]:
        causes.append(
            invalid_cause(
                path, value, f"{path} in body should be at least {schema['minLength']} chars long"
            )
        )
    pattern = schema.get("pattern")
    if pattern is not None and _regex(pattern).search(value) is None:
        causes.append(invalid_cause(path, value, f"{path} in body should match '{pattern}'"))
    fmt = schema.get("format")
    check = _FORMATS.get(fmt or "")
    if check is not None and not check(value):
        causes.append(
            type_invalid_cause(path, value, f'{path} in body must be of type {fmt}: "{value}"')
        )


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _regex(pattern: str) -> re.Pattern[str]:
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        compiled = _REGEX_CACHE[pattern] = re.compile(pattern)
    return compiled


def _validate_number(schema: Schema, value: float, path: str, causes: list[Cause]) -> None:
    if "maximum" in schema:
        limit = schema["maximum"]
        if schema.get("exclusiveMaximum") and value >= limit:
            causes.append(
                invalid_cause(path, value, f"{path} in body should be less than {_number(limit)}")
            )
        elif value > limit:
            causes.append(
                invalid_cause(
                    path,
                    value,
                    f"{path} in body should be less than or equal to {_number(limit)}",
                )
            )
    if "minimum" in schema:
        limit = schema["minimum"]
        if schema.get("exclusiveMinimum") and value <= limit:
            causes.append(
                invalid_cause(
                    path, value, f"{path} in body should be greater than {_number(limit)}"
                )
            )
        elif value < limit:
            causes.append(
                invalid_cause(
                    path,
                    value,
                    f"{path} in body should be greater than or equal to {_number(limit)}",
                )
            )
    factor = schema.get("multipleOf")
    if factor and (value / factor) != int(value / factor):
        causes.append(
            invalid_cause(path, value, f"{path} in body should be a multiple of {_number(factor)}")
        )


def _validate_array(schema: Schema, value: list[Any], path: str, causes: list[Cause]) -> None:
    items = _item_schema(schema)
    if items is not None:
        for i, item in enumerate(value):
            _validate(items, item, f"{path}[{i}]", causes)
    if "minItems" in schema and len(value) < schema["minItems"]:
        causes.append(
            invalid_cause(
                path, len(value), f"{path} in body should have at least {schema['minItems']} items"
            )
        )
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        causes.append(too_many_cause(path, len(value), int(schema["maxItems"])))
    if schema.get("uniqueItems") and _has_duplicates(value):
        causes.append(invalid_cause(path, "", f"{path} in body shouldn't contain duplicates"))
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        seen: list[Any] = []
        for i, item in enumerate(value):
            if item in seen:
                causes.append(duplicate_cause(f"{path}[{i}]", item))
            else:
                seen.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen_keys: list[dict[str, Any]] = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            key = {k: item.get(k) for k in keys if k in item}
            if key in seen_keys:
                causes.append(duplicate_cause(f"{path}[{i}]", key))
            else:
                seen_keys.append(key)


def _has_duplicates(value: list[Any]) -> bool:
    seen: list[Any] = []
    for item in value:
        if item in seen:
            return True
        seen.append(item)
    return False


def _validate_object(schema: Schema, value: dict[str, Any], path: str, causes: list[Cause]) -> None:
    for key in schema.get("required") or []:
        if key not in value:
            causes.append(required_cause(_child(path, key)))
    if schema.get("x-kubernetes-embedded-resource"):
        for key in ("apiVersion", "kind"):
            if not value.get(key):
                causes.append(required_cause(_child(path, key), "must not be empty"))
    props = schema.get("properties") or {}
    for key, prop in props.items():
        if key in value:
            _validate(prop, value[key], _child(path, key), causes)
    extra = _map_schema(schema)
    if extra is not None:
        for key, child in value.items():
            if key not in props:
                _validate(extra, child, _child(path, key), causes)
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        causes.append(
            invalid_cause(
                path,
                schema["minProperties"],
                f"{path} in body should have at least {schema['minProperties']} properties",
            )
        )
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        causes.append(
            too_many_cause(path, int(schema["maxProperties"]), int(schema["maxProperties"]))
        )


# --- x-kubernetes-validations -----------------------------------------------------------------


def _field_path(path: str) -> str:
    # The CEL validator walks with a field.Path; a nil path prints as "<nil>".
    return path or "<nil>"


def validate_rules(schema: Schema, value: Any, old: Any, path: str = "") -> list[Cause]:
    """Run every `x-kubernetes-validations` rule on the values present; `old` is None on create."""
    causes: list[Cause] = []
    _rules(schema, value, old, path, causes, has_old=old is not None)
    return causes


def _rules(
    schema: Schema, value: Any, old: Any, path: str, causes: list[Cause], has_old: bool
) -> None:
    if value is None:
        return
    rules = schema.get("x-kubernetes-validations") or []
    if rules:
        # Validation ratcheting (beta, on by default since 1.30): a rule that does not use
        # oldSelf is not run on a value the update leaves as it was.
        unchanged = has_old and value == old
        _run_rules(schema, rules, value, old, path, causes, has_old, unchanged)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, prop in props.items():
            if key in value:
                child_has_old = has_old and isinstance(old, dict) and key in old
                _rules(
                    prop,
                    value[key],
                    old.get(key) if child_has_old else None,
                    _child(path, key),
                    causes,
                    child_has_old,
                )
        extra = _map_schema(schema)
        if extra is not None:
            for key, child in value.items():
                if key in props:
                    continue
                child_has_old = has_old and isinstance(old, dict) and key in old
                _rules(
                    extra,
                    child,
                    old.get(key) if child_has_old else None,
                    f"{path}[{key}]",
                    causes,
                    child_has_old,
                )
    elif isinstance(value, list):
        items = _item_schema(schema)
        if items is None:
            return
        old_by_key = _correlate(schema, old) if has_old else {}
        keys = schema.get("x-kubernetes-list-map-keys") or []
        for i, item in enumerate(value):
            old_item = None
            if old_by_key and isinstance(item, dict):
                old_item = old_by_key.get(_map_key(item, keys))
            _rules(items, item, old_item, f"{path}[{i}]", causes, old_item is not None)


def _map_key(item: dict[str, Any], keys: list[str]) -> str:
    return json.dumps([item.get(k) for k in keys], sort_keys=True)


def _correlate(schema: Schema, old: Any) -> dict[str, Any]:
    # Only map lists correlate old and new items; sets and atomic lists do not.
    if schema.get("x-kubernetes-list-type") != "map" or not isinstance(old, list):
        return {}
    keys = schema.get("x-kubernetes-list-map-keys") or []
    return {_map_key(item, keys): item for item in old if isinstance(item, dict)}


def _run_rules(
    schema: Schema,
    rules: list[dict[str, Any]],
    value: Any,
    old: Any,
    path: str,
    causes: list[Cause],
    has_old: bool,
    unchanged: bool = False,
) -> None:
    type_name = schema.get("type") or ("object" if isinstance(value, dict) else _json_type(value))
    activation: dict[str, Any] | None = None
    for rule in rules:
        text = str(rule.get("rule", ""))
        transition = cel.references_old_self(text)
        if transition and not has_old:
            continue
        if unchanged and not transition:
            continue
        if activation is None:
            activation = {"self": cel.to_cel(value, schema)}
        if transition and "oldSelf" not in activation:
            activation["oldSelf"] = cel.to_cel(old, schema)
        where = path
        if rule.get("fieldPath"):
            where = path + str(rule["fieldPath"])
        try:
            result = cel.evaluate(text, activation)
        except cel.CompileError as exc:
            causes.append(invalid_cause(_field_path(where), type_name, str(exc)))
            continue
        except cel.EvalError as exc:
            causes.append(invalid_cause(_field_path(where), type_name, str(exc)))
            continue
        if result is True or (hasattr(result, "__bool__") and bool(result) is True):
            continue
        message = _rule_message(rule, activation)
        reason = rule.get("reason") or "FieldValueInvalid"
        field = _field_path(where)
        # A failed rule names a scalar's own value and leaves an object's or array's out.
        shown = OMIT_VALUE if type_name in ("object", "array") else value
        if reason == "FieldValueForbidden":
            causes.append(forbidden_cause(field, message))
        elif reason == "FieldValueRequired":
            causes.append(required_cause(field, message))
        elif reason == "FieldValueDuplicate":
            causes.append(duplicate_cause(field, shown))
        else:
            causes.append(invalid_cause(field, shown, message))


def _rule_message(rule: dict[str, Any], activation: dict[str, Any]) -> str:
    expression = rule.get("messageExpression")
    if expression:
        try:
            produced = cel.evaluate(str(expression), activation)
        except (cel.CompileError, cel.EvalError):
            produced = None
        if isinstance(produced, str) and produced.strip() and "\n" not in produced:
            return produced.strip()
    if rule.get("message"):
        return str(rule["message"]).strip()
    return f"failed rule: {str(rule.get('rule', '')).strip()}"


# --- admission of custom objects --------------------------------------------------------------


def admit(
    info: ResourceInfo,
    obj: dict[str, Any],
    old: dict[str, Any] | None,
    subresource: str = "",
    *,
    field_validation: str = "Ignore",
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """Prune, default and validate a custom object being created (old None) or updated.

    Returns the object to store. Raises 400 for unknown fields under `fieldValidation=Strict`
    (appending `unknown field "..."` to `warnings` under `Warn`), and 422 with the API
    server's field errors when the object breaks its schema or a CEL rule.
    """
    schema = info.schema
    if not schema:
        return obj
    if field_validation in ("Strict", "Warn"):
        unknown = unknown_fields(schema, obj)
        if unknown and field_validation == "Strict":
            listed = ", ".join(f'unknown field "{p}"' for p in unknown)
            raise errors.bad_request(
                f'{info.kind} in version "{info.version}" cannot be handled as a {info.kind}: '
                f"strict decoding error: {listed}"
            )
        if unknown and warnings is not None:
            warnings.extend(f'unknown field "{p}"' for p in unknown)
    new = prune(schema, copy.deepcopy(obj), root=True)
    apply_defaults(schema, new)
    causes = validate_value(_without_meta(schema), new, "")
    if any(c.reason in _BLOCKING for c in causes):
        causes.append(
            invalid_cause(
                "<nil>",
                None,
                "some validation rules were not checked because the object was invalid; "
                "correct the existing errors to complete validation",
            )
        )
    else:
        causes.extend(validate_rules(schema, new, old))
    if causes:
        name = str((new.get("metadata") or {}).get("name") or "")
        raise errors.invalid(info.kind, info.group, name, causes)
    return new


# Schema errors after which the API server does not run CEL rules (apiextensions'
# hasBlockingErr): the rules could not be evaluated meaningfully.
_BLOCKING = frozenset(
    {
        "FieldValueNotSupported",
        "FieldValueRequired",
        "FieldValueTooLong",
        "FieldValueTooMany",
        "FieldValueTypeInvalid",
    }
)


def _without_meta(schema: Schema) -> Schema:
    # apiVersion, kind and metadata at the root are the API machinery's, not the schema's.
    props = schema.get("properties")
    if not props or not any(k in props for k in ("apiVersion", "kind", "metadata")):
        return schema
    trimmed = dict(schema)
    trimmed["properties"] = {
        k: v for k, v in props.items() if k not in ("apiVersion", "kind", "metadata")
    }
    return trimmed


# --- CRD validation ---------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def validate_crd(crd: dict[str, Any]) -> None:
    """Reject a CustomResourceDefinition the API server would reject (422 Invalid)."""
    name = str((crd.get("metadata") or {}).get("name") or "")
    spec = crd.get("spec") or {}
    causes: list[Cause] = []
    group = spec.get("group") or ""
    names = spec.get("names") or {}
    plural = names.get("plural") or ""

    if not group:
        causes.append(required_cause("spec.group"))
    elif "." not in group:
        causes.append(
            invalid_cause("spec.group", group, "should be a domain with at least one dot")
        )
    if plural and group and name != f"{plural}.{group}":
        causes.append(
            invalid_cause("metadata.name", name, 'must be spec.names.plural+"."+spec.group')
        )
    scope = spec.get("scope")
    if not scope:
        causes.append(required_cause("spec.scope"))
    elif scope not in ("Cluster", "Namespaced"):
        causes.append(not_supported_cause("spec.scope", scope, ["Cluster", "Namespaced"]))
    causes.extend(_validate_names(names))
    causes.extend(_validate_versions(spec.get("versions") or []))
    if causes:
        raise errors.invalid("CustomResourceDefinition", "apiextensions.k8s.io", name, causes)


def _validate_names(names: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    label_detail = (
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
        "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
        "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    )
    for field in ("plural", "singular"):
        value = names.get(field)
        if field == "plural" and not value:
            causes.append(required_cause("spec.names.plural"))
        elif value and not _DNS_LABEL.match(value):
            causes.append(invalid_cause(f"spec.names.{field}", value, label_detail))
    kind = names.get("kind")
    if not kind:
        causes.append(required_cause("spec.names.kind"))
    list_kind = names.get("listKind")
    if kind and list_kind and list_kind == kind:
        causes.append(
            invalid_cause("spec.names.listKind", list_kind, "kind and listKind may not be the same")
        )
    for i, short in enumerate(names.get("shortNames") or []):
        if not _DNS_LABEL.match(str(short)):
            causes.append(invalid_cause(f"spec.names.shortNames[{i}]", short, label_detail))
    return causes


def _validate_versions(versions: list[dict[str, Any]]) -> list[Cause]:
    causes: list[Cause] = []
    if not versions:
        return [
            required_cause(
                "spec.versions", "must have exactly one version marked as storage version"
            )
        ]
    storage = sum(1 for v in versions if v.get("storage"))
    if storage != 1:
        causes.append(
            invalid_cause(
                "spec.versions", versions, "must have exactly one version marked as storage version"
            )
        )
    seen: set[str] = set()
    for i, version in enumerate(versions):
        path = f"spec.versions[{i}]"
        vname = version.get("name") or ""
        if not vname:
            causes.append(required_cause(f"{path}.name"))
        elif vname in seen:
            causes.append(duplicate_cause(f"{path}.name", vname))
        seen.add(vname)
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        schema_path = f"{path}.schema.openAPIV3Schema"
        if schema is None:
            causes.append(required_cause(schema_path, "schemas are required"))
        else:
            if schema.get("type") != "object":
                if schema.get("type"):
                    causes.append(
                        invalid_cause(
                            f"{schema_path}.type", schema["type"], "must be object at the root"
                        )
                    )
                else:
                    causes.append(
                        required_cause(f"{schema_path}.type", "must not be empty at the root")
                    )
            causes.extend(_structural(schema, schema_path, "root"))
            causes.extend(_root_metadata(schema))
        causes.extend(_validate_columns(version.get("additionalPrinterColumns") or [], path))
    return causes


def _root_metadata(schema: Schema) -> list[Cause]:
    """The API server owns ObjectMeta's schema: at the root, `metadata` may say only that it is
    an object (and constrain name and generateName); a description is refused too. The message
    names the legacy `spec.validation` path, as kube-apiserver v1.36 does."""
    metadata = (schema.get("properties") or {}).get("metadata")
    if not isinstance(metadata, dict):
        return []
    extra = {k for k in metadata if k != "type"}
    props = metadata.get("properties")
    if isinstance(props, dict) and set(props) <= {"name", "generateName"}:
        extra.discard("properties")
    if not extra:
        return []
    return [
        forbidden_cause(
            "spec.validation.openAPIV3Schema.properties[metadata]",
            "must not specify anything other than name and generateName, "
            "but metadata is implicitly specified",
        )
    ]


def _structural(schema: Schema, path: str, where: str) -> list[Cause]:
    """The structural-schema rules of apiextensions (a subset), plus CEL compilation."""
    causes: list[Cause] = []
    stype = schema.get("type")
    if stype and stype not in _TYPES:
        causes.append(not_supported_cause(f"{path}.type", stype, list(_TYPES)))
    if (
        not stype
        and where != "root"
        and not schema.get("x-kubernetes-int-or-string")
        and not _preserves(schema)
    ):
        causes.append(required_cause(f"{path}.type", f"must not be empty for specified {where}"))
    if stype == "array" and not isinstance(schema.get("items"), dict):
        causes.append(required_cause(f"{path}.items", "must be specified"))
    if schema.get("uniqueItems"):
        causes.append(
            forbidden_cause(
                f"{path}.uniqueItems",
                "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
            )
        )
    if schema.get("properties") and "additionalProperties" in schema:
        causes.append(
            forbidden_cause(
                f"{path}.additionalProperties",
                "additionalProperties and properties are mutual exclusive",
            )
        )
    for key in ("$ref", "allOf", "anyOf", "oneOf", "not"):
        if key == "$ref" and key in schema:
            causes.append(
                forbidden_cause(f"{path}.$ref", "$ref is forbidden in structural schemas")
            )
    for i, rule in enumerate(schema.get("x-kubernetes-validations") or []):
        causes.extend(_check_rule(rule, f"{path}.x-kubernetes-validations[{i}]"))
    for key, prop in (schema.get("properties") or {}).items():
        if isinstance(prop, dict):
            causes.extend(_structural(prop, f"{path}.properties[{key}]", "object fields"))
    items = schema.get("items")
    if isinstance(items, dict):
        causes.extend(_structural(items, f"{path}.items", "array items"))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        causes.extend(_structural(extra, f"{path}.additionalProperties", "object fields"))
    return causes


def _rule_value(rule: dict[str, Any]) -> dict[str, Any]:
    # The internal apiextensions.ValidationRule, as the API server renders it in the error.
    return {
        "Rule": rule.get("rule", ""),
        "Message": rule.get("message", ""),
        "MessageExpression": rule.get("messageExpression", ""),
        "Reason": rule.get("reason"),
        "FieldPath": rule.get("fieldPath", ""),
        "OptionalOldSelf": rule.get("optionalOldSelf"),
    }


def _check_rule(rule: dict[str, Any], path: str) -> list[Cause]:
    text = rule.get("rule")
    if not text:
        return [required_cause(f"{path}.rule")]
    causes: list[Cause] = []
    try:
        cel.compile_rule(str(text))
    except cel.CompileError as exc:
        causes.append(invalid_cause(f"{path}.rule", _rule_value(rule), str(exc)))
    expression = rule.get("messageExpression")
    if expression:
        try:
            cel.compile_rule(str(expression))
        except cel.CompileError as exc:
            causes.append(
                invalid_cause(f"{path}.messageExpression", _rule_value(rule), f"message{exc}")
            )
    reason = rule.get("reason")
    allowed = [
        "FieldValueInvalid",
        "FieldValueForbidden",
        "FieldValueRequired",
        "FieldValueDuplicate",
    ]
    if reason and reason not in allowed:
        causes.append(not_supported_cause(f"{path}.reason", reason, allowed))
    return causes


def _validate_columns(columns: list[dict[str, Any]], path: str) -> list[Cause]:
    from kubeapi import jsonpath  # printer columns share the table's JSONPath parser

    causes: list[Cause] = []
    allowed = ["integer", "number", "string", "boolean", "date"]
    for i, column in enumerate(columns):
        cpath = f"{path}.additionalPrinterColumns[{i}]"
        if not column.get("name"):
            causes.append(required_cause(f"{cpath}.name"))
        ctype = column.get("type")
        if not ctype:
            causes.append(required_cause(f"{cpath}.type"))
        elif ctype not in allowed:
            causes.append(not_supported_cause(f"{cpath}.type", ctype, allowed))
        expression = column.get("jsonPath")
        if not expression:
            causes.append(required_cause(f"{cpath}.JSONPath"))
        else:
            try:
                jsonpath.compile_path(str(expression))
            except jsonpath.JSONPathError as exc:
                causes.append(invalid_cause(f"{cpath}.JSONPath", expression, str(exc)))
    return causes
