"""Authentication and impersonation through the local API with real kubectl, using users'
own bearer tokens from the API server's static token file."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cluster import LocalServer, kubectl_binary

pytestmark = pytest.mark.localonly

TOKENS = {
    "alice": ("alice-token", "devs"),
    "bob": ("bob-token", ""),
    "carol": ("carol-token", "impersonators"),
}


class Users:
    """A local API with alice, bob and carol in its token file, and a kubeconfig for each."""

    def __init__(self, workdir: Path) -> None:
        token_file = workdir / "tokens.csv"
        token_file.write_text(
            "".join(
                f'{token},{user},uid-{user},"{groups}"\n'
                for user, (token, groups) in TOKENS.items()
            )
        )
        self.server = LocalServer(workdir / "server", ["--token-file", str(token_file)])
        self.workdir = workdir

    def start(self) -> None:
        self.server.start()
        admin = yaml.safe_load(self.server.kubeconfig.read_text())
        for user, (token, _) in {**TOKENS, "stranger": ("wrong-token", "")}.items():
            config = dict(admin)
            config["users"] = [{"name": user, "user": {"token": token}}]
            config["contexts"] = [
                {"name": "c", "context": {"cluster": admin["clusters"][0]["name"], "user": user}}
            ]
            config["current-context"] = "c"
            (self.workdir / f"{user}.kubeconfig").write_text(yaml.safe_dump(config))

    def kubectl(self, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        config = self.server.kubeconfig if user == "admin" else self.workdir / f"{user}.kubeconfig"
        env = dict(os.environ, KUBECONFIG=str(config), KUBECACHEDIR=str(self.workdir / "cache"))
        return subprocess.run(
            [kubectl_binary(), *args], capture_output=True, text=True, env=env, timeout=60
        )


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Users]:
    found = Users(tmp_path_factory.mktemp("auth"))
    found.start()
    try:
        found.kubectl("admin", "create", "namespace", "payments").check_returncode()
        yield found
    finally:
        found.server.stop()


def test_own_token_is_forbidden_until_a_binding_then_allowed(users: Users) -> None:
    denied = users.kubectl("alice", "get", "configmaps", "-n", "payments")
    assert denied.returncode == 1
    assert denied.stderr.strip() == (
        'Error from server (Forbidden): configmaps is forbidden: User "alice" cannot list '
        'resource "configmaps" in API group "" in the namespace "payments"'
    )
    users.kubectl(
        "admin",
        "create",
        "rolebinding",
        "devs-edit",
        "--clusterrole=edit",
        "--group=devs",
        "-n",
        "payments",
    ).check_returncode()
    try:
        allowed = users.kubectl("alice", "get", "configmaps", "-n", "payments")
        assert allowed.returncode == 0, allowed.stderr
        assert users.kubectl("alice", "auth", "can-i", "get", "pods", "-n", "payments").stdout == (
            "yes\n"
        )
        # bob is not in devs.
        assert users.kubectl("bob", "get", "configmaps", "-n", "payments").returncode == 1
    finally:
        users.kubectl("admin", "delete", "rolebinding", "devs-edit", "-n", "payments")
    assert users.kubectl("alice", "auth", "can-i", "get", "pods", "-n", "payments").stdout == "no\n"


def test_whoami_shows_the_token_user(users: Users) -> None:
    result = users.kubectl("alice", "auth", "whoami", "-o", "yaml")
    assert result.returncode == 0, result.stderr
    info = yaml.safe_load(result.stdout)["status"]["userInfo"]
    assert info["username"] == "alice"
    assert info["groups"] == ["devs", "system:authenticated"]


def test_unknown_token_is_unauthorized(users: Users) -> None:
    result = users.kubectl("stranger", "get", "pods", "-n", "payments")
    assert result.returncode == 1
    assert "error: You must be logged in to the server (Unauthorized)" in result.stderr


def test_impersonation_is_refused_to_a_user_without_the_right(users: Users) -> None:
    result = users.kubectl("bob", "get", "pods", "-n", "payments", "--as", "alice")
    assert result.returncode == 1
    # kube-apiserver v1.36 tries constrained impersonation first and answers with its refusal.
    assert result.stderr.strip() == (
        'Error from server (Forbidden): pods is forbidden: User "bob" cannot '
        'impersonate-on:user-info:list resource "pods" in API group "" in the namespace "payments"'
    )


def test_impersonation_rights_granted_by_rbac(users: Users) -> None:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "impersonate-alice"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["users"],
                "verbs": ["impersonate"],
                "resourceNames": ["alice"],
            },
        ],
    }
    apply = subprocess.run(
        [kubectl_binary(), "apply", "-f", "-"],
        input=yaml.safe_dump(role),
        capture_output=True,
        text=True,
        env=dict(
            os.environ,
            KUBECONFIG=str(users.server.kubeconfig),
            KUBECACHEDIR=str(users.workdir / "cache"),
        ),
    )
    assert apply.returncode == 0, apply.stderr
    users.kubectl(
        "admin",
        "create",
        "clusterrolebinding",
        "carol-impersonates",
        "--clusterrole=impersonate-alice",
        "--group=impersonators",
    ).check_returncode()
    who = users.kubectl("carol", "auth", "whoami", "--as", "alice", "-o", "yaml")
    assert who.returncode == 0, who.stderr
    assert yaml.safe_load(who.stdout)["status"]["userInfo"]["username"] == "alice"
    # carol may impersonate alice, but not the group devs.
    group = users.kubectl(
        "carol", "get", "pods", "-n", "payments", "--as", "alice", "--as-group", "devs"
    )
    assert 'groups "devs" is forbidden: User "carol" cannot impersonate resource "groups"' in (
        group.stderr
    )
    assert users.kubectl("carol", "auth", "whoami", "--as", "bob").returncode == 1


def test_admin_impersonation_carries_groups(users: Users) -> None:
    who = users.kubectl(
        "admin",
        "auth",
        "whoami",
        "--as",
        "dave",
        "--as-group",
        "sre-oncall",
        "--as-group",
        "devs",
        "-o",
        "yaml",
    )
    assert who.returncode == 0, who.stderr
    info = yaml.safe_load(who.stdout)["status"]["userInfo"]
    assert info["username"] == "dave"
    assert info["groups"] == ["sre-oncall", "devs", "system:authenticated"]
