"""The three PATCH formats of the API server: JSON merge patch, JSON patch, strategic merge.

Strategic merge patch needs each list's merge key, which the real server takes from the Go
types; here a table names the lists of the built-in kinds that kubectl patches. Lists not in
the table are replaced, as for fields without a patch strategy.
"""

from __future__ import annotations

import copy
from typing import Any

from . import errors

# Dotted paths (list indices elided) of lists merged by key; None: a set of primitives.
MERGE_KEYS: dict[str, str | None] = {
    "metadata.finalizers": None,
    "metadata.ownerReferences": "uid",
    "spec.containers": "name",
    "spec.initContainers": "name",
    "spec.containers.env": "name",
    "spec.initContainers.env": "name",
    "spec.containers.ports": "containerPort",
    "spec.containers.volumeMounts": "mountPath",
    "spec.volumes": "name",
    "spec.imagePullSecrets": "name",
    "spec.template.spec.containers": "name",
    "spec.template.spec.initContainers": "name",
    "spec.template.spec.containers.env": "name",
    "spec.template.spec.containers.ports": "containerPort",
    "spec.template.spec.containers.volumeMounts": "mountPath",
    "spec.template.spec.volumes": "name",
    "spec.template.spec.imagePullSecrets": "name",
    "spec.ports": "port",
    "status.conditions": "type",
    "secrets": "name",
    "imagePullSecrets": "name",
    # Mutating and validating webhook configurations: `kubectl apply` of a changed webhook
    # sends only what changed in it, keyed by name.
    "webhooks": "name",
}


def _invalid(message: str) -> errors.ApiError:
    return errors.ApiError(422, "Invalid", message)


# -- JSON merge patch (RFC 7386) ----------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# -- JSON patch (RFC 6902) ----------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _invalid(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], path: str) -> Any:
    current = doc
    for part in parts:
        if isinstance(current, dict):
            if part not in current:
                raise _invalid(f"jsonpatch: path {path!r} not found: missing key {part!r}")
            current = current[part]
        elif isinstance(current, list):
            index = _index(part, len(current) - 1, path)
            current = current[index]
        else:
            raise _invalid(f"jsonpatch: path {path!r} not found")
    return current


def _index(part: str, upper: int, path: str) -> int:
    try:
        index = int(part)
    except ValueError:
        raise _invalid(f"jsonpatch: invalid array index {part!r} in {path!r}") from None
    if index < 0 or index > upper:
        raise _invalid(f"jsonpatch: array index out of bounds in {path!r}")
    return index


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            parent.insert(_index(last, len(parent), path), value)
    else:
        raise _invalid(f"jsonpatch add operation does not apply: doc is missing path: {path!r}")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    parts = _pointer(path)
    if not parts:
        raise _invalid("jsonpatch: cannot remove the whole document")
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _invalid(f"jsonpatch remove operation does not apply: doc is missing key: {path}")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(last, len(parent) - 1, path))
    raise _invalid(f"jsonpatch remove operation does not apply: doc is missing path: {path}")


def json_patch(doc: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise errors.bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise _invalid(f"jsonpatch: invalid operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            doc, _ = _remove(doc, path) if _pointer(path) else (doc, None)
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            doc, value = _remove(doc, op.get("from", ""))
            doc = _add(doc, path, value)
        elif kind == "copy":
            value = copy.deepcopy(_walk(doc, _pointer(op.get("from", "")), op.get("from", "")))
            doc = _add(doc, path, value)
        elif kind == "test":
            try:
                actual = _walk(doc, _pointer(path), path)
            except errors.ApiError:
                actual = None
            if actual != op.get("value"):
                raise _invalid(
                    f"the server rejected our request due to an error in our request: "
                    f"testing value {path} failed"
                )
        else:
            raise _invalid(f"jsonpatch: unexpected operation {kind!r}")
    return doc


# -- strategic merge patch ----------------------------------------------------------------------


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    return _smp(copy.deepcopy(target), patch, "")


def _smp(target: Any, patch: Any, path: str) -> Any:
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(_strip_directives(patch))
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives({k: v for k, v in patch.items() if k != "$patch"})
    if directive == "delete":
        return None
    retain = patch.get("$retainKeys")
    result = dict(target)
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [x for x in result[field] if x not in value]
            continue
        if key.startswith("$"):
            continue
        child = f"{path}.{key}" if path else key
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and child in MERGE_KEYS:
            result[key] = _merge_list(result.get(key) or [], value, MERGE_KEYS[child], child)
        elif isinstance(value, dict):
            merged = _smp(
                result.get(key) if isinstance(result.get(key), dict) else {}, value, child
            )
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(_strip_directives(value))
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _reorder(
                result[field], order, MERGE_KEYS.get(f"{path}.{field}" if path else field)
            )
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(current: list[Any], patch: list[Any], key: str | None, path: str) -> list[Any]:
    if key is None:
        merged = list(current)
        for item in patch:
            if item not in merged:
                merged.append(item)
        return _server_order(merged, patch, current, None)
    merged = [copy.deepcopy(x) for x in current]
    for item in patch:
        if not isinstance(item, dict):
            continue
        if item.get("$patch") == "replace":
            return [_strip_directives(x) for x in patch if x.get("$patch") != "replace"]
        position = next(
            (
                i
                for i, x in enumerate(merged)
                if isinstance(x, dict) and x.get(key) == item.get(key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if position is not None:
                merged.pop(position)
            continue
        if position is None:
            merged.append(_strip_directives(item))
        else:
            merged[position] = _smp(merged[position], item, path)
    return _server_order(merged, patch, current, key)


def _server_order(
    merged: list[Any], patch: list[Any], original: list[Any], key: str | None
) -> list[Any]:
    """kube-apiserver's order for a merged list (strategicpatch.normalizeElementOrder): the
    patch's items in the patch's order and the others in the stored order, interleaved where
    the stored order knows both — so an item the patch adds comes first, not last."""

    def ident(x: Any) -> Any:
        return x.get(key) if key and isinstance(x, dict) else x

    def position(order: list[Any], x: Any) -> int:
        wanted = ident(x)
        return next((i for i, o in enumerate(order) if ident(o) == wanted), -1)

    patched = [p for p in patch if not (isinstance(p, dict) and p.get("$patch"))]
    mine = sorted(
        (x for x in merged if position(patched, x) >= 0), key=lambda x: position(patched, x)
    )
    theirs = [x for x in merged if position(patched, x) < 0]
    ordered: list[Any] = []
    i = j = 0
    while i < len(theirs) or j < len(mine):
        if j >= len(mine):
            ordered.append(theirs[i])
            i += 1
        elif i >= len(theirs):
            ordered.append(mine[j])
            j += 1
        else:
            left, right = position(original, theirs[i]), position(original, mine[j])
            if 0 <= left < right:
                ordered.append(theirs[i])
                i += 1
            else:
                ordered.append(mine[j])
                j += 1
    return ordered


def _reorder(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def ident(x: Any) -> Any:
        return x.get(key) if key and isinstance(x, dict) else x

    wanted = [ident(o) for o in order]
    ranked = [x for w in wanted for x in items if ident(x) == w]
    rest = [x for x in items if ident(x) not in wanted]
    return ranked + rest


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not (isinstance(k, str) and k.startswith("$"))
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value
