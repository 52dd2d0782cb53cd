"""Whether a stopping replica is being uninstalled or only restarted, and what it then removes.

A replica stops for many reasons (a rolling update, a drained node, a deleted pod) and only one
of them means Lapse is going away for good: its Deployment is gone or being deleted, or its
namespace is. Then no operator will be left to end the grants it made, so the last replicas end
every one of them before they exit. Getting this wrong is costly either way (a restart that
revokes everything, or an uninstall that leaves access for ever), so the decision is made here,
from the objects alone, and is armed only for the very Deployment a replica saw at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lapse.core.kinds import FINALIZER

UNINSTALLED_REASON = "Uninstalled"
UNINSTALLED_ACTIVE = "Access ended because Lapse was uninstalled."
UNINSTALLED_WAITING = "Ended because Lapse was uninstalled before this was granted; ask again."


def _metadata(body: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (body or {}).get("metadata") or {}


def is_deleting(body: Mapping[str, Any] | None) -> bool:
    return bool(_metadata(body).get("deletionTimestamp"))


def compute_uninstalling(
    namespace: Mapping[str, Any] | None,
    deployment: Mapping[str, Any] | None,
    *,
    deployment_uid: str | None,
) -> bool:
    """Whether Lapse is being uninstalled: its namespace is gone or terminating, or the
    Deployment with `deployment_uid` (the one seen at start-up) is gone, being deleted or
    replaced by another of the same name.

    `deployment_uid` None means no Deployment was seen at start-up (a terminal, or a setting
    naming a Deployment that does not exist): never uninstalling, so a wrong name can never
    turn a restart into the end of every grant. None for an object means it was read and is
    not there; a read that failed must not reach this function.
    """
    if deployment_uid is None:
        return False
    if namespace is None or is_deleting(namespace):
        return True
    if deployment is None or is_deleting(deployment):
        return True
    return _metadata(deployment).get("uid") != deployment_uid


def compute_finalizer_removal(body: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """A JSON patch taking Lapse's (kopf's) finalizer off `body`, or None when it has none.

    The `test` makes it safe beside another writer: if the list changed since `body` was
    read, the patch fails instead of removing someone else's finalizer.
    """
    finalizers = list(_metadata(body).get("finalizers") or [])
    if FINALIZER not in finalizers:
        return None
    path = f"/metadata/finalizers/{finalizers.index(FINALIZER)}"
    return [{"op": "test", "path": path, "value": FINALIZER}, {"op": "remove", "path": path}]
