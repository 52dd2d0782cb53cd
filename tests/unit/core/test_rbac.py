"""Who can act as whom, from RBAC alone: each way an attacker would take, and what is not one."""

from __future__ import annotations

from typing import Any

from lapse.core.rbac import (
    Identity,
    Snapshot,
    Trusted,
    can_act_as,
    compute_exposure,
    compute_holdings,
    held_by,
    parse_binding,
    parse_role,
    role_key,
)

APPLIER = Identity("ServiceAccount", "argocd-application-controller", "argocd")


def rule(verbs: list[str], groups: list[str], resources: list[str], **extra: Any) -> dict[str, Any]:
    return {"verbs": verbs, "apiGroups": groups, "resources": resources, **extra}


EDIT = [
    rule(["impersonate"], [""], ["serviceaccounts"]),
    rule(["create", "update"], [""], ["pods", "pods/exec", "pods/attach"]),
    rule(["create"], [""], ["serviceaccounts/token"]),
    rule(["get", "list", "watch"], [""], ["secrets", "pods"]),
    rule(["create", "update"], ["apps"], ["deployments"]),
]
ADMIN = [rule(["*"], ["*"], ["*"])]


def snapshot(roles: dict[str, list[dict[str, Any]]], bindings: list[dict[str, Any]]) -> Snapshot:
    records = {}
    for key, rules in roles.items():
        kind, _, rest = key.partition("/")
        namespace, _, name = rest.rpartition("/")
        body = {"metadata": {"name": name, "namespace": namespace or None}, "rules": rules}
        record = parse_role(kind, body)
        records[role_key(kind, name, namespace or None)] = record
    return Snapshot(records, [parse_binding(b["kind"], b) for b in bindings])


def binding(
    kind: str, name: str, role: str, subjects: list[dict[str, str]], namespace: str | None = None
) -> dict[str, Any]:
    role_kind, _, role_name = role.partition("/")
    return {
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"kind": role_kind, "name": role_name},
        "subjects": subjects,
    }


def user(name: str) -> dict[str, str]:
    return {"kind": "User", "name": name}


def ways(paths: list[Any]) -> list[str]:
    return [p.describe() for p in paths]


def test_edit_in_the_applier_namespace_is_every_way_in() -> None:
    found = compute_exposure(
        snapshot(
            {"ClusterRole/edit": EDIT},
            [binding("RoleBinding", "alice-edit", "ClusterRole/edit", [user("alice")], "argocd")],
        ),
        APPLIER,
        Trusted(),
    )
    assert {p.way for p in found} == {
        "impersonate it",
        "mint tokens for it",
        "read its token Secrets in argocd",
        "run pods as it in argocd",
        "exec into pods that run as it in argocd",
    }
    assert all(p.through == "RoleBinding argocd/alice-edit (ClusterRole edit)" for p in found)
    assert can_act_as(found, "alice", [])
    assert not can_act_as(found, "bob", [])


def test_edit_elsewhere_is_no_way_in() -> None:
    found = compute_exposure(
        snapshot(
            {"ClusterRole/edit": EDIT},
            [binding("RoleBinding", "alice-edit", "ClusterRole/edit", [user("alice")], "shop")],
        ),
        APPLIER,
        Trusted(),
    )
    assert found == []


def test_administrators_control_plane_and_the_account_itself_are_not_named() -> None:
    found = compute_exposure(
        snapshot(
            {"ClusterRole/cluster-admin": ADMIN, "ClusterRole/edit": EDIT},
            [
                binding("ClusterRoleBinding", "root", "ClusterRole/cluster-admin", [user("root")]),
                binding(
                    "ClusterRoleBinding",
                    "kcm",
                    "ClusterRole/edit",
                    [
                        user("system:kube-controller-manager"),
                        {"kind": "ServiceAccount", "name": "rs", "namespace": "kube-system"},
                        {"kind": "ServiceAccount", "name": "lapse", "namespace": "lapse-system"},
                        {"kind": "ServiceAccount", "name": APPLIER.name, "namespace": "argocd"},
                    ],
                ),
            ],
        ),
        APPLIER,
        Trusted(usernames=frozenset({"system:serviceaccount:lapse-system:lapse"})),
    )
    assert found == []


def test_resource_names_narrow_a_way_to_the_accounts_named() -> None:
    mint = [rule(["create"], [""], ["serviceaccounts/token"], resourceNames=["builder"])]
    state = snapshot(
        {"ClusterRole/mint-builder": mint},
        [binding("RoleBinding", "m", "ClusterRole/mint-builder", [user("carol")], "argocd")],
    )
    assert compute_exposure(state, APPLIER, Trusted()) == []
    builder = Identity("ServiceAccount", "builder", "argocd")
    assert ways(compute_exposure(state, builder, Trusted())) == [
        "User carol can mint tokens for it "
        "(through RoleBinding argocd/m (ClusterRole mint-builder))"
    ]


def test_constrained_impersonation_needs_both_verbs() -> None:
    mode = rule(["impersonate:serviceaccount"], ["authentication.k8s.io"], ["serviceaccounts"])
    target = rule(["impersonate-on:serviceaccount:create"], ["lapse.dev"], ["accessrequests"])
    only_mode = snapshot(
        {"ClusterRole/mode": [mode]},
        [binding("ClusterRoleBinding", "x", "ClusterRole/mode", [user("dave")])],
    )
    assert compute_exposure(only_mode, APPLIER, Trusted()) == []
    both = snapshot(
        {"ClusterRole/mode": [mode, target]},
        [binding("ClusterRoleBinding", "x", "ClusterRole/mode", [user("dave")])],
    )
    assert [p.way for p in compute_exposure(both, APPLIER, Trusted())] == [
        "impersonate it (constrained impersonation)"
    ]


def test_an_approver_group_is_impersonated_with_a_user() -> None:
    groups_only = rule(["impersonate"], [""], ["groups"], resourceNames=["sre-leads"])
    users = rule(["impersonate"], [""], ["users"])
    leads = Identity("Group", "sre-leads")
    half = snapshot(
        {"ClusterRole/g": [groups_only]},
        [binding("ClusterRoleBinding", "g", "ClusterRole/g", [user("erin")])],
    )
    assert compute_exposure(half, leads, Trusted()) == []
    whole = snapshot(
        {"ClusterRole/g": [groups_only, users]},
        [binding("ClusterRoleBinding", "g", "ClusterRole/g", [user("erin")])],
    )
    assert [p.way for p in compute_exposure(whole, leads, Trusted())] == [
        "impersonate a member of it"
    ]
    # Impersonating users in a namespace gives nothing: users are cluster-scoped.
    namespaced = snapshot(
        {"ClusterRole/u": [users]},
        [binding("RoleBinding", "u", "ClusterRole/u", [user("erin")], "argocd")],
    )
    assert compute_exposure(namespaced, Identity("User", "bob"), Trusted()) == []


def test_binding_oneself_to_a_role_that_reaches_it() -> None:
    rbac = "rbac.authorization.k8s.io"
    binder = [
        rule(["create"], [rbac], ["rolebindings"]),
        rule(["bind"], [rbac], ["clusterroles"], resourceNames=["edit"]),
    ]
    state = snapshot(
        {"ClusterRole/binder": binder, "ClusterRole/edit": EDIT},
        [binding("RoleBinding", "b", "ClusterRole/binder", [user("frank")], "argocd")],
    )
    found = compute_exposure(state, APPLIER, Trusted())
    assert "mint tokens for it" in {p.way for p in found}
    assert all("binding itself to ClusterRole edit" in p.through for p in found)
    # Without `bind`, RBAC lets a subject bind only what it holds already: no way in.
    no_bind = snapshot(
        {"ClusterRole/binder": binder[:1], "ClusterRole/edit": EDIT},
        [binding("RoleBinding", "b", "ClusterRole/binder", [user("frank")], "argocd")],
    )
    assert compute_exposure(no_bind, APPLIER, Trusted()) == []


def test_a_group_binding_names_the_group() -> None:
    state = snapshot(
        {"ClusterRole/edit": EDIT},
        [
            binding(
                "RoleBinding",
                "devs",
                "ClusterRole/edit",
                [{"kind": "Group", "name": "devs"}],
                "argocd",
            )
        ],
    )
    found = compute_exposure(state, APPLIER, Trusted())
    assert found and {p.actor.describe() for p in found} == {"Group devs"}
    assert can_act_as(found, "alice", ["devs"])


def test_an_administrator_by_grant_is_still_named() -> None:
    temporary = binding("ClusterRoleBinding", "bg", "ClusterRole/cluster-admin", [user("alice")])
    temporary["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "lapse"}
    state = snapshot({"ClusterRole/cluster-admin": ADMIN}, [temporary])
    assert "impersonate it" in {p.way for p in compute_exposure(state, APPLIER, Trusted())}


def test_a_role_held_many_times_over_is_held_once_per_namespace() -> None:
    """A user with hundreds of grants of one role holds its rules once in each namespace."""
    bindings = [
        binding("RoleBinding", f"grant-{i}", "ClusterRole/edit", [user("dev")], "team-a")
        for i in range(300)
    ]
    bindings.append(binding("RoleBinding", "grant-b", "ClusterRole/edit", [user("dev")], "team-b"))
    state = snapshot({"ClusterRole//edit": EDIT}, bindings)

    held = held_by(compute_holdings(state), "dev", [])

    assert [(h.scope, h.through) for h in held] == [
        *[("team-a", "RoleBinding team-a/grant-0 (ClusterRole edit)")] * len(EDIT),
        *[("team-b", "RoleBinding team-b/grant-b (ClusterRole edit)")] * len(EDIT),
    ]
