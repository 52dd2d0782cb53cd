"""Deterministic binding names, so a restart finds the binding it made instead of a duplicate.

The name is readable (it starts with the owner's name) and unique (it ends with a hash of the
owner's kind, namespace, name and UID), like cert-manager's `ComputeName`: a request deleted and
re-created under the same name gets a different binding name, because its UID differs.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "lapse"
HASH_LENGTH = 10
MAX_NAME_LENGTH = 63
# A label value is at most 63 characters; an Event's name (owner name, dot, suffix) at most 253.
MAX_LABEL_LENGTH = 63
MAX_OBJECT_NAME_LENGTH = 253

_UNSAFE = re.compile(r"[^a-z0-9-]+")


def compute_hash(*parts: str) -> str:
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()
    return digest[:HASH_LENGTH]


def compute_binding_name(kind: str, namespace: str | None, name: str, uid: str) -> str:
    """`lapse-<owner name, truncated>-<hash>`: a DNS label of at most 63 characters."""
    suffix = compute_hash(kind, namespace or "", name, uid)
    room = MAX_NAME_LENGTH - len(PREFIX) - len(suffix) - 2
    readable = _UNSAFE.sub("-", name.lower())[:room].strip("-")
    if not readable:
        return f"{PREFIX}-{suffix}"
    return f"{PREFIX}-{readable}-{suffix}"


def compute_label_value(name: str) -> str:
    """`name` cut to a valid label value: an owner's name may be up to 253 characters, a label
    value only 63, and a binding whose label is invalid is refused by the API server. The label
    only helps people find bindings; ownership is proven by the owner reference and UID."""
    return name[:MAX_LABEL_LENGTH].rstrip("-_.")


def compute_event_name(owner_name: str, suffix: str) -> str:
    """`<owner name>.<suffix>`, the owner's name cut so the whole stays a valid object name."""
    room = MAX_OBJECT_NAME_LENGTH - len(suffix) - 1
    return f"{owner_name[:room].rstrip('-.')}.{suffix}"
