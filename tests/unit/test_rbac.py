"""The RBAC index keeps every subject's rules binding by binding: the same as computing them
afresh, whatever order roles and bindings arrive, change and go in."""

from __future__ import annotations

import random
from typing import Any

from lapse.core.rbac import compute_holdings
from lapse.rbac import RbacIndex


def role(kind: str, name: str, verbs: list[str], namespace: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"{kind}-{namespace}-{name}"},
        "rules": [{"verbs": verbs, "apiGroups": [""], "resources": ["pods"]}],
    }


def binding(
    kind: str, name: str, role_kind: str, role_name: str, users: list[str], ns: str | None
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "uid": f"{kind}-{ns}-{name}"},
        "roleRef": {"kind": role_kind, "name": role_name},
        "subjects": [{"kind": "User", "name": u} for u in users],
    }


def same(index: RbacIndex) -> None:
    fresh = compute_holdings(index.snapshot())
    kept = index.holdings()
    assert {a: sorted(map(repr, h)) for a, h in kept.items()} == {
        a: sorted(map(repr, h)) for a, h in fresh.items()
    }


def test_kept_binding_by_binding_equals_computed_afresh() -> None:
    index = RbacIndex()
    chance = random.Random(7)
    users = ["alice", "bob", "carol"]
    for step in range(300):
        pick = chance.random()
        name = f"b{chance.randrange(20)}"
        ns = chance.choice(["a", "b"])
        if pick < 0.1:
            index.observe(
                "ClusterRole",
                role("ClusterRole", "edit", chance.sample(["get", "create", "delete"], 2)),
            )
        elif pick < 0.2:
            index.observe("Role", role("Role", "local", ["get"], ns), deleted=chance.random() < 0.3)
        elif pick < 0.8:
            role_kind, role_name = chance.choice([("ClusterRole", "edit"), ("Role", "local")])
            body = binding("RoleBinding", name, role_kind, role_name, chance.sample(users, 2), ns)
            index.observe("RoleBinding", body)
        else:
            index.observe(
                "RoleBinding", binding("RoleBinding", name, "Role", "x", [], ns), deleted=True
            )
        if step % 7 == 0:
            same(index)
    same(index)
