"""kopf's essence of a grant, built lean (lapse.essence): the same as kopf's own builder's."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from lapse.essence import LeanDiffBaseStorage


def grant_body() -> dict[str, Any]:
    """An AccessRequest as the API server sends it once granted: status, managed fields, the
    annotations kubectl and kopf write."""
    return {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {
            "name": "fix",
            "namespace": "payments",
            "uid": "3f0c",
            "resourceVersion": "812",
            "generation": 1,
            "creationTimestamp": "2026-12-07T15:00:00Z",
            "finalizers": ["kopf.zalando.org/KopfFinalizerMarker"],
            "labels": {"team": "payments"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": '{"spec":{}}',
                "lapse.dev/approved-by": "bob",
                "kopf.zalando.org/last-handled-configuration": '{"spec":{"duration":"1h"}}',
            },
            "managedFields": [
                {"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {"f:x": {}}}},
                {"manager": "lapse", "subresource": "status", "fieldsV1": {"f:status": {}}},
            ],
        },
        "spec": {"role": {"kind": "ClusterRole", "name": "edit"}, "duration": "1h"},
        "status": {
            "phase": "Active",
            "bindings": [{"kind": "RoleBinding", "name": "lapse-fix-1a2b", "uid": "b-1"}],
            "conditions": [{"type": "Granted", "status": "True"}],
        },
    }


@pytest.mark.parametrize(
    "extra_fields",
    [None, [], [("status", "phase")], ["status.bindings"]],
    ids=["none", "empty", "a status field", "a dotted status field"],
)
def test_the_lean_essence_is_kopfs_own(extra_fields: Any) -> None:
    body = kopf.Body(grant_body())
    lean = LeanDiffBaseStorage().build(body=body, extra_fields=extra_fields)
    kopfs = kopf.AnnotationsDiffBaseStorage().build(body=body, extra_fields=extra_fields)
    assert lean == kopfs
    # Nothing of the body is shared with the essence kopf keeps and compares.
    assert lean["spec"] is not body["spec"]


def test_the_lean_essence_leaves_the_body_as_it_was() -> None:
    raw = grant_body()
    LeanDiffBaseStorage().build(body=kopf.Body(raw))
    assert raw == grant_body()


def test_it_reads_and_writes_kopfs_annotation() -> None:
    lean, kopfs = LeanDiffBaseStorage(), kopf.AnnotationsDiffBaseStorage()
    body = kopf.Body(grant_body())
    patch, other = kopf.Patch(), kopf.Patch()
    essence = lean.build(body=body)
    lean.store(body=body, patch=patch, essence=essence)
    kopfs.store(body=body, patch=other, essence=kopfs.build(body=body))
    assert patch == other
    # What an operator with kopf's own storage stored is read back the same.
    stored = copy.deepcopy(grant_body())
    stored["metadata"]["annotations"].update(patch["metadata"]["annotations"])
    assert lean.fetch(body=kopf.Body(stored)) == kopfs.fetch(body=kopf.Body(stored))
