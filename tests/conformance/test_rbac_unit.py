"""RBAC evaluation of the local API, judged through `rbac.Authorizer` over plain objects.

These tables pin the behaviour Lapse's security tests rely on: what a binding to `edit` grants,
what it does not, how aggregation, subresources, resource names, service accounts and groups
count, and how escalation is refused.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from kubeapi import errors, rbac
from kubeapi.identity import Attributes, UserInfo

G = rbac.GROUP
ALICE = UserInfo("alice", ("devs", "system:authenticated"))
BOB = UserInfo("bob", ("system:authenticated",))
ADMIN = UserInfo("root", ("system:masters", "system:authenticated"))
SA = UserInfo(
    "system:serviceaccount:lapse:operator",
    ("system:serviceaccounts", "system:serviceaccounts:lapse", "system:authenticated"),
)


class Objects:
    """An in-memory stand-in for the store, the peer the authorizer reads from."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = list(objects)
        self.rv = 0
        for obj in self.objects:
            self._stamp(obj)

    def _stamp(self, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)

    def add(self, obj: dict[str, Any]) -> None:
        self._stamp(obj)
        self.objects.append(obj)

    def delete(self, kind: str, name: str, namespace: str = "") -> None:
        self.objects = [
            o
            for o in self.objects
            if not (
                o["kind"] == kind
                and o["metadata"]["name"] == name
                and o["metadata"].get("namespace", "") == namespace
            )
        ]

    def list(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        kind = {
            "roles": "Role",
            "rolebindings": "RoleBinding",
            "clusterroles": "ClusterRole",
            "clusterrolebindings": "ClusterRoleBinding",
        }[plural]
        return [
            o
            for o in self.objects
            if o["kind"] == kind
            and (namespace is None or o["metadata"].get("namespace", "") == namespace)
        ]


def role(name: str, namespace: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": rules,
    }


def clusterrole(name: str, rules: list[dict[str, Any]], **labels: str) -> dict[str, Any]:
    return {"kind": "ClusterRole", "metadata": {"name": name, "labels": labels}, "rules": rules}


def binding(
    name: str, role_kind: str, role_name: str, subjects: list[dict[str, Any]], namespace: str = ""
) -> dict[str, Any]:
    kind = "RoleBinding" if namespace else "ClusterRoleBinding"
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": G, "kind": role_kind, "name": role_name},
        "subjects": subjects,
    }


def user(name: str) -> dict[str, str]:
    return {"kind": "User", "apiGroup": G, "name": name}


def group(name: str) -> dict[str, str]:
    return {"kind": "Group", "apiGroup": G, "name": name}


def res(verb: str, resource: str, namespace: str = "", group: str = "", **kw: Any) -> Attributes:
    return Attributes(verb, resource, group, kw.get("sub", ""), namespace, kw.get("name", ""))


def url(verb: str, path: str) -> Attributes:
    return Attributes(verb, path=path, resource_request=False)


@pytest.fixture
def store() -> Objects:
    return Objects(rbac.bootstrap_objects())


@pytest.fixture
def authz(store: Objects) -> rbac.Authorizer:
    return rbac.Authorizer(store.list)


def test_without_a_binding_alice_may_do_nothing_in_a_namespace(authz: rbac.Authorizer) -> None:
    assert authz.authorize(ALICE, res("get", "pods", "payments")) == (False, "")
    assert authz.authorize(ALICE, res("list", "configmaps", "payments"))[0] is False


def test_every_authenticated_user_may_discover_and_review_itself(authz: rbac.Authorizer) -> None:
    assert authz.authorize(ALICE, url("get", "/apis/apps/v1"))[0]
    assert authz.authorize(ALICE, url("get", "/version"))[0]
    assert not authz.authorize(ALICE, url("get", "/metrics"))[0]
    review = res("create", "selfsubjectaccessreviews", group="authorization.k8s.io")
    assert authz.authorize(ALICE, review)[0]
    anonymous = UserInfo("system:anonymous", ("system:unauthenticated",))
    assert authz.authorize(anonymous, url("get", "/healthz"))[0]
    assert not authz.authorize(anonymous, url("get", "/api"))[0]


def test_rolebinding_to_edit_grants_in_its_namespace_only(
    store: Objects, authz: rbac.Authorizer
) -> None:
    store.add(binding("alice-edit", "ClusterRole", "edit", [user("alice")], "payments"))
    allowed, reason = authz.authorize(ALICE, res("get", "pods", "payments"))
    assert allowed
    assert reason == (
        'RBAC: allowed by RoleBinding "alice-edit/payments" of ClusterRole "edit" to User "alice"'
    )
    assert authz.authorize(ALICE, res("create", "deployments", "payments", "apps"))[0]
    assert authz.authorize(ALICE, res("get", "secrets", "payments"))[0]
    assert not authz.authorize(ALICE, res("get", "pods", "other"))[0]
    assert not authz.authorize(ALICE, res("list", "pods"))[0]  # all namespaces
    # edit may not grant access: no roles or rolebindings, no status, no quota.
    assert not authz.authorize(ALICE, res("create", "rolebindings", "payments", G))[0]
    assert not authz.authorize(ALICE, res("update", "pods", "payments", sub="status"))[0]
    assert not authz.authorize(ALICE, res("create", "resourcequotas", "payments"))[0]


def test_view_cannot_read_secrets_and_admin_can_grant(
    store: Objects, authz: rbac.Authorizer
) -> None:
    store.add(binding("v", "ClusterRole", "view", [user("alice")], "payments"))
    store.add(binding("a", "ClusterRole", "admin", [user("bob")], "payments"))
    assert authz.authorize(ALICE, res("list", "pods", "payments"))[0]
    assert authz.authorize(ALICE, res("get", "pods", "payments", sub="log"))[0]
    assert not authz.authorize(ALICE, res("get", "secrets", "payments"))[0]
    assert not authz.authorize(ALICE, res("delete", "pods", "payments"))[0]
    assert authz.authorize(BOB, res("create", "rolebindings", "payments", G))[0]
    assert authz.authorize(BOB, res("get", "secrets", "payments"))[0]


def test_deleting_the_binding_revokes_at_once(store: Objects, authz: rbac.Authorizer) -> None:
    store.add(binding("alice-edit", "ClusterRole", "edit", [user("alice")], "payments"))
    assert authz.authorize(ALICE, res("get", "pods", "payments"))[0]
    store.delete("RoleBinding", "alice-edit", "payments")
    assert not authz.authorize(ALICE, res("get", "pods", "payments"))[0]


def test_clusterrolebinding_grants_everywhere(store: Objects, authz: rbac.Authorizer) -> None:
    store.add(binding("devs-view", "ClusterRole", "view", [group("devs")]))
    allowed, reason = authz.authorize(ALICE, res("list", "pods"))
    assert allowed
    assert (
        reason
        == 'RBAC: allowed by ClusterRoleBinding "devs-view" of ClusterRole "view" to Group "devs"'
    )
    assert authz.authorize(ALICE, res("get", "pods", "anywhere"))[0]
    assert not authz.authorize(BOB, res("get", "pods", "anywhere"))[0]


def test_role_in_the_binding_namespace_and_resource_names(
    store: Objects, authz: rbac.Authorizer
) -> None:
    store.add(
        role(
            "one-cm",
            "payments",
            [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "verbs": ["get"],
                    "resourceNames": ["a"],
                }
            ],
        )
    )
    store.add(binding("b", "Role", "one-cm", [user("alice")], "payments"))
    assert authz.authorize(ALICE, res("get", "configmaps", "payments", name="a"))[0]
    assert not authz.authorize(ALICE, res("get", "configmaps", "payments", name="b"))[0]
    assert not authz.authorize(ALICE, res("list", "configmaps", "payments"))[0]


def test_wildcards_and_subresources() -> None:
    rule = rbac.Rule.from_dict(
        {"apiGroups": ["*"], "resources": ["*/status", "pods/log"], "verbs": ["get", "update"]}
    )
    assert rule.allows(res("update", "deployments", "ns", "apps", sub="status"))
    assert rule.allows(res("get", "pods", "ns", sub="log"))
    assert not rule.allows(res("get", "pods", "ns"))
    assert not rule.allows(res("get", "pods", "ns", sub="exec"))
    assert not rule.allows(res("delete", "pods", "ns", sub="log"))
    everything = rbac.Rule.from_dict({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})
    assert everything.allows(res("escalate", "roles", "ns", G))
    assert everything.allows(res("get", "pods", "ns", sub="log"))
    urls = rbac.Rule.from_dict({"nonResourceURLs": ["/healthz/*", "/metrics"], "verbs": ["get"]})
    assert urls.allows(url("get", "/healthz/etcd"))
    assert urls.allows(url("get", "/metrics"))
    assert not urls.allows(url("get", "/metricsx"))
    assert not urls.allows(url("post", "/metrics"))
    assert not urls.allows(res("get", "metrics"))


def test_service_account_subjects_and_groups(store: Objects, authz: rbac.Authorizer) -> None:
    store.add(
        binding(
            "op",
            "ClusterRole",
            "edit",
            [{"kind": "ServiceAccount", "name": "operator", "namespace": "lapse"}],
        )
    )
    allowed, reason = authz.authorize(SA, res("create", "configmaps", "x"))
    assert allowed
    assert reason.endswith('to ServiceAccount "operator/lapse"')
    # A ServiceAccount subject without a namespace means the binding's own namespace.
    store.add(
        binding(
            "local", "ClusterRole", "view", [{"kind": "ServiceAccount", "name": "reader"}], "team"
        )
    )
    reader = UserInfo("system:serviceaccount:team:reader", ("system:serviceaccounts",))
    assert authz.authorize(reader, res("get", "pods", "team"))[0]
    store.add(
        binding("all-sa", "ClusterRole", "view", [group("system:serviceaccounts:ops")], "ops")
    )
    ops_sa = UserInfo("system:serviceaccount:ops:x", ("system:serviceaccounts:ops",))
    assert authz.authorize(ops_sa, res("get", "pods", "ops"))[0]
    assert not authz.authorize(reader, res("get", "pods", "ops"))[0]


def test_missing_role_is_named_in_the_reason(store: Objects, authz: rbac.Authorizer) -> None:
    store.add(binding("b", "ClusterRole", "nope", [user("alice")], "payments"))
    allowed, reason = authz.authorize(ALICE, res("get", "pods", "payments"))
    assert not allowed
    assert reason == f'RBAC: clusterrole.{G} "nope" not found'


def test_admin_bypasses(authz: rbac.Authorizer) -> None:
    assert authz.authorize(ADMIN, res("delete", "namespaces", name="kube-system")) == (True, "")


def test_crd_roles_aggregate_into_edit_and_admin(store: Objects, authz: rbac.Authorizer) -> None:
    store.add(binding("e", "ClusterRole", "edit", [user("alice")], "payments"))
    store.add(binding("a", "ClusterRole", "admin", [user("bob")], "payments"))
    request = res("create", "accessrequests", "payments", "lapse.dev")
    assert not authz.authorize(ALICE, request)[0]
    store.add(
        clusterrole(
            "lapse-edit",
            [{"apiGroups": ["lapse.dev"], "resources": ["accessrequests"], "verbs": ["create"]}],
            **{"rbac.authorization.k8s.io/aggregate-to-edit": "true"},
        )
    )
    assert authz.authorize(ALICE, request)[0]
    assert authz.authorize(BOB, request)[0]  # admin takes in edit
    aggregated = rbac.aggregate(store.list("clusterroles", None))
    assert {"apiGroups": ["lapse.dev"], "resources": ["accessrequests"], "verbs": ["create"]} in (
        aggregated["admin"]
    )
    assert aggregated["view"] == next(
        o["rules"] for o in store.objects if o["metadata"]["name"] == "system:aggregate-to-view"
    )


def test_bootstrap_objects_are_labelled_as_on_a_real_cluster() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in rbac.bootstrap_objects()}
    for name in ("cluster-admin", "admin", "edit", "view", "system:discovery", "system:basic-user"):
        meta = objects[("ClusterRole", name)]["metadata"]
        assert meta["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults"
    assert objects[("ClusterRole", "edit")]["metadata"]["labels"][f"{G}/aggregate-to-admin"]
    assert objects[("ClusterRole", "view")]["aggregationRule"]
    crb = objects[("ClusterRoleBinding", "cluster-admin")]
    assert crb["subjects"] == [{"apiGroup": G, "kind": "Group", "name": "system:masters"}]


# -- escalation -------------------------------------------------------------------------


def test_edit_in_a_namespace_cannot_bind_cluster_admin(
    store: Objects, authz: rbac.Authorizer
) -> None:
    store.add(binding("a", "ClusterRole", "admin", [user("alice")], "payments"))
    grab = binding("grab", "ClusterRole", "cluster-admin", [user("alice")], "payments")
    with pytest.raises(errors.ApiError) as caught:
        authz.check_escalation(ALICE, "create", "rolebindings", grab)
    err = caught.value
    assert err.code == 403
    assert err.message.startswith(
        f'rolebindings.{G} "grab" is forbidden: user "alice" (groups=["devs" '
        '"system:authenticated"]) is attempting to grant RBAC permissions not currently held:\n'
    )
    assert '{APIGroups:["*"], Resources:["*"], Verbs:["*"]}' in err.message
    assert '{NonResourceURLs:["*"], Verbs:["*"]}' in err.message
    # Binding a role whose rules alice holds is fine.
    authz.check_escalation(
        ALICE,
        "create",
        "rolebindings",
        binding("ok", "ClusterRole", "view", [user("bob")], "payments"),
    )
    # The admin may do anything.
    authz.check_escalation(ADMIN, "create", "rolebindings", grab)


def test_bind_verb_allows_binding_a_role_one_lacks(store: Objects, authz: rbac.Authorizer) -> None:
    store.add(
        clusterrole(
            "lapse-binder",
            [
                {
                    "apiGroups": [G],
                    "resources": ["clusterroles"],
                    "verbs": ["bind"],
                    "resourceNames": ["edit"],
                }
            ],
        )
    )
    store.add(binding("op", "ClusterRole", "lapse-binder", [user("bob")]))
    authz.check_escalation(
        BOB, "create", "rolebindings", binding("g", "ClusterRole", "edit", [user("alice")], "x")
    )
    with pytest.raises(errors.ApiError):
        authz.check_escalation(
            BOB,
            "create",
            "rolebindings",
            binding("g", "ClusterRole", "admin", [user("alice")], "x"),
        )


def test_role_rules_must_be_held_unless_escalate(store: Objects, authz: rbac.Authorizer) -> None:
    store.add(binding("a", "ClusterRole", "admin", [user("alice")], "payments"))
    wanted = role(
        "r",
        "payments",
        [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
        ],
    )
    with pytest.raises(errors.ApiError) as caught:
        authz.check_escalation(ALICE, "create", "roles", wanted)
    message = caught.value.message
    assert message.endswith('\n{APIGroups:[""], Resources:["nodes"], Verbs:["get" "list"]}')
    store.add(
        clusterrole(
            "escalator", [{"apiGroups": [G], "resources": ["roles"], "verbs": ["escalate"]}]
        )
    )
    store.add(binding("esc", "ClusterRole", "escalator", [user("alice")], "payments"))
    authz.check_escalation(ALICE, "create", "roles", wanted)


def test_binding_a_missing_role_is_forbidden(authz: rbac.Authorizer) -> None:
    with pytest.raises(errors.ApiError) as caught:
        authz.check_escalation(
            ALICE, "create", "rolebindings", binding("b", "Role", "ghost", [user("x")], "payments")
        )
    assert caught.value.message == (
        f'rolebindings.{G} "b" is forbidden: roles.{G} "ghost" not found'
    )


# -- access reviews ------------------------------------------------------------------------


def test_subject_access_review_answers_for_the_named_user(
    store: Objects, authz: rbac.Authorizer
) -> None:
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": "alice",
            "groups": ["devs"],
            "resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "payments"},
        },
    }
    assert authz.review("SubjectAccessReview", body, ADMIN)["status"] == {"allowed": False}
    store.add(binding("b", "ClusterRole", "view", [group("devs")], "payments"))
    status = authz.review("SubjectAccessReview", body, ADMIN)["status"]
    assert status["allowed"] is True
    assert 'Group "devs"' in status["reason"]


def test_self_review_uses_the_requester(store: Objects, authz: rbac.Authorizer) -> None:
    body = {"spec": {"resourceAttributes": {"verb": "list", "resource": "pods", "namespace": "p"}}}
    assert not authz.review("SelfSubjectAccessReview", body, ALICE)["status"]["allowed"]
    store.add(binding("b", "ClusterRole", "view", [user("alice")], "p"))
    assert authz.review("SelfSubjectAccessReview", body, ALICE)["status"]["allowed"]
    nonres = {"spec": {"nonResourceAttributes": {"verb": "get", "path": "/api"}}}
    assert authz.review("SelfSubjectAccessReview", nonres, ALICE)["status"]["allowed"]


def test_review_validation_matches_the_api_server(authz: rbac.Authorizer) -> None:
    with pytest.raises(errors.ApiError) as caught:
        authz.review(
            "SubjectAccessReview", {"spec": {"resourceAttributes": {"verb": "get"}}}, ADMIN
        )
    assert caught.value.code == 422
    assert "at least one of user or group must be specified" in caught.value.message
    local = {
        "metadata": {"namespace": "payments"},
        "spec": {"user": "alice", "resourceAttributes": {"verb": "get", "namespace": "other"}},
    }
    with pytest.raises(errors.ApiError) as caught:
        authz.review("LocalSubjectAccessReview", local, ADMIN)
    assert "must match metadata.namespace" in caught.value.message
    with pytest.raises(errors.ApiError):
        authz.review("SelfSubjectAccessReview", {"spec": {}}, ALICE)


def test_rules_review_lists_what_the_user_holds(store: Objects, authz: rbac.Authorizer) -> None:
    store.add(binding("b", "ClusterRole", "view", [user("alice")], "payments"))
    status = authz.review("SelfSubjectRulesReview", {"spec": {"namespace": "payments"}}, ALICE)[
        "status"
    ]
    assert {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["namespaces"]} in (
        status["resourceRules"]
    )
    assert any("/apis/*" in r["nonResourceURLs"] for r in status["nonResourceRules"])
    assert status["incomplete"] is False
    elsewhere = authz.review("SelfSubjectRulesReview", {"spec": {"namespace": "x"}}, ALICE)
    assert not any("pods" in r["resources"] for r in elsewhere["status"]["resourceRules"])


def test_forbidden_message_matches_the_api_server() -> None:
    err = rbac.forbidden(ALICE, res("get", "pods", "payments", name="web", sub="log"))
    assert err.message == (
        'pods "web" is forbidden: User "alice" cannot get resource "pods/log" in API group "" '
        'in the namespace "payments"'
    )
    err = rbac.forbidden(ALICE, res("list", "rolebindings", group=G))
    assert err.message == (
        f'rolebindings.{G} is forbidden: User "alice" cannot list resource "rolebindings" in '
        f'API group "{G}" at the cluster scope'
    )
    assert rbac.forbidden(ALICE, url("get", "/metrics")).message == (
        'forbidden: User "alice" cannot get path "/metrics"'
    )


# -- speed ---------------------------------------------------------------------------------


def test_authorizing_stays_fast_with_ten_thousand_rolebindings(store: Objects) -> None:
    for i in range(10_000):
        store.add(binding(f"b{i}", "ClusterRole", "edit", [user(f"user-{i}")], f"ns-{i % 50}"))
    authz = rbac.Authorizer(store.list)
    authz.authorize(ALICE, res("get", "pods", "ns-1"))  # builds the indexes
    calls = 200
    started = time.perf_counter()
    for i in range(calls):
        authz.authorize(UserInfo(f"user-{i}"), res("get", "pods", f"ns-{i % 50}"))
    per_call = (time.perf_counter() - started) / calls
    # Generous: a rebuild per call would cost far more than this on any machine.
    assert per_call < 0.05, f"{per_call * 1000:.2f} ms per call"
