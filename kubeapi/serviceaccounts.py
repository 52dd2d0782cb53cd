"""The ServiceAccount admission plugin, for pods being created.

As kube-apiserver's (`plugin/pkg/admission/serviceaccount`), before any mutating webhook:

- `spec.serviceAccountName` defaults to `default` (or to the deprecated `spec.serviceAccount`),
  and the deprecated field is set to the same name, as the v1 conversion does;
- the ServiceAccount must exist, else 403 `error looking up service account NS/NAME:
  serviceaccount "NAME" not found` (for `default`, which a controller makes just after its
  namespace, it is looked for a few times first);
- unless `automountServiceAccountToken: false` (the pod's word first, then the account's), a
  projected volume `kube-api-access-xxxxx` (token, the cluster CA, the namespace) is added and
  mounted read-only at `/var/run/secrets/kubernetes.io/serviceaccount` in every init container
  and container that does not mount something there already;
- a pod without `imagePullSecrets` gets the account's.

Mirror pods (annotated `kubernetes.io/config.mirror`) are left alone.
"""

from __future__ import annotations

import asyncio
import copy
import random
from typing import Any

from . import errors
from .store import Store
from .tokens import SERVICE_ACCOUNTS

DEFAULT_ACCOUNT = "default"
VOLUME_PREFIX = "kube-api-access-"
MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
# The kubelet's projected token: 3607 s, the one the API server extends (see tokens.py).
TOKEN_SECONDS = 3607
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
# apimachinery's SimpleNameGenerator: five characters without vowels or look-alikes.
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# getServiceAccount: `default` is tried ten times, 100 to 200 ms apart.
DEFAULT_ATTEMPTS = 10


def token_volume(name: str) -> dict[str, Any]:
    """The projected volume the plugin adds, field for field as v1.36 writes it."""
    return {
        "name": name,
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
                {
                    "configMap": {
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        "name": ROOT_CA_CONFIGMAP,
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                                "path": "namespace",
                            }
                        ]
                    }
                },
            ],
        },
    }


def _automount(pod_spec: dict[str, Any], account: dict[str, Any]) -> bool:
    if pod_spec.get("automountServiceAccountToken") is not None:
        return bool(pod_spec["automountServiceAccountToken"])
    if account.get("automountServiceAccountToken") is not None:
        return bool(account["automountServiceAccountToken"])
    return True


async def _account(store: Store, namespace: str, name: str) -> dict[str, Any] | None:
    attempts = DEFAULT_ATTEMPTS if name == DEFAULT_ACCOUNT else 1
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(random.uniform(0.1, 0.2))
        found = store.get(SERVICE_ACCOUNTS, namespace, name)
        if found is not None:
            return found
    return None


def _forbidden(name: str, why: str) -> errors.ApiError:
    subject = f'pods "{name}" is forbidden' if name else "pods is forbidden"
    details: dict[str, Any] = {"kind": "pods"}
    if name:
        details["name"] = name
    return errors.ApiError(403, "Forbidden", f"{subject}: {why}", details)


async def admit_pod(store: Store, namespace: str, pod: dict[str, Any], name: str) -> dict[str, Any]:
    """The pod as the plugin leaves it; `name` is the name the request gave (empty for a
    generated one, which the real plugin sees before the name is made)."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if MIRROR_ANNOTATION in annotations:
        return pod
    pod = copy.deepcopy(pod)
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        spec = pod["spec"] = {}
    account_name = spec.get("serviceAccountName") or spec.get("serviceAccount") or DEFAULT_ACCOUNT
    spec["serviceAccountName"] = account_name
    spec["serviceAccount"] = account_name
    account = await _account(store, namespace, account_name)
    if account is None:
        raise _forbidden(
            name,
            f"error looking up service account {namespace}/{account_name}: "
            f'serviceaccount "{account_name}" not found',
        )
    if _automount(spec, account):
        _mount_token(spec)
    if not spec.get("imagePullSecrets") and account.get("imagePullSecrets"):
        spec["imagePullSecrets"] = [
            {"name": ref.get("name", "")} for ref in account["imagePullSecrets"]
        ]
    return pod


def _mount_token(spec: dict[str, Any]) -> None:
    volumes = spec.get("volumes") or []
    existing = next(
        (v.get("name") for v in volumes if str(v.get("name", "")).startswith(VOLUME_PREFIX)),
        None,
    )
    volume_name = existing or VOLUME_PREFIX + "".join(random.choices(_ALPHABET, k=5))
    mount = {"mountPath": MOUNT_PATH, "name": volume_name, "readOnly": True}
    needed = False
    for field in ("initContainers", "containers"):
        for container in spec.get(field) or ():
            mounts = container.get("volumeMounts") or []
            if any(m.get("mountPath") == MOUNT_PATH for m in mounts):
                continue
            container["volumeMounts"] = [*mounts, dict(mount)]
            needed = True
    if needed and existing is None:
        spec["volumes"] = [*volumes, token_volume(volume_name)]
