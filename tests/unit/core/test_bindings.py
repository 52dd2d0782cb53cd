from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from lapse.core.bindings import (
    EXPIRES_AT_ANNOTATION,
    MANAGED_BY_LABEL,
    build_binding,
    build_restore_patch,
    compute_binding_refs,
    compute_drift,
    compute_owner_key,
    compute_owner_uid,
    parse_time,
)
from lapse.core.grants import compute_request_grant
from lapse.core.models import UserInfo
from tests.unit.builders import NOW, make_request

EXPIRES = NOW + timedelta(hours=2)


def manifest() -> dict[str, Any]:
    request = make_request()
    grant = compute_request_grant(request, UserInfo(username="alice"), "payments", EXPIRES)
    (ref,) = compute_binding_refs(grant)
    return build_binding(grant, ref)


def test_binding_carries_owner_expiry_and_exactly_the_requester() -> None:
    binding = manifest()
    meta = binding["metadata"]
    assert binding["kind"] == "RoleBinding" and meta["namespace"] == "payments"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "lapse"
    assert meta["labels"]["lapse.dev/request"] == "fix"
    assert parse_time(meta["annotations"][EXPIRES_AT_ANNOTATION]) == EXPIRES
    assert meta["annotations"]["lapse.dev/request-uid"] == "uid-fix"
    assert meta["annotations"]["lapse.dev/policy"] == "payments"
    (owner,) = meta["ownerReferences"]
    assert owner["uid"] == "uid-fix" and owner["controller"] and owner["blockOwnerDeletion"]
    assert binding["subjects"] == [
        {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "edit",
    }


def test_own_binding_recognised() -> None:
    binding = manifest()
    assert compute_owner_uid(binding) == "uid-fix"
    key = compute_owner_key(binding)
    assert key is not None
    assert (key.kind, key.namespace, key.name, key.uid) == (
        "AccessRequest",
        "payments",
        "fix",
        "uid-fix",
    )


def test_lookalikes_are_not_ours() -> None:
    labels_only = manifest()
    del labels_only["metadata"]["ownerReferences"]
    wrong_annotation = manifest()
    wrong_annotation["metadata"]["annotations"]["lapse.dev/request-uid"] = "other"
    wrong_owner = manifest()
    wrong_owner["metadata"]["ownerReferences"][0]["uid"] = "other"
    not_controller = manifest()
    not_controller["metadata"]["ownerReferences"][0]["controller"] = False
    no_label = manifest()
    del no_label["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    foreign_kind = manifest()
    foreign_kind["metadata"]["ownerReferences"][0]["kind"] = "Deployment"
    for binding in (
        labels_only,
        wrong_annotation,
        wrong_owner,
        not_controller,
        no_label,
        foreign_kind,
    ):
        assert compute_owner_uid(binding) is None
        assert compute_owner_key(binding) is None


def test_drift_detects_widened_subjects_and_stretched_expiry() -> None:
    desired = manifest()
    assert not compute_drift(desired, desired).any
    widened = copy.deepcopy(desired)
    widened["subjects"].append({"kind": "User", "name": "mallory"})
    assert compute_drift(widened, desired).subjects
    stretched = copy.deepcopy(desired)
    stretched["metadata"]["annotations"][EXPIRES_AT_ANNOTATION] = "2099-01-01T00:00:00Z"
    drift = compute_drift(stretched, desired)
    assert drift.expires_at and not drift.subjects
    other_role = copy.deepcopy(desired)
    other_role["roleRef"]["name"] = "admin"
    assert compute_drift(other_role, desired).role_ref


def test_drift_detects_lapse_labels_taken_off_or_changed_but_not_labels_added() -> None:
    desired = manifest()
    for change in ({}, {MANAGED_BY_LABEL: "someone-else"}):
        stripped = copy.deepcopy(desired)
        stripped["metadata"]["labels"] = change
        drift = compute_drift(stripped, desired)
        assert drift.labels and drift.any and not drift.subjects
    added = copy.deepcopy(desired)
    added["metadata"]["labels"]["team"] = "payments"
    assert not compute_drift(added, desired).any


def test_restore_patch_is_conditional() -> None:
    patch = build_restore_patch(manifest(), "42")
    assert patch["metadata"]["resourceVersion"] == "42"
    assert patch["metadata"]["labels"] == manifest()["metadata"]["labels"]
    assert patch["subjects"][0]["name"] == "alice"
    assert parse_time(patch["metadata"]["annotations"][EXPIRES_AT_ANNOTATION]) == EXPIRES


def test_cluster_wide_grant_uses_cluster_role_binding() -> None:
    request = make_request()
    grant = compute_request_grant(request, UserInfo(username="alice"), None, EXPIRES)
    cluster_wide = type(grant)(**{**grant.__dict__, "namespaces": ()})
    (ref,) = compute_binding_refs(cluster_wide)
    assert ref.kind == "ClusterRoleBinding" and ref.namespace is None
    assert "namespace" not in build_binding(cluster_wide, ref)["metadata"]


def test_unreadable_times() -> None:
    assert parse_time("next tuesday") is None
    assert parse_time("2030-01-01T00:00:00") is None
    assert parse_time(None) is None
