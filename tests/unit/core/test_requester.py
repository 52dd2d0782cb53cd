"""Which objects did not pass the CREATE webhook, and the one-annotation change that nudges them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kubeapi.errors import ApiError
from kubeapi.patch import json_patch, merge_patch
from lapse.core.kinds import ACCESS_REQUEST
from lapse.core.requester import (
    NUDGED_ANNOTATION,
    build_nudge,
    build_requester_stamp,
    compute_unadmitted,
)

KEY = b"k" * 32
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def made(**metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {
            "name": "fix",
            "namespace": "payments",
            "uid": "uid-1",
            "resourceVersion": "41",
            "creationTimestamp": "2030-01-01T12:00:00Z",
            **metadata,
        },
        "spec": {
            "role": {"kind": "ClusterRole", "name": "edit"},
            "reason": "The queue is stuck.",
            "requester": {"username": "alice", "groups": ["payments-devs"]},
        },
    }


def admitted() -> dict[str, Any]:
    body = made()
    userinfo = {"username": "alice", "groups": ["payments-devs"]}
    stamp = build_requester_stamp(ACCESS_REQUEST, body, userinfo, key=KEY, now=NOW)
    return dict(merge_patch(body, stamp.patch))


def test_only_a_phaseless_object_the_webhook_did_not_sign_is_unadmitted() -> None:
    assert compute_unadmitted("AccessRequest", made(), KEY)
    assert not compute_unadmitted("AccessRequest", admitted(), KEY)
    # An admission stamp copied by hand, without the signature that goes with it.
    forged = made(annotations={"lapse.dev/admitted-at": "2030-01-01T12:00:00Z"})
    assert compute_unadmitted("AccessRequest", forged, KEY)
    assert not compute_unadmitted("AccessRequest", {**made(), "status": {"phase": "Invalid"}}, KEY)
    assert not compute_unadmitted(
        "AccessRequest", made(deletionTimestamp="2030-01-01T12:01:00Z"), KEY
    )


@pytest.mark.parametrize("annotations", [None, {"team": "payments"}])
def test_the_nudge_adds_one_annotation_to_the_object_as_it_was_seen(
    annotations: dict[str, str] | None,
) -> None:
    body = made(annotations=annotations) if annotations else made()
    nudged = json_patch(body, build_nudge(body))
    assert nudged["metadata"]["annotations"] == {**(annotations or {}), NUDGED_ANNOTATION: "41"}
    assert nudged["spec"] == body["spec"]
    changed = (
        made(annotations=annotations, resourceVersion="42")
        if annotations
        else made(resourceVersion="42")
    )
    with pytest.raises(ApiError):
        json_patch(changed, build_nudge(body))
