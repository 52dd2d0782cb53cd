"""The sweep against an API whose listings race with grants being made.

A fake API stands in for the cluster so the race is exact: the owners are listed before a
request exists, and its binding is there by the time the bindings are listed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta
from typing import Any, cast

from lapse.config import Settings
from lapse.core.bindings import build_binding, compute_binding_refs, format_time
from lapse.core.grants import GrantKey, compute_request_grant
from lapse.core.models import BindingRef, UserInfo
from lapse.core.owners import parse_role, parse_status
from lapse.deadlines import BINDING_EXPIRY
from lapse.grantor import Grantor
from lapse.kube import KubeClient
from lapse.sweeper import Sweeper
from tests.unit.builders import NOW, make_request

EXPIRES = NOW + timedelta(hours=1)


class RacingApi:
    """Owners listed before `request` existed; its binding made before bindings are listed."""

    def __init__(self, owners_listed: list[dict[str, Any]]) -> None:
        self.owners_listed = owners_listed
        self.owners: dict[str, dict[str, Any]] = {}
        self.bindings: list[dict[str, Any]] = []
        self.deleted: list[BindingRef] = []
        self.calls: list[str] = []
        self.patched: dict[str, dict[str, Any]] = {}

    def add(
        self,
        name: str,
        created: datetime,
        *,
        listed: bool,
        exists: bool = True,
        expires: datetime = EXPIRES,
    ) -> None:
        request = make_request(name=name)
        owner = {
            "apiVersion": "lapse.dev/v1alpha1",
            "kind": "AccessRequest",
            "metadata": {"name": name, "namespace": "payments", "uid": f"uid-{name}"},
            "spec": request.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
            "status": {},
        }
        grant = compute_request_grant(request, UserInfo(username="alice"), "p", expires)
        (ref,) = compute_binding_refs(grant)
        binding = build_binding(grant, ref)
        binding["kind"] = ref.kind
        binding["metadata"]["uid"] = f"binding-{name}"
        binding["metadata"]["creationTimestamp"] = format_time(created)
        owner["status"] = {
            "phase": "Active",
            "expiresAt": format_time(expires),
            "bindings": [{**ref.model_dump(exclude_none=True), "uid": f"binding-{name}"}],
        }
        if exists:
            self.owners[name] = owner
        if listed:
            self.owners_listed.append(owner)
        self.bindings.append(binding)

    async def list_owners(self, kind: str) -> list[dict[str, Any]]:
        return list(self.owners_listed) if kind == "AccessRequest" else []

    async def owner_pages(self, kind: str) -> AsyncIterator[list[dict[str, Any]]]:
        yield await self.list_owners(kind)

    async def list_bindings(self, selector: str) -> list[dict[str, Any]]:
        return list(self.bindings)

    async def binding_metadata_pages(self, selector: str) -> AsyncIterator[list[dict[str, Any]]]:
        yield [{"kind": b["kind"], "metadata": b["metadata"]} for b in self.bindings]

    async def get_owner(self, key: GrantKey, *, revoking: bool = False) -> dict[str, Any] | None:
        return self.owners.get(key.name)

    async def delete_binding(self, ref: BindingRef) -> bool:
        self.deleted.append(ref)
        self.calls.append("delete")
        await asyncio.sleep(0)
        return True

    async def patch_status(self, key: GrantKey, patch: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append("status")
        self.patched[key.name] = dict(patch)
        await asyncio.sleep(0)
        return {}

    async def post_event(self, *args: Any) -> None:
        return None


def sweep(api: RacingApi, now: datetime) -> int:
    grantor = Grantor(cast(KubeClient, api), Settings(), clock=lambda: now)
    return asyncio.run(Sweeper(grantor).sweep())


def test_binding_granted_after_the_owner_listing_is_kept() -> None:
    api = RacingApi([])
    # Granted a second after the sweep began: the owner listing cannot show it.
    api.add("fresh", NOW + timedelta(seconds=1), listed=False)
    assert sweep(api, NOW) == 0
    assert api.deleted == []


def test_binding_whose_owner_a_listing_missed_is_kept_when_the_owner_exists() -> None:
    # Clocks disagree: the binding's stamp looks older than the listing, but its owner is there.
    api = RacingApi([])
    api.add("skewed", NOW - timedelta(minutes=5), listed=False)
    assert sweep(api, NOW) == 0
    assert api.deleted == []


def test_binding_whose_owner_is_gone_is_removed() -> None:
    api = RacingApi([])
    api.add("listed", NOW - timedelta(minutes=5), listed=True)
    api.add("orphan", NOW - timedelta(minutes=5), listed=False, exists=False)
    assert sweep(api, NOW) == 1
    assert [ref.name for ref in api.deleted] == [api.bindings[1]["metadata"]["name"]]


def test_restart_ends_every_overdue_grant_deleting_all_bindings_first() -> None:
    api = RacingApi([])
    for i in range(40):
        api.add(f"overdue-{i}", NOW - timedelta(hours=2), listed=True, expires=NOW)
    api.add("current", NOW - timedelta(hours=2), listed=True)
    assert sweep(api, NOW + timedelta(seconds=1)) == 40
    assert sorted(api.patched) == sorted(f"overdue-{i}" for i in range(40))
    assert all(p["status"]["phase"] == "Expired" for p in api.patched.values())
    # Access ends first: no record is written before every overdue binding is gone.
    assert api.calls == ["delete"] * 40 + ["status"] * 40


def periodic(api: RacingApi, now: datetime, known: list[str]) -> Grantor:
    """A grantor that has the `known` grants in its scheduler, after one periodic sweep."""
    grantor = Grantor(cast(KubeClient, api), Settings(), clock=lambda: now)
    for name in known:
        grantor.scheduler.schedule(
            GrantKey("AccessRequest", "payments", name, f"uid-{name}"), EXPIRES
        )
    asyncio.run(Sweeper(grantor).sweep(full=False))
    return grantor


def test_periodic_sweep_keeps_grants_it_does_not_know_yet_and_removes_orphans() -> None:
    api = RacingApi([])
    api.add("known", NOW - timedelta(minutes=5), listed=False)
    api.add("unknown", NOW - timedelta(minutes=5), listed=False)
    api.add("orphan", NOW - timedelta(minutes=5), listed=False, exists=False)
    periodic(api, NOW, ["known"])
    assert [ref.name for ref in api.deleted] == [api.bindings[2]["metadata"]["name"]]
    assert api.patched == {}


def test_periodic_sweep_ends_a_known_grant_whose_binding_vanished() -> None:
    api = RacingApi([])
    api.add("vanished", NOW - timedelta(minutes=5), listed=False)
    api.bindings.clear()
    grantor = periodic(api, NOW, ["vanished"])
    assert api.patched["vanished"]["status"]["phase"] == "Revoked"
    assert api.patched["vanished"]["status"]["reason"] == "BindingDeleted"
    assert len(grantor.scheduler) == 0


def test_a_restart_deletes_each_binding_at_its_own_expiry_before_reading_its_owner() -> None:
    """After a restart thousands of owners are read before the scheduler knows them: a binding
    falling due meanwhile goes at the expiry it carries, with no read of its owner first."""
    api = RacingApi([])
    api.add("soon", NOW - timedelta(hours=1), listed=True, expires=NOW + timedelta(seconds=5))
    api.add("overdue", NOW - timedelta(hours=1), listed=True, expires=NOW)
    now = [NOW + timedelta(seconds=1)]
    grantor = Grantor(cast(KubeClient, api), Settings(), clock=lambda: now[0])

    async def start_up() -> None:
        removed = await Sweeper(grantor).remove_overdue()
        assert [b["metadata"]["name"] for b in removed] == [api.bindings[1]["metadata"]["name"]]
        key = GrantKey("AccessRequest", "payments", "soon", "uid-soon")
        assert grantor.scheduler.deadline(key, BINDING_EXPIRY) == NOW + timedelta(seconds=5)
        api.calls.clear()
        # An owner read now would come too late: the API must not be asked for it.
        api.owners.clear()
        now[0] = NOW + timedelta(seconds=5)
        await grantor.deadlines._binding_due(key, NOW + timedelta(seconds=5))
        assert api.calls == ["delete"]
        assert [ref.name for ref in api.deleted][-1] == api.bindings[0]["metadata"]["name"]

    asyncio.run(start_up())


def test_an_owner_read_at_start_up_takes_over_its_bindings_deadline() -> None:
    api = RacingApi([])
    api.add("soon", NOW - timedelta(hours=1), listed=True, expires=NOW + timedelta(seconds=5))
    grantor = Grantor(cast(KubeClient, api), Settings(), clock=lambda: NOW)
    key = GrantKey("AccessRequest", "payments", "soon", "uid-soon")

    async def start_up() -> None:
        await Sweeper(grantor).remove_overdue()
        assert grantor.scheduler.deadline(key, BINDING_EXPIRY) is not None
        # The sweep reads the owner: its own deadline (and its end's record) governs.
        await Sweeper(grantor).sweep()
        role = parse_role(api.owners["soon"])
        await grantor.resume(key, role, parse_status("AccessRequest", api.owners["soon"]))
        assert grantor.scheduler.deadline(key, BINDING_EXPIRY) is None
        assert grantor.scheduler.deadline(key) == NOW + timedelta(seconds=5)

    asyncio.run(start_up())


def sweep_at_due(seconds_after: float) -> RacingApi:
    """A periodic sweep `seconds_after` a known grant's expiry; its binding still listed."""
    api = RacingApi([])
    api.add("due", NOW - timedelta(hours=1), listed=False, expires=NOW)
    later = NOW + timedelta(seconds=seconds_after)
    grantor = Grantor(cast(KubeClient, api), Settings(), clock=lambda: later)
    key = GrantKey("AccessRequest", "payments", "due", "uid-due")
    grantor.scheduler.schedule(key, NOW)
    asyncio.run(Sweeper(grantor).sweep(full=False))
    return api


def test_a_sweep_leaves_a_binding_falling_due_this_moment_to_its_deadline() -> None:
    """The sweep lists a binding a moment before its deadline deletes it: it must not send a
    second delete in the middle of a wave. Left past the grace, the sweep deletes it."""
    api = sweep_at_due(0.2)
    assert api.deleted == []
    assert api.patched == {}
    api = sweep_at_due(30)
    assert [ref.name for ref in api.deleted] == [api.bindings[0]["metadata"]["name"]]
    assert api.patched["due"]["status"]["phase"] == "Expired"
