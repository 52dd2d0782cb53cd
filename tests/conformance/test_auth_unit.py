"""Authentication and impersonation of the local API, through `auth` and a real RBAC
authorizer: who a request acts as, and which impersonations are refused with which words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

from kubeapi import auth, errors, rbac
from kubeapi.identity import Attributes, UserInfo

G = rbac.GROUP


def test_static_token_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text(
        'admin-token,admin,uid-admin,"system:masters"\n'
        'alice-token,alice,uid-alice,"devs,payments-devs"\n'
        "bob-token,bob,uid-bob\n"
    )
    authn = auth.Authenticator.from_token_file(path)
    alice = authn.authenticate({"Authorization": "Bearer alice-token"})
    assert alice == UserInfo(
        "alice", ("devs", "payments-devs", "system:authenticated"), "uid-alice"
    )
    assert authn.authenticate({"authorization": "bearer admin-token"}).is_admin
    assert authn.authenticate({"Authorization": "Bearer bob-token"}).groups == (
        "system:authenticated",
    )


def test_no_token_is_anonymous_and_a_wrong_token_is_unauthorized() -> None:
    authn = auth.Authenticator({"t": UserInfo("alice")})
    assert authn.authenticate({}) == UserInfo("system:anonymous", ("system:unauthenticated",))
    with pytest.raises(errors.ApiError) as caught:
        authn.authenticate({"Authorization": "Bearer nope"})
    assert caught.value.code == 401
    authn.add("u", UserInfo("bob"))
    assert authn.authenticate({"Authorization": "Bearer u"}).username == "bob"


class Store:
    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects

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


def impersonator_policy() -> list[dict[str, Any]]:
    role = {
        "kind": "ClusterRole",
        "metadata": {"name": "impersonate-alice"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["users"],
                "verbs": ["impersonate"],
                "resourceNames": ["alice"],
            },
            {
                "apiGroups": [""],
                "resources": ["groups"],
                "verbs": ["impersonate"],
                "resourceNames": ["devs"],
            },
        ],
    }
    bind = {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "carol-impersonates"},
        "roleRef": {"apiGroup": G, "kind": "ClusterRole", "name": "impersonate-alice"},
        "subjects": [{"kind": "User", "name": "carol"}],
    }
    return [*rbac.bootstrap_objects(), role, bind]


@pytest.fixture
def authorize() -> auth.Authorize:
    return rbac.Authorizer(Store(impersonator_policy()).list).authorize


ADMIN = UserInfo("admin", ("system:masters", "system:authenticated"))
BOB = UserInfo("bob", ("system:authenticated",))
CAROL = UserInfo("carol", ("system:authenticated",))


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


def test_without_headers_the_caller_acts_as_itself(authorize: auth.Authorize) -> None:
    assert auth.impersonate(BOB, headers(), authorize) is BOB


def test_admin_impersonates_user_and_repeated_groups(authorize: auth.Authorize) -> None:
    acting = auth.impersonate(
        ADMIN,
        headers(
            ("Impersonate-User", "alice"),
            ("Impersonate-Group", "devs"),
            ("Impersonate-Group", "payments-devs"),
            ("Impersonate-Uid", "u-1"),
            ("Impersonate-Extra-Reason", "incident"),
        ),
        authorize,
    )
    assert acting == UserInfo(
        "alice",
        ("devs", "payments-devs", "system:authenticated"),
        "u-1",
        (("reason", ("incident",)),),
    )


def test_service_account_gets_its_groups(authorize: auth.Authorize) -> None:
    acting = auth.impersonate(
        ADMIN, {"Impersonate-User": "system:serviceaccount:lapse:operator"}, authorize
    )
    assert acting.groups == (
        "system:serviceaccounts",
        "system:serviceaccounts:lapse",
        "system:authenticated",
    )


LIST_PODS = Attributes("list", "pods", "", "", "payments", path="/api/v1/namespaces/payments/pods")


def test_impersonation_is_refused_in_the_api_server_words(authorize: auth.Authorize) -> None:
    # v1.36 tries the constrained modes first: the first refusal names `impersonate-on`.
    with pytest.raises(errors.ApiError) as caught:
        auth.impersonate(BOB, {"Impersonate-User": "alice"}, authorize, LIST_PODS)
    assert caught.value.code == 403
    assert caught.value.message == (
        'pods is forbidden: User "bob" cannot impersonate-on:user-info:list resource "pods" in '
        'API group "" in the namespace "payments"'
    )
    with pytest.raises(errors.ApiError) as caught:
        auth.impersonate(BOB, {"Impersonate-User": "system:serviceaccount:ns:sa"}, authorize)
    assert caught.value.message == (
        'forbidden: User "bob" cannot impersonate-on:serviceaccount:get path "/"'
    )
    # A service account with groups is for legacy impersonation alone.
    with pytest.raises(errors.ApiError) as caught:
        auth.impersonate(
            BOB,
            headers(
                ("Impersonate-User", "system:serviceaccount:ns:sa"), ("Impersonate-Group", "g")
            ),
            authorize,
        )
    assert caught.value.message == (
        'serviceaccounts "sa" is forbidden: User "bob" cannot impersonate resource '
        '"serviceaccounts" in API group "" in the namespace "ns"'
    )


def test_impersonation_rights_are_checked_one_by_one(authorize: auth.Authorize) -> None:
    memory = auth.ModeMemory()
    acting = auth.impersonate(
        CAROL,
        headers(("Impersonate-User", "alice"), ("Impersonate-Group", "devs")),
        authorize,
        LIST_PODS,
        memory,
    )
    assert acting.username == "alice"
    # carol got through by the legacy verb: that mode is tried first from now on, and its
    # refusal is the answer.
    with pytest.raises(errors.ApiError) as caught:
        auth.impersonate(
            CAROL,
            headers(("Impersonate-User", "alice"), ("Impersonate-Group", "system:masters")),
            authorize,
            LIST_PODS,
            memory,
        )
    assert caught.value.message.startswith('groups "system:masters" is forbidden: User "carol"')
    with pytest.raises(errors.ApiError):
        auth.impersonate(CAROL, {"Impersonate-User": "bob"}, authorize, LIST_PODS, memory)
    with pytest.raises(errors.ApiError) as caught:
        auth.impersonate(
            CAROL,
            headers(("Impersonate-User", "alice"), ("Impersonate-Uid", "x")),
            authorize,
            LIST_PODS,
            memory,
        )
    assert 'uids.authentication.k8s.io "x" is forbidden' in caught.value.message
    # Without that memory the first mode tried refuses first.
    with pytest.raises(errors.ApiError) as caught:
        auth.impersonate(
            CAROL, headers(("Impersonate-User", "alice"), ("Impersonate-Uid", "x")), authorize
        )
    assert "impersonate-on:user-info:get" in caught.value.message


def test_groups_without_a_user_are_an_error(authorize: auth.Authorize) -> None:
    with pytest.raises(errors.ApiError) as caught:
        auth.impersonate(ADMIN, {"Impersonate-Group": "devs"}, authorize)
    assert caught.value.code == 400
    assert caught.value.message == (
        'requested &user.DefaultInfo{Name:"", UID:"", Groups:[]string{"devs"}, '
        "Extra:map[string][]string(nil)} without impersonating a user name"
    )
    with pytest.raises(errors.ApiError) as caught:
        auth.impersonate(
            ADMIN, headers(("Impersonate-Uid", "u"), ("Impersonate-Extra-A%2Fb", "v")), authorize
        )
    assert caught.value.message == (
        'requested &user.DefaultInfo{Name:"", UID:"u", Groups:[]string(nil), '
        'Extra:map[string][]string{"a/b":[]string{"v"}}} without impersonating a user name'
    )
