"""What kopf hands a handler, as the core and the I/O module take it: plain dicts and lists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf


def plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def merge_patch(patch: kopf.Patch, addition: Mapping[str, Mapping[str, Any]]) -> None:
    """Add `addition`'s fields to what other handlers may have put into `patch` already."""
    for field, value in addition.items():
        patch.setdefault(field, {}).update(value)
