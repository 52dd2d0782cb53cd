"""Kubernetes JSONPath, as the API server evaluates a CRD's `additionalPrinterColumns`.

Lapse's CRDs declare printer columns such as `.status.phase` or
`.status.conditions[?(@.type=="Ready")].status`; the Table the local API serves must show the
same cells a real server would, so the subset of client-go's JSONPath those columns use is
implemented here: fields, `['quoted']` fields, indexes and slices, `[*]`, `..` recursive
descent and `[?(@.a.b == "x")]` filters with comparison operators.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


class JSONPathError(ValueError):
    """An expression the parser cannot read."""


@dataclass(frozen=True)
class Step:
    kind: str  # "field", "index", "slice", "wildcard", "recursive", "filter"
    name: str = ""
    index: int = 0
    start: int | None = None
    stop: int | None = None
    subpath: tuple[Step, ...] = ()
    op: str = ""
    literal: Any = None
    exists_only: bool = False


_FILTER = re.compile(r"^\s*(@[^<>=!]*?)\s*(==|!=|<=|>=|<|>)\s*(.+?)\s*$")


@lru_cache(maxsize=1024)
def compile_path(expression: str) -> tuple[Step, ...]:
    """Parse `.a.b[0]` or `{.a.b[0]}` into steps; raises `JSONPathError`."""
    text = expression.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    if text and text[0] not in ".[":
        raise JSONPathError(f"unrecognized character in action: U+{ord(text[0]):04X} '{text[0]}'")
    return tuple(_parse(text))


def _parse(text: str) -> list[Step]:
    steps: list[Step] = []
    i = 0
    while i < len(text):
        char = text[i]
        if text.startswith("..", i):
            steps.append(Step("recursive"))
            i += 2
            continue
        if char == ".":
            match = re.match(r"[A-Za-z0-9_\-/$]*|\*", text[i + 1 :])
            name = match.group(0) if match else ""
            if name == "*":
                steps.append(Step("wildcard"))
            elif name:
                steps.append(Step("field", name=name))
            i += 1 + len(name)
            continue
        if char == "[":
            end = _closing(text, i)
            steps.append(_bracket(text[i + 1 : end]))
            i = end + 1
            continue
        raise JSONPathError(f"unrecognized character in action: U+{ord(char):04X} '{char}'")
    return steps


def _closing(text: str, start: int) -> int:
    depth = 0
    quote = ""
    for j in range(start, len(text)):
        char = text[j]
        if quote:
            if char == quote:
                quote = ""
            continue
        if char in "'\"":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth == 0:
                return j
    raise JSONPathError("unterminated array")


def _bracket(inner: str) -> Step:
    inner = inner.strip()
    if inner == "*":
        return Step("wildcard")
    if inner.startswith("?(") and inner.endswith(")"):
        return _filter(inner[2:-1])
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
        return Step("field", name=inner[1:-1])
    if ":" in inner:
        parts = inner.split(":")
        try:
            start = int(parts[0]) if parts[0].strip() else None
            stop = int(parts[1]) if len(parts) > 1 and parts[1].strip() else None
        except ValueError as exc:
            raise JSONPathError(f"invalid array index {inner}") from exc
        return Step("slice", start=start, stop=stop)
    try:
        return Step("index", index=int(inner))
    except ValueError as exc:
        raise JSONPathError(f"invalid array index {inner}") from exc


def _filter(body: str) -> Step:
    match = _FILTER.match(body)
    if not match:
        path = body.strip()
        if not path.startswith("@"):
            raise JSONPathError(f"unrecognized filter {body}")
        return Step("filter", subpath=tuple(_parse(path[1:])), exists_only=True)
    lhs, op, rhs = match.groups()
    rhs = rhs.strip()
    literal: Any
    if len(rhs) >= 2 and rhs[0] == rhs[-1] and rhs[0] in "'\"":
        literal = rhs[1:-1]
    else:
        try:
            literal = json.loads(rhs)
        except ValueError as exc:
            raise JSONPathError(f"unrecognized filter {body}") from exc
    return Step("filter", subpath=tuple(_parse(lhs[1:])), op=op, literal=literal)


def find(expression: str, obj: Any) -> list[Any]:
    """Every value the expression selects in `obj`, in document order."""
    current = [obj]
    for step in compile_path(expression):
        current = [found for value in current for found in _apply(step, value)]
    return current


def _apply(step: Step, value: Any) -> list[Any]:
    if step.kind == "field":
        return [value[step.name]] if isinstance(value, dict) and step.name in value else []
    if step.kind == "index":
        if isinstance(value, list) and -len(value) <= step.index < len(value):
            return [value[step.index]]
        return []
    if step.kind == "slice":
        return list(value[step.start : step.stop]) if isinstance(value, list) else []
    if step.kind == "wildcard":
        if isinstance(value, list):
            return list(value)
        if isinstance(value, dict):
            return [value[k] for k in sorted(value)]
        return []
    if step.kind == "recursive":
        return list(_descend(value))
    if step.kind == "filter":
        items = value if isinstance(value, list) else []
        return [item for item in items if _matches(step, item)]
    return []


def _descend(value: Any) -> list[Any]:
    found = [value]
    if isinstance(value, dict):
        for key in sorted(value):
            found.extend(_descend(value[key]))
    elif isinstance(value, list):
        for item in value:
            found.extend(_descend(item))
    return found


def _matches(step: Step, item: Any) -> bool:
    current = [item]
    for sub in step.subpath:
        current = [found for value in current for found in _apply(sub, value)]
    if step.exists_only:
        return bool(current)
    for left in current:
        right = step.literal
        try:
            if step.op == "==" and left == right:
                return True
            if step.op == "!=" and left != right:
                return True
            if step.op == "<" and left < right:
                return True
            if step.op == "<=" and left <= right:
                return True
            if step.op == ">" and left > right:
                return True
            if step.op == ">=" and left >= right:
                return True
        except TypeError:
            continue
    return False


def to_text(value: Any) -> str:
    """A selected value printed as client-go's JSONPath prints it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<nil>"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
