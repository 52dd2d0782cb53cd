"""Impersonation as kube-apiserver v1.36 authorizes it, on the local API and on a real cluster
alike: legacy impersonation (the `impersonate` verb), constrained impersonation (KEP-5284:
`impersonate:<mode>` on whom and `impersonate-on:<mode>:<verb>` on what the request asks for),
and the refusals in the server's words. The impersonator is a ServiceAccount of the test's
namespace acting with its own token; its rights are `cf-…` ClusterRoles, bound cluster-wide or
in the namespace, deleted afterwards.

A real server remembers a successful impersonation for ten seconds, so no test takes a right
away and expects a refusal at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes.client

from tests.cluster import Cluster
from tests.conformance.identities import (
    CREDENTIAL_ID,
    PAUSE,
    ClusterObjects,
    bind_in_namespace,
    call,
    create_token,
    node_names,
    service_account,
    token_kubeconfig,
    whoami,
)

AUTH = "authentication.k8s.io"
ALL_AUTHENTICATED = "system:authenticated"


def rule(verbs: list[str], resources: list[str], group: str = "", **more: Any) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs, **more}


def impersonator(cluster: Cluster, namespace: str, name: str = "impersonator") -> str:
    """A ServiceAccount of the namespace and a token of its own."""
    service_account(cluster, namespace, name)
    return create_token(cluster, namespace, name)


def as_user(user: str, *groups: str, uid: str = "", **extra: str) -> list[tuple[str, str]]:
    headers = [("Impersonate-User", user)]
    headers += [("Impersonate-Group", g) for g in groups]
    if uid:
        headers.append(("Impersonate-Uid", uid))
    headers += [(f"Impersonate-Extra-{k}", v) for k, v in extra.items()]
    return headers


def configmap(namespace: str) -> tuple[str, dict[str, Any]]:
    return f"/api/v1/namespaces/{namespace}/configmaps?dryRun=All", {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "made-as-someone"},
    }


def sa_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def sa_groups(namespace: str) -> list[str]:
    return ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", ALL_AUTHENTICATED]


def test_without_rights_the_constrained_refusal_comes_first(
    cluster: Cluster, cf_namespace: str
) -> None:
    token = impersonator(cluster, cf_namespace)
    me = sa_user(cf_namespace, "impersonator")
    path, body = configmap(cf_namespace)
    target = f'resource "configmaps" in API group "" in the namespace "{cf_namespace}"'
    for user, mode in (
        (sa_user(cf_namespace, "app"), "serviceaccount"),
        ("alice", "user-info"),
        ("system:node:cf-node", "arbitrary-node"),
    ):
        status, answer = call(cluster, token, "POST", path, body, as_user(user))
        assert status == 403
        assert answer["message"] == (
            f'configmaps is forbidden: User "{me}" cannot impersonate-on:{mode}:create {target}'
        )
        assert answer["details"] == {"kind": "configmaps"}
    # A group, uid or extra makes a service account a legacy-only impersonation.
    status, answer = call(
        cluster, token, "POST", path, body, as_user(sa_user(cf_namespace, "app"), "g")
    )
    assert answer["message"] == (
        f'serviceaccounts "app" is forbidden: User "{me}" cannot impersonate resource '
        f'"serviceaccounts" in API group "" in the namespace "{cf_namespace}"'
    )
    # A path that is no resource is checked by its path.
    status, answer = call(cluster, token, "GET", "/version", None, as_user("alice"))
    assert (status, answer["message"]) == (
        403,
        f'forbidden: User "{me}" cannot impersonate-on:user-info:get path "/version"',
    )
    # Groups without a user are a bad request, printed as Go prints the wanted user.
    status, answer = call(cluster, token, "GET", "/version", None, [("Impersonate-Group", "g1")])
    assert (status, answer["message"]) == (
        400,
        'requested &user.DefaultInfo{Name:"", UID:"", Groups:[]string{"g1"}, '
        "Extra:map[string][]string(nil)} without impersonating a user name",
    )


def test_legacy_impersonation_of_a_service_account(
    cluster: Cluster, cf_namespace: str, cluster_objects: ClusterObjects, tmp_path: Path
) -> None:
    token = impersonator(cluster, cf_namespace)
    role = cluster_objects.role([rule(["impersonate"], ["serviceaccounts"])])
    bind_in_namespace(cluster, cf_namespace, role, "impersonator")
    status, user = whoami(cluster, token, as_user(sa_user(cf_namespace, "app")))
    assert status == 201, user
    # No uid, no extra: the name and the groups every service account has.
    assert user == {"username": sa_user(cf_namespace, "app"), "groups": sa_groups(cf_namespace)}
    # kubectl --as does the same.
    config = token_kubeconfig(cluster, tmp_path, token, cf_namespace)
    who = cluster.kubectl(
        "--kubeconfig", str(config), "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}",
        f"--as={sa_user(cf_namespace, 'app')}",
    )  # fmt: skip
    assert who.stdout == sa_user(cf_namespace, "app")


def test_legacy_impersonation_forges_uid_and_extra(
    cluster: Cluster, cf_namespace: str, cluster_objects: ClusterObjects, tmp_path: Path
) -> None:
    token = impersonator(cluster, cf_namespace)
    role = cluster_objects.role(
        [
            rule(["impersonate"], ["users", "groups"]),
            rule(["impersonate"], ["uids", f"userextras/{CREDENTIAL_ID}"], AUTH),
        ]
    )
    cluster_objects.bind(role, cf_namespace, "impersonator")
    config = token_kubeconfig(cluster, tmp_path, token, cf_namespace)
    who = cluster.kubectl(
        "--kubeconfig", str(config), "auth", "whoami", "-o", "json", "--as=alice",
        "--as-group=approvers", "--as-uid=u1", f"--as-user-extra={CREDENTIAL_ID}=JTI=fake",
    )  # fmt: skip
    assert json.loads(who.stdout)["status"]["userInfo"] == {
        "username": "alice",
        "uid": "u1",
        "groups": ["approvers", ALL_AUTHENTICATED],
        "extra": {CREDENTIAL_ID: ["JTI=fake"]},
    }


def test_constrained_service_account_impersonation(
    cluster: Cluster, cf_namespace: str, cluster_objects: ClusterObjects
) -> None:
    token = impersonator(cluster, cf_namespace)
    me = sa_user(cf_namespace, "impersonator")
    service_account(cluster, cf_namespace, "app")
    bind_in_namespace(cluster, cf_namespace, "edit", "app")
    path, body = configmap(cf_namespace)
    target = sa_user(cf_namespace, "app")
    # The right to act on configmaps as a service account, but not yet to be this one.
    acting = cluster_objects.role([rule(["impersonate-on:serviceaccount:create"], ["configmaps"])])
    bind_in_namespace(cluster, cf_namespace, acting, "impersonator")
    status, answer = call(cluster, token, "POST", path, body, as_user(target))
    assert (status, answer["message"]) == (
        403,
        f'serviceaccounts.authentication.k8s.io "app" is forbidden: User "{me}" cannot '
        f'impersonate:serviceaccount resource "serviceaccounts" in API group "{AUTH}" in the '
        f'namespace "{cf_namespace}"',
    )
    assert answer["details"] == {"name": "app", "group": AUTH, "kind": "serviceaccounts"}
    # Now in the namespace of the account: the request goes through, as the account.
    being = cluster_objects.role([rule(["impersonate:serviceaccount"], ["serviceaccounts"], AUTH)])
    bind_in_namespace(cluster, cf_namespace, being, "impersonator")
    status, answer = call(cluster, token, "POST", path, body, as_user(target))
    assert status == 201, answer
    # Only for the verbs granted: a get is not a create.
    status, answer = call(
        cluster, token, "GET", f"/api/v1/namespaces/{cf_namespace}/configmaps/x", None,
        as_user(target),
    )  # fmt: skip
    assert (status, answer["message"]) == (
        403,
        f'configmaps "x" is forbidden: User "{me}" cannot impersonate-on:serviceaccount:get '
        f'resource "configmaps" in API group "" in the namespace "{cf_namespace}"',
    )
    # The identity is the one legacy impersonation gives (a cluster-scoped right for the
    # cluster-scoped SelfSubjectReview).
    reviews = cluster_objects.role(
        [rule(["impersonate-on:serviceaccount:create"], ["selfsubjectreviews"], AUTH)]
    )
    cluster_objects.bind(reviews, cf_namespace, "impersonator")
    status, user = whoami(cluster, token, as_user(target))
    assert status == 201, user
    assert user == {"username": target, "groups": sa_groups(cf_namespace)}


def test_constrained_user_info_impersonation(
    cluster: Cluster, cf_namespace: str, cluster_objects: ClusterObjects
) -> None:
    token = impersonator(cluster, cf_namespace)
    me = sa_user(cf_namespace, "impersonator")
    role = cluster_objects.role(
        [
            rule(["impersonate-on:user-info:create"], ["selfsubjectreviews"], AUTH),
            rule(["impersonate:user-info"], ["users"], AUTH, resourceNames=["alice"]),
            rule(["impersonate:user-info"], ["groups"], AUTH, resourceNames=["approvers"]),
        ]
    )
    cluster_objects.bind(role, cf_namespace, "impersonator")
    status, user = whoami(cluster, token, as_user("alice", "approvers"))
    assert status == 201, user
    assert user == {"username": "alice", "groups": ["approvers", ALL_AUTHENTICATED]}
    refusals = [
        (
            as_user("bob"),
            f'users.authentication.k8s.io "bob" is forbidden: User "{me}" cannot '
            f'impersonate:user-info resource "users" in API group "{AUTH}" at the cluster scope',
        ),
        (
            as_user("alice", "approvers", "admins"),
            f'groups.authentication.k8s.io "admins" is forbidden: User "{me}" cannot '
            f'impersonate:user-info resource "groups" in API group "{AUTH}" at the cluster scope',
        ),
        (
            as_user("alice", "system:masters"),
            f'groups.authentication.k8s.io "system:masters" is forbidden: User "{me}" cannot '
            f'impersonate:user-info resource "groups" in API group "{AUTH}" at the cluster '
            "scope: impersonating the system:masters group is not allowed",
        ),
        (
            as_user("alice", uid="u1"),
            f'uids.authentication.k8s.io "u1" is forbidden: User "{me}" cannot '
            f'impersonate:user-info resource "uids" in API group "{AUTH}" at the cluster scope',
        ),
    ]
    for headers, message in refusals:
        status, answer = whoami(cluster, token, headers)
        assert (status, answer["message"]) == (403, message), headers


def test_the_mode_that_last_let_a_caller_through_answers_first(
    cluster: Cluster, cf_namespace: str, cluster_objects: ClusterObjects
) -> None:
    """An impersonation no mode allows is refused in the words of the first mode tried, and
    the server tries first the mode that last let this caller through."""
    token = impersonator(cluster, cf_namespace)
    me = sa_user(cf_namespace, "impersonator")
    role = cluster_objects.role([rule(["impersonate"], ["users"])])
    cluster_objects.bind(role, cf_namespace, "impersonator")
    headers = as_user("alice", uid="u1")
    status, answer = whoami(cluster, token, headers)
    assert (status, answer["message"]) == (
        403,
        f'selfsubjectreviews.authentication.k8s.io is forbidden: User "{me}" cannot '
        f'impersonate-on:user-info:create resource "selfsubjectreviews" in API group "{AUTH}" '
        "at the cluster scope",
    )
    assert whoami(cluster, token, as_user("alice"))[0] == 201  # by the legacy verb
    status, answer = whoami(cluster, token, headers)
    assert (status, answer["message"]) == (
        403,
        f'uids.authentication.k8s.io "u1" is forbidden: User "{me}" cannot impersonate '
        f'resource "uids" in API group "{AUTH}" at the cluster scope',
    )


def test_a_service_account_impersonates_the_node_its_pod_runs_on(
    cluster: Cluster, cf_namespace: str, cluster_objects: ClusterObjects
) -> None:
    service_account(cluster, cf_namespace, "agent")
    nodes = node_names(cluster)
    node = nodes[0] if nodes else "cf-local-node"
    kubernetes.client.CoreV1Api(cluster.api()).create_namespaced_pod(
        cf_namespace,
        {
            "metadata": {"name": "agent"},
            "spec": {
                "serviceAccountName": "agent",
                "nodeName": node,
                "containers": [{"name": "c", "image": PAUSE, "imagePullPolicy": "Never"}],
            },
        },
    )
    # The pod's token names its node: the caller is associated with it.
    token = create_token(
        cluster, cf_namespace, "agent", "--bound-object-kind=Pod", "--bound-object-name=agent"
    )
    me = sa_user(cf_namespace, "agent")
    acting = cluster_objects.role(
        [rule(["impersonate-on:associated-node:create"], ["selfsubjectreviews"], AUTH)]
    )
    cluster_objects.bind(acting, cf_namespace, "agent")
    status, answer = whoami(cluster, token, as_user(f"system:node:{node}"))
    # The check is made for any node ("*"): which one is the token's business.
    assert (status, answer["message"]) == (
        403,
        f'nodes.authentication.k8s.io "*" is forbidden: User "{me}" cannot '
        f'impersonate:associated-node resource "nodes" in API group "{AUTH}" at the cluster scope',
    )
    being = cluster_objects.role([rule(["impersonate:associated-node"], ["nodes"], AUTH)])
    cluster_objects.bind(being, cf_namespace, "agent")
    status, user = whoami(cluster, token, as_user(f"system:node:{node}"))
    assert status == 201, user
    assert user == {
        "username": f"system:node:{node}",
        "groups": ["system:nodes", ALL_AUTHENTICATED],
    }
    # Another node is not its own: that takes impersonate-on:arbitrary-node.
    status, answer = whoami(cluster, token, as_user("system:node:cf-elsewhere"))
    assert (status, answer["message"]) == (
        403,
        f'selfsubjectreviews.authentication.k8s.io is forbidden: User "{me}" cannot '
        f'impersonate-on:arbitrary-node:create resource "selfsubjectreviews" in API group '
        f'"{AUTH}" at the cluster scope',
    )
