"""RBAC through the local API with real kubectl: what Lapse's tests use to prove that access was
really granted and really revoked."""

from __future__ import annotations

import json

import kubernetes.client
import pytest

from tests.cluster import Cluster

G = "rbac.authorization.k8s.io"


def can_i(
    cluster: Cluster, *args: str, as_user: str = "alice", groups: tuple[str, ...] = ()
) -> str:
    result = cluster.kubectl("auth", "can-i", *args, as_user=as_user, groups=groups, check=False)
    return result.stdout.strip()


def test_can_i_follows_a_binding_being_granted_and_revoked(
    cluster: Cluster, namespace: str
) -> None:
    assert can_i(cluster, "get", "pods", "-n", namespace) == "no"
    cluster.kubectl(
        "create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice", "-n", namespace
    )
    assert can_i(cluster, "get", "pods", "-n", namespace) == "yes"
    assert can_i(cluster, "create", "deployments.apps", "-n", namespace) == "yes"
    assert can_i(cluster, "get", "pods", "-n", "default") == "no"
    assert can_i(cluster, "create", "rolebindings", "-n", namespace) == "no"
    cluster.kubectl("delete", "rolebinding", "alice-edit", "-n", namespace)
    assert can_i(cluster, "get", "pods", "-n", namespace) == "no"


def test_alice_is_forbidden_with_the_api_server_message(cluster: Cluster, namespace: str) -> None:
    result = cluster.kubectl("get", "pods", "-n", namespace, as_user="alice", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        'Error from server (Forbidden): pods is forbidden: User "alice" cannot list resource '
        f'"pods" in API group "" in the namespace "{namespace}"'
    )
    cluster.kubectl(
        "create", "rolebinding", "alice-view", "--clusterrole=view", "--user=alice", "-n", namespace
    )
    listed = cluster.kubectl("get", "pods", "-n", namespace, as_user="alice", check=False)
    assert listed.returncode == 0, listed.stderr
    secret = cluster.kubectl(
        "get", "secret", "nothing", "-n", namespace, as_user="alice", check=False
    )
    assert 'secrets "nothing" is forbidden: User "alice" cannot get resource "secrets"' in (
        secret.stderr
    )


def test_group_bindings_apply_to_impersonated_groups(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl(
        "create", "rolebinding", "devs-view", "--clusterrole=view", "--group=devs", "-n", namespace
    )
    assert can_i(cluster, "list", "pods", "-n", namespace, as_user="bob") == "no"
    assert can_i(cluster, "list", "pods", "-n", namespace, as_user="bob", groups=("devs",)) == "yes"
    assert (
        can_i(cluster, "delete", "pods", "-n", namespace, as_user="bob", groups=("devs",)) == "no"
    )


def test_service_account_subjects(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl(
        "create",
        "rolebinding",
        "sa-edit",
        "--clusterrole=edit",
        f"--serviceaccount={namespace}:worker",
        "-n",
        namespace,
    )
    sa = f"system:serviceaccount:{namespace}:worker"
    assert can_i(cluster, "create", "configmaps", "-n", namespace, as_user=sa) == "yes"
    other = f"system:serviceaccount:{namespace}:other"
    assert can_i(cluster, "create", "configmaps", "-n", namespace, as_user=other) == "no"


def test_escalation_is_refused_with_the_api_server_message(
    cluster: Cluster, namespace: str
) -> None:
    cluster.kubectl(
        "create",
        "rolebinding",
        "alice-admin",
        "--clusterrole=admin",
        "--user=alice",
        "-n",
        namespace,
    )
    grab = cluster.kubectl(
        "create",
        "rolebinding",
        "grab",
        "--clusterrole=cluster-admin",
        "--user=alice",
        "-n",
        namespace,
        as_user="alice",
        check=False,
    )
    assert grab.returncode == 1
    assert (
        f'rolebindings.{G} "grab" is forbidden: user "alice" (groups=["system:authenticated"]) '
        "is attempting to grant RBAC permissions not currently held:"
    ) in grab.stderr
    assert '{APIGroups:["*"], Resources:["*"], Verbs:["*"]}' in grab.stderr
    # Within what she holds, alice (admin of the namespace) may grant.
    ok = cluster.kubectl(
        "create",
        "rolebinding",
        "bob-view",
        "--clusterrole=view",
        "--user=bob",
        "-n",
        namespace,
        as_user="alice",
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    # With edit only, alice may not even create bindings.
    cluster.kubectl(
        "create", "rolebinding", "carol-edit", "--clusterrole=edit", "--user=carol", "-n", namespace
    )
    denied = cluster.kubectl(
        "create",
        "rolebinding",
        "x",
        "--clusterrole=view",
        "--user=dave",
        "-n",
        namespace,
        as_user="carol",
        check=False,
    )
    assert f'User "carol" cannot create resource "rolebindings" in API group "{G}"' in (
        denied.stderr
    )


def test_subject_access_review_answers_for_any_user(cluster: Cluster, namespace: str) -> None:
    authz = kubernetes.client.AuthorizationV1Api(cluster.api())
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": "alice",
            "groups": ["payments-devs"],
            "resourceAttributes": {
                "verb": "update",
                "resource": "configmaps",
                "namespace": namespace,
            },
        },
    }
    assert authz.create_subject_access_review(body).status.allowed is False
    cluster.kubectl(
        "create",
        "rolebinding",
        "pd-edit",
        "--clusterrole=edit",
        "--group=payments-devs",
        "-n",
        namespace,
    )
    status = authz.create_subject_access_review(body).status
    assert status.allowed is True
    assert status.reason == (
        f'RBAC: allowed by RoleBinding "pd-edit/{namespace}" of ClusterRole "edit" to Group '
        '"payments-devs"'
    )
    local = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "LocalSubjectAccessReview",
        "metadata": {"namespace": namespace},
        "spec": {
            "user": "alice",
            "groups": ["payments-devs"],
            "resourceAttributes": {"verb": "get", "resource": "secrets", "namespace": namespace},
        },
    }
    assert authz.create_namespaced_local_subject_access_review(namespace, local).status.allowed


def test_reviews_follow_every_write_to_a_namespace_s_roles_and_bindings(
    cluster: Cluster, namespace: str
) -> None:
    """Reviews answered between writes see each write: a binding's subjects replaced, a
    Role's rules edited, a binding deleted among others that stay."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.api())
    for i in range(5):
        cluster.kubectl(
            "create", "rolebinding", f"other-{i}", "--clusterrole=view", f"--user=u{i}",
            "-n", namespace,
        )  # fmt: skip
    cluster.kubectl(
        "create", "role", "cm-reader", "--verb=get", "--resource=configmaps", "-n", namespace
    )
    cluster.kubectl(
        "create", "rolebinding", "readers", "--role=cm-reader", "--user=alice", "-n", namespace
    )
    assert can_i(cluster, "get", "configmaps", "-n", namespace) == "yes"
    assert can_i(cluster, "get", "configmaps", "-n", namespace, as_user="bob") == "no"
    binding = rbac.read_namespaced_role_binding("readers", namespace)
    binding.subjects = [kubernetes.client.RbacV1Subject(kind="User", name="bob", api_group=G)]
    rbac.replace_namespaced_role_binding("readers", namespace, binding)
    assert can_i(cluster, "get", "configmaps", "-n", namespace) == "no"
    assert can_i(cluster, "get", "configmaps", "-n", namespace, as_user="bob") == "yes"
    assert can_i(cluster, "list", "configmaps", "-n", namespace, as_user="bob") == "no"
    role = rbac.read_namespaced_role("cm-reader", namespace)
    role.rules[0].verbs = ["get", "list"]
    rbac.replace_namespaced_role("cm-reader", namespace, role)
    assert can_i(cluster, "list", "configmaps", "-n", namespace, as_user="bob") == "yes"
    rbac.delete_namespaced_role("cm-reader", namespace)
    # The binding stays and names a missing role: the answer says so, as the real one does.
    assert can_i(cluster, "get", "configmaps", "-n", namespace, as_user="bob") == (
        'no - RBAC: role.rbac.authorization.k8s.io "cm-reader" not found'
    )
    rbac.delete_namespaced_role_binding("other-3", namespace)
    assert can_i(cluster, "get", "pods", "-n", namespace, as_user="u3") == "no"
    assert can_i(cluster, "get", "pods", "-n", namespace, as_user="u4") == "yes"


def test_can_i_list_shows_the_granted_rules(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl(
        "create", "rolebinding", "alice-view", "--clusterrole=view", "--user=alice", "-n", namespace
    )
    listed = cluster.kubectl("auth", "can-i", "--list", "-n", namespace, as_user="alice")
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:] if line[:1] != " "}
    assert "[get list watch]" in rows["pods"]
    assert "secrets" not in rows
    assert "selfsubjectaccessreviews.authorization.k8s.io" in rows


def test_crd_roles_aggregate_into_edit(cluster: Cluster, namespace: str) -> None:
    name = f"aggregate-{namespace}"
    role = {
        "apiVersion": f"{G}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {f"{G}/aggregate-to-edit": "true"}},
        "rules": [{"apiGroups": [""], "resources": ["limitranges"], "verbs": ["delete"]}],
    }
    cluster.kubectl(
        "create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice", "-n", namespace
    )
    resource = "limitranges"
    assert can_i(cluster, "delete", resource, "-n", namespace) == "no"
    cluster.kubectl("apply", "-f", "-", input=json.dumps(role))
    try:
        assert can_i(cluster, "delete", resource, "-n", namespace) == "yes"
        edit = json.loads(cluster.kubectl("get", "clusterrole", "edit", "-o", "json").stdout)
        assert role["rules"][0] in edit["rules"]
    finally:
        cluster.kubectl("delete", "clusterrole", name)
    assert can_i(cluster, "delete", resource, "-n", namespace) == "no"


@pytest.mark.parametrize("role", ["cluster-admin", "admin", "edit", "view", "system:basic-user"])
def test_bootstrap_roles_exist(cluster: Cluster, role: str) -> None:
    got = json.loads(cluster.kubectl("get", "clusterrole", role, "-o", "json").stdout)
    assert got["metadata"]["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults"
