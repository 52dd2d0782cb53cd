"""The AccessRequest keeper, with the real grant machinery and core, over an in-memory API.

Each test creates a request the way the admission webhook stamps it (`build_requester_stamp`)
and acts the way approvers do (`RequestDecisions.admit`), then checks what the API holds:
the status, the binding, the Events.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lapse.config import Settings
from lapse.core.bindings import format_time
from lapse.core.grants import GrantKey
from lapse.core.kinds import ACCESS_REQUEST, API_VERSION
from lapse.core.models import AccessPolicy, BindingRef, UserInfo
from lapse.core.requester import build_requester_stamp
from lapse.decisions import RequestDecisions
from lapse.exposure import ExposureKeeper
from lapse.grantor import Grantor
from lapse.ledger import GitOpsLedger
from lapse.policies import PolicyReader
from lapse.rbac import RbacIndex
from lapse.reaper import Deleter
from lapse.requests import RequestKeeper
from tests.unit.builders import NOW, make_policy
from tests.unit.memory_kube import MemoryKube, merge

KEY = b"unit-test-signing-key-0123456789"
ALICE = UserInfo(username="alice", groups=["payments-devs"])
BOB = UserInfo(username="bob", groups=["payments-leads"])
FOUR_EYES = {"mode": "Approvers", "approvers": {"groups": ["payments-leads"]}, "required": 1}


@dataclass
class World:
    kube: MemoryKube
    grantor: Grantor
    decisions: RequestDecisions
    keeper: RequestKeeper
    now: list[datetime] = field(default_factory=lambda: [NOW])

    def run(self, work: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run(work)

    def ask(self, policies: list[AccessPolicy], name: str = "fix", **spec: Any) -> dict[str, Any]:
        """Create a request as alice, through the admission stamp, and let the keeper see it."""
        body: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": "AccessRequest",
            "metadata": {
                "name": name,
                "namespace": "payments",
                "creationTimestamp": format_time(self.now[0]),
            },
            "spec": {
                "role": {"kind": "ClusterRole", "name": "edit"},
                "duration": "2h",
                "reason": "Restart the worker.",
                **spec,
            },
        }
        stamp = build_requester_stamp(
            ACCESS_REQUEST, body, ALICE.model_dump(), key=KEY, now=self.now[0]
        )
        assert stamp.refusal is None
        stored = self.kube.add_owner(merge(body, stamp.patch))
        return self.reconcile(stored, policies)

    def reconcile(self, body: dict[str, Any], policies: list[AccessPolicy]) -> dict[str, Any]:
        """What the operator's handler does: the policies are in the API and in the index."""
        for policy in policies:
            self.kube.owners[("AccessPolicy", None, policy.metadata.name)] = policy.to_wire()
        self.run(self.keeper.reconcile(copy.deepcopy(body), policies))
        metadata = body["metadata"]
        return self.kube.owner("AccessRequest", metadata["namespace"], metadata["name"])

    def annotate(
        self,
        body: dict[str, Any],
        actor: UserInfo,
        policies: list[AccessPolicy],
        **annotations: str,
    ) -> str | None:
        """An UPDATE adding `annotations`, as the mutating webhook answers it; the refusal."""
        new = copy.deepcopy(body)
        new["metadata"].setdefault("annotations", {}).update(annotations)
        admission = self.run(self.decisions.admit(body, new, actor, policies, self.now[0]))
        if admission.refusal is not None:
            return admission.refusal
        stored = body["metadata"].setdefault("annotations", {})
        for key, value in {**annotations, **admission.annotations}.items():
            if value is None:
                stored.pop(key, None)
            else:
                stored[key] = value
        return None


def make_world(reaper_client: Callable[[MemoryKube], Deleter] | None = None) -> World:
    kube = MemoryKube()
    kube.namespaces["payments"] = {}
    clock = [NOW]
    grantor = Grantor(
        kube,
        Settings(),
        clock=lambda: clock[0],
        reaper_connect=(lambda: reaper_client(kube)) if reaper_client else None,
    )
    decisions = RequestDecisions(
        grantor.reporter, key=KEY, admin_groups=frozenset(), policies=PolicyReader(kube)
    )
    ledger = GitOpsLedger(kube, "lapse-system", timedelta(days=30))
    # The cluster's RBAC, read: it holds nothing, so nobody can act as anyone.
    rbac = RbacIndex()
    rbac.ready.set()
    exposure = ExposureKeeper(kube, rbac, grantor.reporter, Settings())
    keeper = RequestKeeper(grantor, decisions=decisions, ledger=ledger, exposure=exposure)
    return World(kube=kube, grantor=grantor, decisions=decisions, keeper=keeper, now=clock)


@pytest.fixture
def world() -> World:
    return make_world()


def test_a_request_within_an_auto_policy_is_bound_until_its_expiry(world: World) -> None:
    stored = world.ask([make_policy()])
    assert stored["status"]["phase"] == "Active"
    assert stored["status"]["expiresAt"] == format_time(NOW + timedelta(hours=2))
    (binding,) = world.kube.bindings.values()
    assert binding["roleRef"]["name"] == "edit"
    assert [s["name"] for s in binding["subjects"]] == ["alice"]
    assert binding["metadata"]["namespace"] == "payments"
    assert world.kube.reasons("fix") == ["Granted"]


def test_a_role_outside_policy_is_denied_and_binds_nothing(world: World) -> None:
    stored = world.ask([make_policy()], role={"kind": "ClusterRole", "name": "admin"})
    assert stored["status"]["phase"] == "Denied"
    assert stored["status"]["reason"] == "RoleNotAllowed"
    assert world.kube.bindings == {}


def test_a_requester_edited_after_admission_is_not_trusted(world: World) -> None:
    policy = make_policy(requesters={"users": ["mallory"]})
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "AccessRequest",
        "metadata": {"name": "forged", "namespace": "payments"},
        "spec": {"role": {"kind": "ClusterRole", "name": "edit"}, "reason": "x"},
    }
    stamp = build_requester_stamp(ACCESS_REQUEST, body, ALICE.model_dump(), key=KEY, now=NOW)
    forged = merge(body, stamp.patch)
    forged["metadata"]["creationTimestamp"] = format_time(NOW)
    forged["spec"]["requester"] = {"username": "mallory", "groups": []}
    stored = world.reconcile(world.kube.add_owner(forged), [policy])
    assert stored["status"]["phase"] == "Invalid"
    assert stored["status"]["reason"] == "UnverifiedRequester"
    assert world.kube.bindings == {}


def test_an_approver_approves_and_the_grant_follows(world: World) -> None:
    policy = make_policy(approval=FOUR_EYES)
    pending = world.ask([policy])
    assert pending["status"]["phase"] == "Pending"
    assert world.kube.bindings == {}
    assert world.annotate(pending, BOB, [policy], **{"lapse.dev/approve": "looks fine"}) is None
    stored = world.reconcile(pending, [policy])
    assert stored["status"]["phase"] == "Active"
    assert [a["user"]["username"] for a in stored["status"]["approvals"]] == ["bob"]
    assert len(world.kube.bindings) == 1
    assert world.kube.reasons("fix") == [
        "AwaitingApproval",
        "ApprovalRecorded",
        "Approved",
        "Granted",
    ]


def test_an_approval_counts_while_the_policy_index_lags_behind_the_api(world: World) -> None:
    """After an API server restart kopf's policy watch can lag: the policy a pending request
    names is in the API but not in the index. Its approver is judged by it all the same."""
    policy = make_policy(approval=FOUR_EYES)
    pending = world.ask([policy])
    assert world.annotate(pending, BOB, [], **{"lapse.dev/approve": "looks fine"}) is None
    stored = world.reconcile(pending, [])
    assert stored["status"]["phase"] == "Active"
    assert [a["user"]["username"] for a in stored["status"]["approvals"]] == ["bob"]


def test_a_policy_gone_from_index_and_api_lets_nobody_approve(world: World) -> None:
    policy = make_policy(approval=FOUR_EYES)
    pending = world.ask([policy])
    del world.kube.owners[("AccessPolicy", None, policy.metadata.name)]
    refusal = world.annotate(pending, BOB, [], **{"lapse.dev/approve": "looks fine"})
    assert refusal == "bob is not an approver of any AccessPolicy."
    assert world.kube.bindings == {}


def test_the_requester_cannot_approve_their_own_request(world: World) -> None:
    policy = make_policy(approval={**FOUR_EYES, "approvers": {"groups": ["payments-devs"]}})
    pending = world.ask([policy])
    refusal = world.annotate(pending, ALICE, [policy], **{"lapse.dev/approve": "trust me"})
    assert refusal is not None and "alice" in refusal
    assert world.reconcile(pending, [policy])["status"]["phase"] == "Pending"
    assert world.kube.bindings == {}


def test_a_raw_approval_that_bypassed_the_webhook_counts_for_nothing(world: World) -> None:
    policy = make_policy(approval=FOUR_EYES)
    pending = world.ask([policy])
    pending["metadata"].setdefault("annotations", {})["lapse.dev/approve"] = "sneaked in"
    stored = world.reconcile(pending, [policy])
    assert stored["status"]["phase"] == "Pending"
    assert "UnverifiedAction" in world.kube.reasons("fix")
    assert world.kube.bindings == {}


def test_expiry_removes_the_binding_and_records_it(world: World) -> None:
    stored = world.ask([make_policy()])
    world.now[0] = NOW + timedelta(hours=2, seconds=1)
    key = GrantKey("AccessRequest", "payments", "fix", stored["metadata"]["uid"])
    world.run(world.grantor.expire(key, NOW + timedelta(hours=2)))
    ended = world.kube.owner("AccessRequest", "payments", "fix")
    assert ended["status"]["phase"] == "Expired"
    assert world.kube.bindings == {}
    # The end is recorded first; the API server's confirmation follows it, as a condition
    # (a clean one is no Event: one write fewer per grant).
    assert world.kube.reasons("fix")[-2:] == ["Granted", "Expired"]
    verified = [c for c in ended["status"]["conditions"] if c["type"] == "Verified"]
    assert verified and verified[0]["reason"] == "AccessGone", ended["status"]["conditions"]


def test_an_early_expiry_call_changes_nothing(world: World) -> None:
    stored = world.ask([make_policy()])
    world.now[0] = datetime(2030, 1, 2, 4, 0, tzinfo=UTC)
    key = GrantKey("AccessRequest", "payments", "fix", stored["metadata"]["uid"])
    world.run(world.grantor.expire(key, NOW))
    assert world.kube.owner("AccessRequest", "payments", "fix")["status"]["phase"] == "Active"
    assert len(world.kube.bindings) == 1


class ReaperClient:
    """The reaper's client: the same in-memory API, reached from the reaper's thread."""

    def __init__(self, kube: MemoryKube) -> None:
        self.kube = kube
        self.threads: list[str] = []

    async def delete_binding(self, ref: BindingRef) -> bool:
        self.threads.append(threading.current_thread().name)
        return await self.kube.delete_binding(ref)

    async def warm_revocations(self, connections: int) -> int:
        return connections

    async def close(self) -> None:
        pass


def test_an_expiry_is_deleted_from_the_reaper_thread_and_recorded_on_the_operator_loop() -> None:
    clients: list[ReaperClient] = []
    world = make_world(lambda kube: clients.append(ReaperClient(kube)) or clients[-1])
    grantor = world.grantor
    stored = world.ask([make_policy()])
    key = GrantKey("AccessRequest", "payments", "fix", stored["metadata"]["uid"])
    assert key in grantor.deadlines.handed

    async def scenario() -> None:
        # The fake clock wakes no one: it is past the expiry before the reaper looks.
        world.now[0] = NOW + timedelta(hours=2, seconds=1)
        grantor.deadlines.start_reaper()

        def recorded() -> bool:
            status = world.kube.owner("AccessRequest", "payments", "fix")["status"]
            return status["phase"] == "Expired" and not grantor._recording

        for _ in range(3000):
            if recorded():
                break
            await asyncio.sleep(0.01)
        await grantor.stop()

    world.run(scenario())
    (client,) = clients
    assert client.threads == ["lapse-reaper"]
    assert world.kube.bindings == {}
    assert world.kube.reasons("fix")[-2:] == ["Granted", "Expired"]
    assert key not in grantor.deadlines.handed and key not in grantor.deadlines.bound


def test_a_grant_something_continues_is_taken_back_from_the_reaper() -> None:
    clients: list[ReaperClient] = []
    world = make_world(lambda kube: clients.append(ReaperClient(kube)) or clients[-1])
    grantor = world.grantor
    stored = world.ask([make_policy()])
    key = GrantKey("AccessRequest", "payments", "fix", stored["metadata"]["uid"])
    grantor.deadlines.will_hand_over(key)
    assert key not in grantor.deadlines.handed
    # Its end reads the owner first, on the operator's loop, and deletes from there.
    world.now[0] = NOW + timedelta(hours=2, seconds=1)
    world.run(grantor.expire(key, NOW + timedelta(hours=2)))
    assert world.kube.bindings == {}
    assert clients == [], "the reaper never started, nor was it needed"
