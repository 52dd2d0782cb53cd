"""CEL for `x-kubernetes-validations`, evaluated the way the Kubernetes API server does.

Lapse's CRDs carry CEL rules (an immutable spec, durations within bounds); the local API must
accept and reject the same objects as a real cluster with the same messages. This module wraps
cel-python: it compiles each rule once (programs are cached by rule text, so a busy server pays
only for evaluation), adds the Kubernetes CEL library functions Lapse and common CRDs use, turns
JSON values into CEL values following the schema (`format: date-time` becomes a timestamp,
`format: duration` a duration, as in Kubernetes) and maps evaluation errors to the messages of
the real API server.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

import celpy
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

Schema = dict[str, Any]

_ENV = celpy.Environment()


class CompileError(Exception):
    """A rule that does not compile; the message is shaped like cel-go's."""


class EvalError(Exception):
    """A rule whose evaluation failed; the message is the API server's detail text."""


def _go_duration(text: str) -> celtypes.DurationType:
    return celtypes.DurationType(_parse_go_duration(text))


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def _parse_go_duration(text: str) -> str:
    """Go's time.ParseDuration (which Kubernetes CEL's duration() uses), as seconds text."""
    body = str(text)
    sign = 1
    if body[:1] in "+-":
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return "0s"
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(body):
        raise ValueError(f'time: invalid duration "{text}"')
    return f"{sign * total:.9f}".rstrip("0").rstrip(".") + "s"


def _duration(value: Any) -> Any:
    if isinstance(value, celtypes.DurationType):
        return value
    try:
        return _go_duration(str(value))
    except ValueError as exc:
        return CELEvalError(str(exc), ValueError, None)


def _lower_ascii(value: Any) -> celtypes.StringType:
    return celtypes.StringType(str(value).lower())


def _upper_ascii(value: Any) -> celtypes.StringType:
    return celtypes.StringType(str(value).upper())


def _trim(value: Any) -> celtypes.StringType:
    return celtypes.StringType(str(value).strip())


def _split(value: Any, sep: Any, limit: Any = None) -> celtypes.ListType:
    parts = str(value).split(str(sep)) if limit is None else str(value).split(str(sep), limit - 1)
    return celtypes.ListType([celtypes.StringType(p) for p in parts])


def _join(value: Any, sep: Any = "") -> celtypes.StringType:
    return celtypes.StringType(str(sep).join(str(v) for v in value))


def _replace(value: Any, old: Any, new: Any, count: Any = -1) -> celtypes.StringType:
    return celtypes.StringType(str(value).replace(str(old), str(new), int(count)))


def _substring(value: Any, start: Any, end: Any = None) -> celtypes.StringType:
    text = str(value)
    return celtypes.StringType(text[int(start) :] if end is None else text[int(start) : int(end)])


def _index_of(value: Any, item: Any) -> celtypes.IntType:
    if isinstance(value, celtypes.StringType):
        return celtypes.IntType(str(value).find(str(item)))
    for i, candidate in enumerate(value):
        if candidate == item:
            return celtypes.IntType(i)
    return celtypes.IntType(-1)


def _last_index_of(value: Any, item: Any) -> celtypes.IntType:
    if isinstance(value, celtypes.StringType):
        return celtypes.IntType(str(value).rfind(str(item)))
    for i in range(len(value) - 1, -1, -1):
        if value[i] == item:
            return celtypes.IntType(i)
    return celtypes.IntType(-1)


def _find(value: Any, pattern: Any) -> celtypes.StringType:
    match = re.search(str(pattern), str(value))
    return celtypes.StringType(match.group(0) if match else "")


def _find_all(value: Any, pattern: Any, limit: Any = -1) -> celtypes.ListType:
    found = [m.group(0) for m in re.finditer(str(pattern), str(value))]
    if int(limit) >= 0:
        found = found[: int(limit)]
    return celtypes.ListType([celtypes.StringType(f) for f in found])


def _is_sorted(value: Any) -> celtypes.BoolType:
    items = list(value)
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(items)))


def _sum(value: Any) -> Any:
    items = list(value)
    if not items:
        return celtypes.IntType(0)
    total = items[0]
    for item in items[1:]:
        total = total + item
    return total


def _min(value: Any) -> Any:
    return min(value)


def _max(value: Any) -> Any:
    return max(value)


def _is_url(value: Any) -> celtypes.BoolType:
    parsed = urlparse(str(value))
    return celtypes.BoolType(bool(parsed.scheme) and (bool(parsed.netloc) or bool(parsed.path)))


_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$")


def _is_quantity(value: Any) -> celtypes.BoolType:
    return celtypes.BoolType(bool(_QUANTITY.match(str(value))))


def _is_duration(value: Any) -> celtypes.BoolType:
    try:
        _parse_go_duration(str(value))
    except ValueError:
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


# Kubernetes' CEL libraries (strings, lists, regex, urls, quantity basics) on top of
# cel-python's standard functions; `duration()` takes Go duration strings such as "1h30m".
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "duration": _duration,
    "lowerAscii": _lower_ascii,
    "upperAscii": _upper_ascii,
    "trim": _trim,
    "split": _split,
    "join": _join,
    "replace": _replace,
    "substring": _substring,
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "find": _find,
    "findAll": _find_all,
    "isSorted": _is_sorted,
    "sum": _sum,
    "min": _min,
    "max": _max,
    "isURL": _is_url,
    "isQuantity": _is_quantity,
    "isDuration": _is_duration,
}


@lru_cache(maxsize=4096)
def compile_rule(rule: str) -> celpy.Runner:
    """The program for one rule text; raises `CompileError` with cel-go's wording."""
    try:
        ast = _ENV.compile(rule)
    except CELParseError as exc:
        line = getattr(exc, "line", None) or 1
        column = getattr(exc, "column", None) or 0
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise CompileError(
            f"compilation failed: ERROR: <input>:{line}:{column}: Syntax error: {first}"
        ) from exc
    return _ENV.program(ast, functions=FUNCTIONS)


def references_old_self(rule: str) -> bool:
    """A transition rule: Kubernetes evaluates it only on update, with oldSelf present."""
    return re.search(r"\boldSelf\b", rule) is not None


def to_cel(value: Any, schema: Schema | None) -> Any:
    """A JSON value as CEL sees it under `schema` (timestamps and durations by format)."""
    schema = schema or {}
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        extra_schema = extra if isinstance(extra, dict) else None
        return celtypes.MapType(
            {
                celtypes.StringType(k): to_cel(
                    v, props.get(k) if props and k in props else extra_schema
                )
                for k, v in value.items()
            }
        )
    if isinstance(value, list):
        items = schema.get("items")
        return celtypes.ListType([to_cel(v, items) for v in value])
    if isinstance(value, str):
        fmt = schema.get("format")
        if fmt == "date-time":
            try:
                return celtypes.TimestampType(value)
            except ValueError:
                return celtypes.StringType(value)
        if fmt == "duration":
            try:
                return _go_duration(value)
            except ValueError:
                return celtypes.StringType(value)
        return celtypes.StringType(value)
    if isinstance(value, int):
        if schema.get("type") == "number":
            return celtypes.DoubleType(value)
        return celtypes.IntType(value)
    if isinstance(value, float):
        if schema.get("type") == "integer" and value.is_integer():
            return celtypes.IntType(int(value))
        return celtypes.DoubleType(value)
    return value


def _eval_message(exc: Any, rule: str) -> str:
    """The API server's wording for a failed evaluation (see apiextensions cel validation)."""
    text = str(exc.args[0]) if getattr(exc, "args", None) else str(exc)
    key = re.match(r"no such member in mapping: '(.*)'", text)
    if key:
        return f"no such key: {key.group(1)} evaluating rule: {rule}"
    if "no matching overload" in text or "no such overload" in text:
        return (
            "'no such overload': call arguments did not match a supported operator, "
            f"function or macro signature for rule: {rule}"
        )
    if "divide by zero" in text:
        return f"division by zero evaluating rule: {rule}"
    index = re.search(r"index out of range|list index", text)
    if index:
        return f"index out of bounds evaluating rule: {rule}"
    return f"{text} evaluating rule: {rule}"


def evaluate(rule: str, activation: dict[str, Any]) -> Any:
    """Run a compiled rule; raises `EvalError` with the API server's detail text."""
    program = compile_rule(rule)
    try:
        result = program.evaluate(activation)
    except CELEvalError as exc:
        raise EvalError(_eval_message(exc, rule.strip())) from exc
    except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError) as exc:
        raise EvalError(_eval_message(exc, rule.strip())) from exc
    if isinstance(result, CELEvalError):
        raise EvalError(_eval_message(result, rule.strip()))
    return result
