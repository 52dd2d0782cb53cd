"""Reading a grant owner's object: its key, its status and its role, never a crash.

Every layer above the core meets owners as plain dicts from the API (or from kopf); these are
the one way to read them, so a status nobody can parse counts as empty everywhere alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from lapse.core.grants import GrantKey
from lapse.core.models import (
    AccessRequestStatus,
    BreakGlassStatus,
    GrantStatus,
    Phase,
    RoleRef,
)

STATUS_MODELS: dict[str, type[GrantStatus]] = {
    "AccessRequest": AccessRequestStatus,
    "BreakGlass": BreakGlassStatus,
}


def parse_status(kind: str, body: Mapping[str, Any]) -> GrantStatus:
    """The owner's status; an unreadable one counts as empty, never as a crash."""
    try:
        return STATUS_MODELS[kind].model_validate(body.get("status") or {})
    except ValidationError:
        return STATUS_MODELS[kind]()


def parse_role(body: Mapping[str, Any]) -> RoleRef | None:
    try:
        return RoleRef.model_validate((body.get("spec") or {}).get("role") or {})
    except ValidationError:
        return None


def parse_generation(body: Mapping[str, Any]) -> int | None:
    generation = (body.get("metadata") or {}).get("generation")
    return generation if isinstance(generation, int) else None


def key_of(kind: str, body: Mapping[str, Any]) -> GrantKey:
    metadata = body.get("metadata") or {}
    return GrantKey(
        kind=kind,
        namespace=metadata.get("namespace"),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
    )


def is_same_owner(key: GrantKey, body: Mapping[str, Any] | None) -> bool:
    """Whether `body` is the very object `key` names (not a namesake made since)."""
    return body is not None and (body.get("metadata") or {}).get("uid") == key.uid


def active_status(kind: str) -> GrantStatus:
    return STATUS_MODELS[kind](phase=Phase.ACTIVE)
