"""The BreakGlass keeper, with the real grant machinery and core, over an in-memory API."""

from __future__ import annotations

import asyncio
import copy
from datetime import timedelta
from typing import Any

import pytest

from lapse.breakglass import BreakGlassKeeper
from lapse.config import Settings
from lapse.core.bindings import format_time
from lapse.core.kinds import API_VERSION, BREAK_GLASS
from lapse.core.models import AccessPolicy, UserInfo
from lapse.core.requester import build_requester_stamp
from lapse.grantor import Grantor
from lapse.policies import PolicyReader
from tests.unit.builders import NOW
from tests.unit.memory_kube import MemoryKube, merge

KEY = b"unit-test-signing-key-0123456789"
SRE = UserInfo(username="sam", groups=["sre-oncall"])
LEAD = UserInfo(username="lee", groups=["sre-leads"])
POLICY = AccessPolicy.model_validate(
    {
        "metadata": {"name": "sre-break-glass"},
        "spec": {
            "breakGlass": {
                "requesters": {"groups": ["sre-oncall"]},
                "roles": [{"kind": "ClusterRole", "name": "cluster-admin"}],
                "maxDuration": "1h",
                "requireIncident": True,
                "review": {"approvers": {"groups": ["sre-leads"]}, "deadline": "24h"},
            }
        },
    }
)


@pytest.fixture
def kube() -> MemoryKube:
    kube = MemoryKube()
    kube.roles.add(("ClusterRole", None, "cluster-admin"))
    return kube


@pytest.fixture
def keeper(kube: MemoryKube) -> BreakGlassKeeper:
    return BreakGlassKeeper(
        Grantor(kube, Settings(), clock=lambda: NOW), key=KEY, policies=PolicyReader(kube)
    )


def break_glass(kube: MemoryKube, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "BreakGlass",
        "metadata": {"name": "inc-4711", "creationTimestamp": format_time(NOW)},
        "spec": {
            "role": {"kind": "ClusterRole", "name": "cluster-admin"},
            "duration": "30m",
            "incident": "INC-4711",
            "reason": "The primary failed over.",
            **spec,
        },
    }
    stamp = build_requester_stamp(BREAK_GLASS, body, SRE.model_dump(), key=KEY, now=NOW)
    assert stamp.refusal is None
    return kube.add_owner(merge(body, stamp.patch))


def test_break_glass_is_granted_at_once_with_a_review_due(
    kube: MemoryKube, keeper: BreakGlassKeeper
) -> None:
    body = break_glass(kube)
    asyncio.run(keeper.reconcile(copy.deepcopy(body), [POLICY]))
    stored = kube.owner("BreakGlass", None, "inc-4711")
    assert stored["status"]["phase"] == "Active"
    assert stored["status"]["expiresAt"] == format_time(NOW + timedelta(minutes=30))
    assert stored["status"]["reviewDeadline"] == format_time(NOW + timedelta(hours=24))
    (binding,) = kube.bindings.values()
    assert binding["kind"] == "ClusterRoleBinding"
    assert [s["name"] for s in binding["subjects"]] == ["sam"]
    (event,) = kube.events
    assert (event["type"], event["reason"]) == ("Warning", "BreakGlassActivated")
    assert "INC-4711" in event["message"]


def test_break_glass_longer_than_policy_is_denied_not_shortened(
    kube: MemoryKube, keeper: BreakGlassKeeper
) -> None:
    body = break_glass(kube, duration="2h")
    asyncio.run(keeper.reconcile(copy.deepcopy(body), [POLICY]))
    assert kube.owner("BreakGlass", None, "inc-4711")["status"]["phase"] == "Denied"
    assert kube.bindings == {}


def reviewed_break_glass(
    kube: MemoryKube, keeper: BreakGlassKeeper
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An active break-glass as stored, and the same with a review annotation added."""
    body = break_glass(kube)
    asyncio.run(keeper.reconcile(copy.deepcopy(body), [POLICY]))
    stored = kube.owner("BreakGlass", None, "inc-4711")
    new = copy.deepcopy(stored)
    new["metadata"].setdefault("annotations", {})["lapse.dev/review"] = "Justified: all fine"
    return stored, new


def test_the_sre_cannot_review_their_own_break_glass(
    kube: MemoryKube, keeper: BreakGlassKeeper
) -> None:
    stored, new = reviewed_break_glass(kube, keeper)
    assert asyncio.run(keeper.admit(stored, new, SRE, [POLICY])).refusal is not None
    admitted = asyncio.run(keeper.admit(stored, new, LEAD, [POLICY]))
    assert admitted.refusal is None
    annotations = stored["metadata"].setdefault("annotations", {})
    for key, value in admitted.annotations.items():
        if value is not None:
            annotations[key] = value
    asyncio.run(keeper.act(copy.deepcopy(stored), [POLICY]))
    review = kube.owner("BreakGlass", None, "inc-4711")["status"]["review"]
    assert (review["reviewer"]["username"], review["verdict"]) == ("lee", "Justified")


def test_a_review_is_judged_by_the_granting_policy_while_the_index_lags(
    kube: MemoryKube, keeper: BreakGlassKeeper
) -> None:
    stored, new = reviewed_break_glass(kube, keeper)
    # The index has not seen the policy; the API has it.
    kube.owners[("AccessPolicy", None, POLICY.metadata.name)] = POLICY.to_wire()
    assert asyncio.run(keeper.admit(stored, new, LEAD, [])).refusal is None
    # Gone from both: nobody reviews under it.
    del kube.owners[("AccessPolicy", None, POLICY.metadata.name)]
    assert asyncio.run(keeper.admit(stored, new, LEAD, [])).refusal is not None
