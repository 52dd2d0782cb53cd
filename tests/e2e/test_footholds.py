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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import ROOT, Cluster, write_token_kubeconfig
from tests.e2e.conftest import SAMPLES, Operator, Team, parse_time, wait_for

GRANT = "15s"
PAUSE = "registry.k8s.io/pause:3.10"
REFUSED_TOKEN = "Lapse refuses TokenRequests made with temporary access"
REFUSED_SECRET = "would hold a token that never expires"
REFUSED_POD = "Lapse refuses exec into such pods under a grant"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


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


def connectable_pod(team: Team, name: str, account: str, *, token: bool = True) -> dict[str, Any]:
    """A pod running as `account`, made by the admin before any grant: the API server's
    ServiceAccount admission mounts the account's token into it (`kube-api-access-*`) unless
    `token` is False."""
    pod = workload("Pod", name, account)
    if not token:
        pod["spec"]["automountServiceAccountToken"] = False
    team.cluster.kubectl("create", "-n", team.namespace, "-f", "-", input=json.dumps(pod))
    made = team.cluster.kubectl("get", "pod", name, "-n", team.namespace, "-o", "json")
    return dict(json.loads(made.stdout))


def exec_as_grantee(team: Team, pod: str, *command: str) -> Any:
    # Identity flags go before `--`: after it they are the command's own arguments.
    alice = (f"--as={team.user}", f"--as-group={team.group}")
    return team.cluster.kubectl(
        "exec", *alice, pod, "-n", team.namespace, "--", *command, check=False
    )


def admitted(tried: Any) -> bool:
    """Whether admission let an exec through. Where the pod's container does not run (no node,
    or not started yet) the connection itself fails after admission; that is not Lapse."""
    return "denied the request" not in tried.stderr and "Lapse" not in tried.stderr


def test_exec_into_a_pod_running_as_a_stronger_account_is_refused_by_default(
    team: Team, operator: Operator
) -> None:
    team.policy()
    account = privileged_account(team.cluster, team.namespace)
    app = connectable_pod(team, "app", account)
    assert any(v["name"].startswith("kube-api-access-") for v in app["spec"]["volumes"])
    connectable_pod(team, "plain", "default")
    connectable_pod(team, "sealed", account, token=False)
    grant(team, "refuse")
    tried = exec_as_grantee(team, "app", "cat", f"{TOKEN_DIR}/token")
    assert tried.returncode != 0 and not tried.stdout
    assert REFUSED_POD in tried.stderr, tried.stderr
    assert f"Pod {team.namespace}/app runs as ServiceAccount {team.namespace}/{account}" in (
        tried.stderr
    )
    # What the token would give that the grant (edit) does not: admin's RBAC rights.
    assert f"rolebindings.rbac.authorization.k8s.io in {team.namespace}" in tried.stderr
    event = team.wait_event("refuse", "FootholdRefused")
    assert event["type"] == "Warning" and f"{team.namespace}/{account}" in event["message"]
    line = operator.wait_for_audit(
        lambda r: (
            r.get("name") == "refuse"
            and r.get("namespace") == team.namespace
            and r.get("action") == "foothold-refused"
        )
    )
    assert REFUSED_POD in line["message"]
    assert operator.metrics().get('lapse_footholds_total{action="refused",resource="pods"}', 0) >= 1
    # A pod whose account can do no more than the grant, or that mounts no token: as before,
    # let through and recorded with the account it runs as.
    for pod in ("plain", "sealed"):
        let_through = exec_as_grantee(team, pod, "id")
        assert admitted(let_through), let_through.stderr
    recorded = wait_for(
        lambda: (lambda f: f if {"Pod/plain", "Pod/sealed"} <= set(f) else None)(
            footholds_of(team, "refuse")
        ),
        timeout=10,
        what="the exec records",
    )
    assert "Pod/app" not in recorded
    assert recorded["Pod/plain"]["serviceAccount"] == "default"
    assert recorded["Pod/sealed"]["serviceAccount"] == account
    assert all(f["connect"] == "exec" and f["action"] == "Report" for f in recorded.values())
    # Anyone without a grant is not Lapse's to judge: the admin's exec passes admission.
    own = team.cluster.kubectl("exec", "app", "-n", team.namespace, "--", "id", check=False)
    assert admitted(own), own.stderr


def test_report_lets_exec_into_a_stronger_pod_through_and_reports_the_account(
    team: Team,
) -> None:
    team.policy(footholds={"strongerPods": "Report"})
    account = privileged_account(team.cluster, team.namespace)
    # The pod exists before the grant: connecting is the foothold, not making it.
    connectable_pod(team, "app", account)
    grant(team, "shell")
    for command in (("cat", "/etc/hostname"), ("id",)):
        tried = exec_as_grantee(team, "app", *command)
        assert admitted(tried), tried.stderr
    recorded = wait_for(
        lambda: footholds_of(team, "shell").get("Pod/app"), timeout=10, what="the exec record"
    )
    assert recorded["connect"] == "exec" and recorded["serviceAccount"] == account
    assert recorded["action"] == "Report"
    assert any("rolebindings" in said for said in recorded["beyond"]), recorded
    assert len(footholds_of(team, "shell")) == 1, "one record per pod and kind of connection"
    ended(team, "shell")
    event = team.wait_event("shell", "FootholdsRemain")
    assert (
        f"exec into Pod {team.namespace}/app (could read the token of {account}, which can"
        in (event["message"])
    )
    assert "rotate the credentials" in event["message"]
    assert exists(team, "pod", "app"), "a pod connected to is reported, never removed"


def test_end_pods_ends_a_stronger_pod_connected_to_when_the_grant_ends(team: Team) -> None:
    team.policy(footholds={"strongerPods": "EndPods"})
    account = privileged_account(team.cluster, team.namespace)
    app = connectable_pod(team, "app", account)
    connectable_pod(team, "other", account)
    connectable_pod(team, "plain", "default")
    grant(team, "ending")
    for pod in ("app", "plain"):
        tried = exec_as_grantee(team, pod, "cat", f"{TOKEN_DIR}/token")
        assert admitted(tried), tried.stderr
    recorded = wait_for(
        lambda: (lambda f: f if {"Pod/app", "Pod/plain"} <= set(f) else None)(
            footholds_of(team, "ending")
        ),
        timeout=10,
        what="the exec records",
    )
    assert recorded["Pod/app"]["action"] == "Remove"
    assert recorded["Pod/app"]["uid"] == app["metadata"]["uid"]
    assert recorded["Pod/plain"]["action"] == "Report", "no stronger than the grant: reported"
    said = wait_for(
        lambda: [e["message"] for e in team.events("ending") if "will be ended" in e["message"]],
        timeout=10,
        what="the FootholdRecorded Event on Pod app",
    )
    assert f"exec into Pod {team.namespace}/app" in said[0]
    ended(team, "ending")
    wait_for(
        lambda: not exists(team, "pod", "app") or None, timeout=45, what="Lapse to end Pod app"
    )
    settled = footholds_of(team, "ending")
    assert settled["Pod/app"]["outcome"] == "Ended"
    assert settled["Pod/plain"]["outcome"] == "Reported"
    event = team.wait_event("ending", "FootholdsRemain")
    gone = "Pods connected to under the grant are gone, and the tokens bound to them with them"
    assert f"{gone}: exec into Pod {team.namespace}/app" in event["message"], event["message"]
    assert exists(team, "pod", "other"), "a pod nobody connected to was touched"
    assert exists(team, "pod", "plain"), "a pod no stronger than the grant was ended"


# On a cluster whose node runs pods: a container with a shell and `cat`, to read a token the
# way an attacker would. Lapse's own image is on the node wherever Lapse runs in pods there.
WORKER_IMAGE = next(
    c["image"]
    for doc in yaml.safe_load_all((ROOT / "deploy" / "base" / "deployment.yaml").read_text())
    if doc and doc.get("kind") == "Deployment"
    for c in doc["spec"]["template"]["spec"]["containers"]
)
# `sleep` as PID 1 ignores SIGTERM and would hold its pod for the whole grace period (30 s);
# the trap ends it at once, as a service that shuts down cleanly does.
WORKER_COMMAND = ["sh", "-c", 'trap "exit 0" TERM; sleep infinity & wait']


@pytest.fixture
def node(cluster: Cluster) -> None:
    """Skips a test where no node runs pods: the local API has none, nor a control plane alone."""
    if cluster.backend == "local":
        pytest.skip("needs a node that runs pods (the local API has none)")
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    if not any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for n in nodes
        for c in n.get("status", {}).get("conditions") or ()
    ):
        pytest.skip("needs a node that runs pods (this cluster has no Ready node)")


def worker(team: Team, account: str) -> dict[str, Any]:
    """A Deployment's running pod as `account`, with the token kube-apiserver mounted into it;
    skipped where the image is not on the node."""
    deployment = workload("Deployment", "worker", account)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container.update(image=WORKER_IMAGE, imagePullPolicy="Never", command=WORKER_COMMAND)
    team.cluster.kubectl(
        "create", "-n", team.namespace, "-f", "-", input=json.dumps(deployment)
    )  # fmt: skip
    return running_pod(team, "app=worker")


def running_pod(team: Team, selector: str, other_than: str = "") -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        listed = team.cluster.kubectl(
            "get", "pods", "-l", selector, "-n", team.namespace, "-o", "json"
        )  # fmt: skip
        for pod in json.loads(listed.stdout)["items"]:
            if pod["metadata"]["uid"] == other_than or pod["metadata"].get("deletionTimestamp"):
                continue
            for status in pod.get("status", {}).get("containerStatuses") or ():
                waiting = (status.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in ("ErrImageNeverPull", "ErrImagePull"):
                    pytest.skip(f"{WORKER_IMAGE} is not on the node (make image image-load)")
                if status.get("ready"):
                    return dict(pod)
        return None

    return wait_for(ready, timeout=90, interval=0.5, what=f"a running pod {selector}")


def can_i_with(team: Team, kubeconfig: Path, verb: str, resource: str) -> str:
    """What the API server answers the holder of a token: yes, no, or why it is not one."""
    asked = team.cluster.kubectl(
        "--kubeconfig", str(kubeconfig), "auth", "can-i", verb, resource, "-n", team.namespace,
        check=False,
    )  # fmt: skip
    return asked.stdout.strip() or asked.stderr.strip()


def test_a_token_read_under_end_pods_stops_working_when_the_grant_ends(
    node: None, team: Team, tmp_path: Path
) -> None:
    """On a real node: alice reads the token of a pod that runs as `deployer` (admin here),
    holds admin's rights with it during the grant, and loses them after it: Lapse ends the pod
    and kube-apiserver stops taking a token bound to a pod that is gone."""
    team.policy(footholds={"strongerPods": "EndPods"})
    account = privileged_account(team.cluster, team.namespace)
    pod = worker(team, account)
    name = pod["metadata"]["name"]
    team.ask("stolen", duration="20s")
    team.wait_phase("stolen", "Active")
    read = exec_as_grantee(team, name, "cat", f"{TOKEN_DIR}/token")
    assert read.returncode == 0 and read.stdout.count(".") == 2, read.stderr
    stolen = tmp_path / "stolen.kubeconfig"
    write_token_kubeconfig(stolen, team.cluster.kubeconfig, read.stdout.strip(), "t", "t")
    # The token gives what the grant (edit) does not.
    assert can_i_with(team, stolen, "create", "rolebindings") == "yes"
    assert not team.can_i("create", "rolebindings")
    body = ended(team, "stolen")
    end = parse_time(body["status"]["expiresAt"])

    def rejected() -> str | None:
        answer = can_i_with(team, stolen, "create", "rolebindings")
        return answer if answer != "yes" else None

    answer = wait_for(rejected, timeout=60, interval=0.5, what="the stolen token to be rejected")
    lag = (datetime.now(UTC) - end).total_seconds()
    print(f"\nthe token read under the grant was rejected {lag:.1f}s after the grant's end")
    assert "Unauthorized" in answer, answer
    settled = footholds_of(team, "stolen")[f"Pod/{name}"]
    assert settled["outcome"] == "Ended" and settled["uid"] == pod["metadata"]["uid"]
    # The Deployment goes on, in a new pod with a token of its own.
    fresh = running_pod(team, "app=worker", other_than=pod["metadata"]["uid"])
    assert fresh["metadata"]["uid"] != pod["metadata"]["uid"]


def test_a_token_cannot_be_read_from_a_stronger_pod_under_refuse(node: None, team: Team) -> None:
    """On a real node: the pod runs and its token is there to read (the admin reads it), but
    alice's exec under her grant never reaches the container."""
    team.policy()
    account = privileged_account(team.cluster, team.namespace)
    name = worker(team, account)["metadata"]["name"]
    grant(team, "refused")
    tried = exec_as_grantee(team, name, "cat", f"{TOKEN_DIR}/token")
    assert tried.returncode != 0 and not tried.stdout
    assert REFUSED_POD in tried.stderr, tried.stderr
    there = team.cluster.kubectl(
        "exec", name, "-n", team.namespace, "--", "cat", f"{TOKEN_DIR}/token"
    )
    assert there.stdout.count(".") == 2, "the admin reads the token: the pod was there to exec into"
    team.wait_event("refused", "FootholdRefused")
    assert f"Pod/{name}" not in footholds_of(team, "refused")
