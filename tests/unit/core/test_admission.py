from __future__ import annotations

import copy
import random
from datetime import UTC, datetime
from typing import Any

from kubeapi import cel
from lapse.core.actions import (
    ActionAdmission,
    Authority,
    ObjectIdentity,
    compute_action_admission,
)
from lapse.core.admission import (
    build_relevant_update_condition,
    compute_finalizer_refusal,
    compute_inert_update,
    compute_request_refusal,
    compute_requester,
    compute_update_refusal,
)
from lapse.core.kinds import FINALIZER
from lapse.core.models import UserInfo

ALICE = UserInfo(username="alice", groups=["devs"])
SPEC = {"role": {"kind": "ClusterRole", "name": "edit"}, "reason": "Fix.", "duration": "1h"}


def test_requester_comes_from_userinfo() -> None:
    requester = compute_requester({"username": "alice", "groups": ["devs"], "uid": "42"})
    assert requester == UserInfo(username="alice", groups=["devs"], uid="42")
    assert compute_requester({"username": "bob"}).uid is None


def test_plain_request_admitted() -> None:
    assert compute_request_refusal(SPEC, ALICE) is None
    yourself = {**SPEC, "subject": {"kind": "User", "name": "alice"}}
    assert compute_request_refusal(yourself, ALICE) is None


def test_someone_else_as_subject_refused() -> None:
    for subject in ({"kind": "User", "name": "bob"}, {"kind": "Group", "name": "devs"}):
        refusal = compute_request_refusal({**SPEC, "subject": subject}, ALICE)
        assert refusal is not None and "only yourself" in refusal


def test_malformed_spec_refused_with_the_field() -> None:
    refusal = compute_request_refusal({**SPEC, "duration": "1d"}, ALICE)
    assert refusal is not None and refusal.startswith("spec.duration")


def test_anonymous_refused() -> None:
    assert compute_request_refusal(SPEC, UserInfo(username="")) is not None


def test_spec_is_immutable() -> None:
    assert compute_update_refusal(SPEC, dict(SPEC)) is None
    refusal = compute_update_refusal(SPEC, {**SPEC, "duration": "4h"})
    assert refusal is not None and "immutable" in refusal
    stolen = {**SPEC, "requester": {"username": "bob"}}
    assert compute_update_refusal({**SPEC, "requester": {"username": "alice"}}, stolen)


def _request(**metadata: object) -> dict[str, object]:
    return {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {"name": "fix", "namespace": "payments", "uid": "u-1", **metadata},
        "spec": {**SPEC, "requester": {"username": "alice", "groups": ["devs"]}},
    }


def test_kopfs_own_patch_is_an_inert_update() -> None:
    old = _request(annotations={"lapse.dev/requester-signature": "sig"})
    new = _request(
        annotations={"lapse.dev/requester-signature": "sig", "kopf.zalando.org/last-handled": "x"},
        finalizers=[FINALIZER],
        labels={"team": "payments"},
    )
    assert compute_inert_update(old, new)
    # What every UPDATE webhook would say of it, the long way: nothing to refuse, nothing to add.
    assert compute_update_refusal(old["spec"], new["spec"]) is None  # type: ignore[arg-type]
    assert compute_finalizer_refusal([], [FINALIZER], deleting=False) is None
    admission = compute_action_admission(
        {"lapse.dev/requester-signature": "sig"},
        {"lapse.dev/requester-signature": "sig", "kopf.zalando.org/last-handled": "x"},
        ALICE,
        Authority(frozenset(), ALICE, None, None, "no policy"),
        ObjectIdentity("AccessRequest", "payments", "fix", "u-1"),
        b"k" * 32,
        datetime(2030, 1, 1, tzinfo=UTC),
    )
    assert admission == ActionAdmission()


def test_no_attack_passes_as_an_inert_update() -> None:
    """Everything the UPDATE webhooks exist to judge goes the long way."""
    old = _request(annotations={"lapse.dev/requester-signature": "sig"}, finalizers=[FINALIZER])
    attacks = {
        "a longer duration": {"spec": {**old["spec"], "duration": "8h"}},  # type: ignore[dict-item]
        "another role": {"spec": {**old["spec"], "role": {"kind": "ClusterRole", "name": "admin"}}},  # type: ignore[dict-item]
        "a forged requester": {
            "spec": {**old["spec"], "requester": {"username": "mallory"}}  # type: ignore[dict-item]
        },
        "an approval": {
            "annotations": {"lapse.dev/requester-signature": "sig", "lapse.dev/approve": "ok"}
        },
        "a forged decision": {
            "annotations": {"lapse.dev/requester-signature": "sig", "lapse.dev/decisions": "[]"}
        },
        "a new signature": {"annotations": {"lapse.dev/requester-signature": "other"}},
        "Lapse's finalizer taken off": {"finalizers": []},
    }
    for what, change in attacks.items():
        new = copy.deepcopy(old)
        if "spec" in change:
            new["spec"] = change["spec"]
        else:
            new["metadata"].update(change)  # type: ignore[attr-defined]
        assert not compute_inert_update(old, new), what


def _variant(rng: random.Random) -> dict[str, Any]:
    spec = rng.choice([None, {}, {"duration": "1h"}, {"duration": "2h"}, dict(SPEC)])
    annotations = {
        name: rng.choice(["", "x", "y"])
        for name in ("lapse.dev/decisions", "lapse.dev/approve", "lapse.dev/revoke", "other")
        if rng.random() < 0.4
    }
    finalizers = [f for f in (FINALIZER, "other.dev/f") if rng.random() < 0.5]
    metadata: dict[str, Any] = {"name": "r", "labels": {"n": str(rng.randint(0, 1))}}
    if annotations or rng.random() < 0.5:
        metadata["annotations"] = annotations
    if finalizers or rng.random() < 0.5:
        metadata["finalizers"] = finalizers
    body: dict[str, Any] = {"metadata": metadata}
    if spec is not None:
        body["spec"] = spec
    return body


def test_the_match_condition_sends_exactly_the_updates_the_webhooks_judge() -> None:
    """The API server skips the UPDATE webhooks by the CEL condition; the quick path skips
    kopf's machinery by compute_inert_update. On 400 pairs of objects they never differ: a
    condition narrower would let an update through unjudged."""
    rng = random.Random(29)
    condition = build_relevant_update_condition()
    differing, inert = [], 0
    for _ in range(400):
        old = _variant(rng)
        new = copy.deepcopy(old) if rng.random() < 0.3 else _variant(rng)
        if rng.random() < 0.3:
            new["metadata"]["labels"] = {"changed": "yes"}
        request = {"operation": "UPDATE", "object": new, "oldObject": old}
        activation = {
            "object": cel.to_cel(new, None),
            "oldObject": cel.to_cel(old, None),
            "request": cel.to_cel(request, None),
        }
        sent = bool(cel.evaluate(condition, activation))
        inert += not sent
        if sent == compute_inert_update(old, new):
            differing.append((old, new))
    assert differing == []
    assert 50 < inert < 350
    for operation in ("CREATE", "DELETE"):
        request = {"operation": operation, "object": None, "oldObject": None}
        activation = {"object": None, "oldObject": None, "request": cel.to_cel(request, None)}
        assert cel.evaluate(condition, activation)
