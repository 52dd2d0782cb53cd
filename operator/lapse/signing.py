"""The operator's signing key: one Secret, made on first start, read on every start.

Decision records and requester stamps are signed with it (see `lapse.core.actions`); whoever
cannot read this Secret cannot forge them. Keeping it in the cluster rather than in the pod lets
a restarted or rescheduled operator verify what its predecessor signed.
"""

from __future__ import annotations

import base64
import secrets

from lapse.kube import ConflictError, KubeApi

SECRET_NAME = "lapse-signing-key"
KEY_FIELD = "key"


def _decode(secret: dict[str, object]) -> bytes | None:
    data = secret.get("data")
    if not isinstance(data, dict) or not isinstance(data.get(KEY_FIELD), str):
        return None
    key = base64.b64decode(data[KEY_FIELD])
    return key if len(key) >= 32 else None


async def ensure_signing_key(kube: KubeApi, namespace: str) -> bytes:
    """The key from the Secret, creating the Secret with a fresh key when absent."""
    existing = await kube.get_namespaced("secrets", namespace, SECRET_NAME)
    if existing is not None:
        key = _decode(existing)
        if key is None:
            raise RuntimeError(
                f"Secret {namespace}/{SECRET_NAME} holds no usable '{KEY_FIELD}' (32+ bytes)."
            )
        return key
    fresh = secrets.token_bytes(32)
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": SECRET_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "lapse"},
        },
        "data": {KEY_FIELD: base64.b64encode(fresh).decode()},
    }
    try:
        await kube.create_namespaced("secrets", namespace, manifest)
    except ConflictError:
        # Another replica made it first: use theirs.
        return await ensure_signing_key(kube, namespace)
    return fresh
