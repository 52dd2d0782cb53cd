"""Telling an uninstall from a restart, and taking Lapse's finalizer off safely."""

from __future__ import annotations

from typing import Any

import pytest

from lapse.core.admission import compute_finalizer_refusal
from lapse.core.kinds import FINALIZER
from lapse.core.uninstall import compute_finalizer_removal, compute_uninstalling

UID = "d-1"
STAMP = "2026-01-01T00:00:00Z"


def obj(uid: str = UID, *, deleting: bool = False, **metadata: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x", "uid": uid, **metadata}
    if deleting:
        meta["deletionTimestamp"] = STAMP
    return {"metadata": meta}


def test_a_restart_is_not_an_uninstall() -> None:
    assert not compute_uninstalling(obj("ns"), obj(), deployment_uid=UID)


@pytest.mark.parametrize(
    ("namespace", "deployment"),
    [
        (obj("ns"), None),  # the Deployment is gone
        (obj("ns"), obj(deleting=True)),  # ...or being deleted
        (obj("ns"), obj("d-2")),  # ...or replaced: the one this replica ran under is gone
        (obj("ns", deleting=True), obj()),  # the namespace is terminating
        (None, None),  # the namespace is gone
    ],
)
def test_the_deployment_or_namespace_going_away_is_an_uninstall(
    namespace: dict[str, Any] | None, deployment: dict[str, Any] | None
) -> None:
    assert compute_uninstalling(namespace, deployment, deployment_uid=UID)


@pytest.mark.parametrize("deployment", [None, obj(deleting=True), obj()])
def test_never_armed_without_a_deployment_seen_at_start_up(
    deployment: dict[str, Any] | None,
) -> None:
    # A terminal, or a LAPSE_DEPLOYMENT naming nothing: a wrong name must not end every grant.
    assert not compute_uninstalling(obj("ns"), deployment, deployment_uid=None)
    assert not compute_uninstalling(None, deployment, deployment_uid=None)


def test_finalizer_removal_tests_then_removes_only_lapses() -> None:
    body = obj(finalizers=["other.io/keep", FINALIZER])
    assert compute_finalizer_removal(body) == [
        {"op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER},
        {"op": "remove", "path": "/metadata/finalizers/1"},
    ]
    assert compute_finalizer_removal(obj(finalizers=["other.io/keep"])) is None
    assert compute_finalizer_removal(obj()) is None


def test_an_ended_request_may_lose_its_finalizer() -> None:
    assert compute_finalizer_refusal([FINALIZER], [], deleting=False) is not None
    assert compute_finalizer_refusal([FINALIZER], [], deleting=False, ended=True) is None
