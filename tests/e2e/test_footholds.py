"""Temporary means temporary: nothing a grantee makes under a grant keeps their access after it.

Each test is an attacker with a short grant who tries, inside it, what RBAC allows them and
what would keep access after the binding is gone: a ServiceAccount token (short or long), a
token Secret that never expires, workloads running as a more privileged ServiceAccount, RBAC
objects of their own. After the grant ends, the test checks with the object or credential
itself: refused at the time, removed, or reported on the grant, as the policy says — and a
colleague's objects in the same namespace are never touched.
"""

from __future__ import annotations

import json
from typing import Any

from tests.cluster import Cluster
from tests.e2e.conftest import SAMPLES, Team, wait_for

GRANT = "15s"
PAUSE = "registry.k8s.io/pause:3.10"
REFUSED_TOKEN = "Lapse refuses TokenRequests made with temporary access"
REFUSED_SECRET = "would hold a token that never expires"


def privileged_account(cluster: Cluster, namespace: str) -> str:
    """A ServiceAccount holding `admin` in the namespace: the grantee's target."""
    cluster.kubectl("create", "serviceaccount", "deployer", "-n", namespace)
    cluster.kubectl(
        "create", "rolebinding", "deployer-admin", "--clusterrole=admin",
        f"--serviceaccount={namespace}:deployer", "-n", namespace,
    )  # fmt: skip
    return "deployer"


def pod_spec(account: str) -> dict[str, Any]:
    return {"serviceAccountName": account, "containers": [{"name": "c", "image": PAUSE}]}


def workload(kind: str, name: str, account: str) -> dict[str, Any]:
    """A manifest of `kind` whose pods run as `account`."""
    labels = {"app": name}
    template = {"metadata": {"labels": labels}, "spec": pod_spec(account)}
    if kind == "Pod":
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": pod_spec(account),
        }
    if kind == "Deployment":
        spec: dict[str, Any] = {"selector": {"matchLabels": labels}, "template": template}
        return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    job = {"template": {**template, "spec": {**pod_spec(account), "restartPolicy": "Never"}}}
    if kind == "Job":
        return {"apiVersion": "batch/v1", "kind": kind, "metadata": {"name": name}, "spec": job}
    cron = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": job}}
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name}, "spec": cron}


def make(team: Team, manifest: dict[str, Any], user: str | None = None) -> Any:
    return team.cluster.kubectl(
        "create", "-n", team.namespace, "-f", "-", input=json.dumps(manifest),
        as_user=user or team.user, groups=(team.group,), check=False,
    )  # fmt: skip


def exists(team: Team, kind: str, name: str) -> bool:
    found = team.cluster.kubectl("get", kind, name, "-n", team.namespace, check=False)
    return found.returncode == 0


def grant(team: Team, name: str, role: str = "edit") -> dict[str, Any]:
    team.ask(name, role=role, duration=GRANT)
    return team.wait_phase(name, "Active")


def ended(team: Team, name: str) -> dict[str, Any]:
    return team.wait_phase(name, "Expired", timeout=45)


def footholds_of(team: Team, name: str) -> dict[str, dict[str, Any]]:
    body = team.request(name)
    return {f"{f['kind']}/{f['name']}": f for f in body["status"].get("footholds") or []}


def test_tokens_and_token_secrets_are_refused_under_a_grant(team: Team) -> None:
    team.policy()
    account = privileged_account(team.cluster, team.namespace)
    grant(team, "tokens")
    short = team.kubectl("create", "token", account, "-n", team.namespace, check=False)
    assert short.returncode != 0 and REFUSED_TOKEN in short.stderr, short.stderr
    long = team.kubectl(
        "create", "token", account, "-n", team.namespace, "--duration=48h", check=False
    )
    assert long.returncode != 0 and REFUSED_TOKEN in long.stderr, long.stderr
    own = team.kubectl("create", "token", "default", "-n", team.namespace, check=False)
    assert own.returncode != 0 and REFUSED_TOKEN in own.stderr
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "forever",
            "annotations": {"kubernetes.io/service-account.name": account},
        },
        "type": "kubernetes.io/service-account-token",
    }
    made = make(team, secret)
    assert made.returncode != 0 and REFUSED_SECRET in made.stderr, made.stderr
    assert not exists(team, "secret", "forever")
    # An ordinary Secret is what `edit` is for: untouched.
    plain = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "config"}}
    assert make(team, plain).returncode == 0
    event = team.wait_event("tokens", "FootholdRefused")
    assert event["type"] == "Warning"
    # Anyone without a grant here is not slowed or stopped: the admin mints a token at once.
    assert team.cluster.kubectl("create", "token", account, "-n", team.namespace).stdout
    ended(team, "tokens")
    assert exists(team, "secret", "config")


def test_workloads_as_a_privileged_account_are_reported_by_default(team: Team) -> None:
    team.policy()
    account = privileged_account(team.cluster, team.namespace)
    # A workload that was there before the grant, running as the namespace's default account.
    team.cluster.kubectl(
        "create", "-n", team.namespace, "-f", "-",
        input=json.dumps(workload("Deployment", "legacy", "default")),
    )  # fmt: skip
    grant(team, "report")
    for kind, name in (("Deployment", "web"), ("CronJob", "nightly"), ("Pod", "shell")):
        made = make(team, workload(kind, name, account))
        assert made.returncode == 0, made.stderr
    # Switching an existing workload to the privileged account is a foothold too.
    switched = team.kubectl(
        "set", "serviceaccount", "deployment/legacy", account, "-n", team.namespace
    )
    assert switched.returncode == 0
    recorded = footholds_of(team, "report")
    assert recorded["Deployment/legacy"]["changed"] is True
    recorded.pop("Deployment/legacy")
    assert set(recorded) == {"Deployment/web", "CronJob/nightly", "Pod/shell"}
    assert {f["serviceAccount"] for f in recorded.values()} == {account}
    assert all(f["action"] == "Report" and f["uid"] for f in recorded.values())
    ended(team, "report")
    event = team.wait_event("report", "FootholdsRemain")
    assert event["type"] == "Warning"
    assert "Deployment" in event["message"] and f"runs as {account}" in event["message"]
    settled = footholds_of(team, "report")
    assert {f["outcome"] for f in settled.values()} == {"Reported"}
    assert exists(team, "deployment", "web") and exists(team, "cronjob", "nightly")
    assert not team.can_i("create", "deployments")
    explained = team.cluster.kubectl(
        "lapse", "explain", "report", "-n", team.namespace, as_user=team.user, groups=(team.group,)
    ).stdout
    assert "Made under it and still in place: Deployment" in explained, explained
    shown = team.cluster.kubectl(
        "lapse", "get", "report", "-n", team.namespace, as_user=team.user, groups=(team.group,)
    ).stdout
    assert "Made under the grant:" in shown and "Reported" in shown, shown


def test_workloads_are_removed_when_policy_says_remove_and_others_are_untouched(
    team: Team,
) -> None:
    team.policy(footholds={"workloads": "Remove"})
    account = privileged_account(team.cluster, team.namespace)
    # bob works here for good, outside Lapse; his Deployment must survive alice's grant.
    team.cluster.kubectl(
        "create", "rolebinding", "bob-edit", "--clusterrole=edit", "--user=bob",
        "-n", team.namespace,
    )  # fmt: skip
    grant(team, "remove")
    for kind, name in (
        ("Deployment", "web"),
        ("Job", "once"),
        ("Pod", "shell"),
        ("Deployment", "swap"),
    ):
        made = make(team, workload(kind, name, account))
        assert made.returncode == 0, made.stderr
    assert make(team, workload("Deployment", "bobs", account), user="bob").returncode == 0
    # bob takes over alice's Deployment `kept` (changes its spec): it is his too now, and stays.
    assert make(team, workload("Deployment", "kept", account)).returncode == 0
    team.cluster.kubectl(
        "patch", "deployment", "kept", "-n", team.namespace, "-p", '{"spec":{"replicas":2}}',
        as_user="bob", groups=(team.group,),
    )  # fmt: skip
    wait_for(
        lambda: footholds_of(team, "remove")["Deployment/kept"].get("adoptedBy") == "bob" or None,
        timeout=10,
        what="bob's change to be noted",
    )
    # alice changing what she made herself does not make it anyone else's.
    team.kubectl(
        "patch", "deployment", "web", "-n", team.namespace, "-p", '{"spec":{"replicas":3}}'
    )
    # An admin replaces `swap` with an object of their own under the same name.
    team.cluster.kubectl("delete", "deployment", "swap", "-n", team.namespace)
    team.cluster.kubectl(
        "create",
        "-n",
        team.namespace,
        "-f",
        "-",
        input=json.dumps(workload("Deployment", "swap", "default")),
    )
    assert "Deployment/bobs" not in footholds_of(team, "remove")
    ended(team, "remove")
    event = team.wait_event("remove", "FootholdsRemain")
    assert "Removed what was made under the grant: Deployment" in event["message"]
    assert "since changed by bob" in event["message"]
    wait_for(lambda: not exists(team, "deployment", "web") or None, timeout=15, what="web removed")
    assert not exists(team, "job", "once") or wait_for(
        lambda: not exists(team, "job", "once") or None, timeout=15, what="once removed"
    )
    settled = footholds_of(team, "remove")
    assert settled["Deployment/web"]["outcome"] == "Removed"
    assert settled["Pod/shell"]["outcome"] == "Removed"
    assert settled["Deployment/swap"]["outcome"] == "Changed"
    assert exists(team, "deployment", "swap"), "the admin's own object was touched"
    assert exists(team, "deployment", "bobs"), "a colleague's object was touched"
    assert settled["Deployment/kept"]["outcome"] == "Reported"
    assert exists(team, "deployment", "kept"), "an object a colleague changed was removed"


def rolebinding(name: str, user: str, role: str = "admin") -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
    }


def test_rbac_made_under_admin_is_removed_and_gives_no_way_back(team: Team) -> None:
    team.policy(roles=("admin",))
    team.cluster.kubectl(
        "create",
        "-n",
        team.namespace,
        "-f",
        "-",
        input=json.dumps(rolebinding("ops-view", "ops", "view")),
    )
    grant(team, "rbac", role="admin")
    backdoor = make(team, rolebinding("alice-forever", team.user))
    assert backdoor.returncode == 0, backdoor.stderr
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "mine"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    }
    assert make(team, role).returncode == 0
    # An existing binding (made by the admin before the grant) gains alice as a subject.
    patch = json.dumps(
        [{"op": "add", "path": "/subjects/-", "value": rolebinding("x", team.user)["subjects"][0]}]
    )
    widened = team.kubectl(
        "patch", "rolebinding", "ops-view", "-n", team.namespace, "--type=json", "-p", patch
    )
    assert widened.returncode == 0
    recorded = footholds_of(team, "rbac")
    assert recorded.pop("RoleBinding/ops-view")["changed"] is True
    assert set(recorded) == {"RoleBinding/alice-forever", "Role/mine"}
    ended(team, "rbac")
    event = team.wait_event("rbac", "FootholdsRemain")
    assert "RoleBinding" in event["message"] and "ops-view, changed" in event["message"]
    assert not exists(team, "rolebinding", "alice-forever")
    assert not exists(team, "role", "mine")
    assert not team.can_i("create", "deployments")
    assert not team.can_i("create", "rolebindings")


def test_breakglass_cluster_admin_cannot_leave_itself_a_clusterrolebinding(team: Team) -> None:
    sre = f"sre-{team.namespace.rsplit('-', 1)[-1]}"
    oncall = f"{team.namespace}-oncall"
    name = f"{team.namespace}-bg"
    policy = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": f"{team.namespace}-glass"},
        "spec": {
            "breakGlass": {
                "requesters": {"groups": [oncall]},
                "roles": [{"kind": "ClusterRole", "name": "cluster-admin"}],
                "maxDuration": "1h",
                "review": {"approvers": {"users": ["rita"]}},
            }
        },
    }
    cluster = team.cluster
    cluster.kubectl("apply", "-f", str(SAMPLES / "breakglass-clusterrole.yaml"))
    cluster.kubectl("apply", "-f", "-", input=json.dumps(policy))
    team.policies.append(policy["metadata"]["name"])
    cluster.kubectl(
        "create", "clusterrolebinding", f"{name}-oncall", "--clusterrole=lapse-breakglass",
        f"--group={oncall}",
    )  # fmt: skip
    glass = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "BreakGlass",
        "metadata": {"name": name},
        "spec": {
            "role": {"kind": "ClusterRole", "name": "cluster-admin"},
            "duration": GRANT,
            "reason": "Attack test",
            "incident": "INC-0",
        },
    }
    crb = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{name}-forever"},
        "subjects": [{"kind": "User", "name": sre, "apiGroup": "rbac.authorization.k8s.io"}],
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
    }
    try:
        cluster.kubectl("create", "-f", "-", input=json.dumps(glass), as_user=sre, groups=(oncall,))

        def active() -> dict[str, Any] | None:
            body = json.loads(cluster.kubectl("get", "breakglass", name, "-o", "json").stdout)
            return body if body.get("status", {}).get("phase") == "Active" else None

        wait_for(active, timeout=15, what="the break-glass to be active")
        made = cluster.kubectl(
            "create", "-f", "-", input=json.dumps(crb), as_user=sre, groups=(oncall,), check=False
        )
        assert made.returncode == 0, made.stderr
        token = cluster.kubectl(
            "create", "token", "default", "-n", team.namespace, as_user=sre, groups=(oncall,),
            check=False,
        )  # fmt: skip
        assert token.returncode != 0 and REFUSED_TOKEN in token.stderr

        def expired() -> dict[str, Any] | None:
            body = json.loads(cluster.kubectl("get", "breakglass", name, "-o", "json").stdout)
            return body if body.get("status", {}).get("phase") == "Expired" else None

        body = wait_for(expired, timeout=45, what="the break-glass to expire")
        wait_for(
            lambda: (
                cluster.kubectl(
                    "get", "clusterrolebinding", f"{name}-forever", check=False
                ).returncode
                != 0
                or None
            ),
            timeout=15,
            what="the ClusterRoleBinding made under the break-glass to be removed",
        )
        assert body["status"]["footholds"][0]["kind"] == "ClusterRoleBinding"
        can = cluster.kubectl("auth", "can-i", "*", "*", as_user=sre, groups=(oncall,), check=False)
        assert can.stdout.strip() == "no"
        # The review shows the reviewer what was made with the access before the verdict.
        reviewed = cluster.kubectl(
            "lapse", "review", name, "--verdict", "unjustified", "-m", "left a backdoor",
            as_user="rita", groups=("sre-leads",),
        )  # fmt: skip
        assert f"ClusterRoleBinding {name}-forever" in reviewed.stdout + reviewed.stderr
        assert "It gave: ClusterRole cluster-admin adds: do anything with *" in reviewed.stdout
    finally:
        cluster.kubectl("delete", "breakglass", name, "--ignore-not-found", check=False)
        cluster.kubectl(
            "delete", "clusterrolebinding", f"{name}-oncall", f"{name}-forever",
            "--ignore-not-found", check=False,
        )  # fmt: skip


def test_exec_into_a_pod_under_a_grant_is_reported_with_the_account_it_could_read(
    team: Team,
) -> None:
    team.policy()
    account = privileged_account(team.cluster, team.namespace)
    # The pod exists before the grant: connecting is the foothold, not making it.
    team.cluster.kubectl(
        "create", "-n", team.namespace, "-f", "-", input=json.dumps(workload("Pod", "app", account))
    )
    grant(team, "shell")
    # The pod's container never runs (no node, or an image no node can pull), so the
    # connection itself fails; admission has seen and let it through first.
    # Identity flags go before `--`: after it they are the command's own arguments.
    alice = (f"--as={team.user}", f"--as-group={team.group}")
    for command in (("cat", "/etc/hostname"), ("id",)):
        tried = team.cluster.kubectl(
            "exec", *alice, "app", "-n", team.namespace, "--", *command, check=False
        )
        assert "denied" not in tried.stderr, tried.stderr
        assert any(
            after in tried.stderr
            for after in ("does not have a host assigned", 'container not found ("c")')
        ), tried.stderr
    recorded = wait_for(
        lambda: footholds_of(team, "shell").get("Pod/app"), timeout=10, what="the exec record"
    )
    assert recorded["connect"] == "exec" and recorded["serviceAccount"] == account
    assert len(footholds_of(team, "shell")) == 1, "one record per pod and kind of connection"
    ended(team, "shell")
    event = team.wait_event("shell", "FootholdsRemain")
    assert (
        f"exec into Pod {team.namespace}/app (could read the token of {account})"
        in (event["message"])
    )
    assert exists(team, "pod", "app"), "a pod connected to is reported, never removed"
