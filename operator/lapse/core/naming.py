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
