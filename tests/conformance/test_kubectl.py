"""Real kubectl (1.37) against the cluster: apply, get, patch, delete, explain, auth."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.cluster import Cluster, kubectl_binary, write_token_kubeconfig
from tests.conformance.conftest import GROUP, VERSION, wait_for

ROLEBINDING = """
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: readers
  labels: {{team: {team}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}
"""

WIDGET = """
apiVersion: {group}/{version}
kind: Widget
metadata:
  name: applied
spec: {{size: {size}, color: {color}}}
"""


def get_json(cluster: Cluster, *args: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
    return result


def test_apply_creates_then_updates_a_builtin(cluster: Cluster, namespace: str) -> None:
    created = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=ROLEBINDING.format(team="a", user="alice")
    )
    assert "rolebinding.rbac.authorization.k8s.io/readers created" in created.stdout
    updated = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=ROLEBINDING.format(team="b", user="bob")
    )
    assert "configured" in updated.stdout
    binding = get_json(cluster, "rolebinding", "readers", "-n", namespace)
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}
    ]
    meta = binding["metadata"]
    assert isinstance(meta, dict)
    assert meta["labels"] == {"team": "b"}
    assert "kubectl.kubernetes.io/last-applied-configuration" in meta["annotations"]
    unchanged = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=ROLEBINDING.format(team="b", user="bob")
    )
    assert "unchanged" in unchanged.stdout
    table = cluster.kubectl("get", "rolebindings", "-n", namespace).stdout
    assert table.splitlines()[0].split()[:2] == ["NAME", "ROLE"]
    assert "readers" in table and "ClusterRole/view" in table
    cluster.kubectl("delete", "rolebinding", "readers", "-n", namespace)
    missing = cluster.kubectl("get", "rolebinding", "readers", "-n", namespace, check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_apply_creates_then_updates_a_custom_object(
    cluster: Cluster, namespace: str, widgets: str
) -> None:
    manifest = WIDGET.format(group=GROUP, version=VERSION, size=1, color="red")
    assert "created" in cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest).stdout
    manifest = WIDGET.format(group=GROUP, version=VERSION, size=2, color="blue")
    assert (
        "configured" in cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest).stdout
    )
    widget = get_json(cluster, "widgets", "applied", "-n", namespace)
    assert widget["spec"] == {"size": 2, "color": "blue"}
    names = cluster.kubectl("get", "widgets", "-n", namespace, "-o", "name").stdout.split()
    assert names == [f"widget.{GROUP}/applied"]
    cluster.kubectl("delete", "-n", namespace, "-f", "-", input=manifest)
    assert cluster.kubectl("get", "widgets", "-n", namespace, "-o", "name").stdout == ""


def test_server_side_apply_owns_the_applied_fields(cluster: Cluster, namespace: str) -> None:
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: '1'}\n"
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=manifest)
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {b: '2'}\n"
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=manifest)
    assert get_json(cluster, "configmap", "ssa", "-n", namespace)["data"] == {"b": "2"}
    cluster.kubectl(
        "patch",
        "configmap",
        "ssa",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"data": {"other": "3"}}',
    )
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {b: '4'}\n"
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=manifest)
    # Fields of other managers stay; the applier's own dropped fields go.
    assert get_json(cluster, "configmap", "ssa", "-n", namespace)["data"] == {
        "b": "4",
        "other": "3",
    }


def test_patch_label_annotate_and_typed_create(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "typed", "-n", namespace, "--from-literal=k=v")
    cluster.kubectl("label", "configmap", "typed", "-n", namespace, "tier=web")
    cluster.kubectl("annotate", "configmap", "typed", "-n", namespace, "note=hi")
    cluster.kubectl(
        "patch",
        "configmap",
        "typed",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op": "add", "path": "/data/j", "value": "1"}]',
    )
    cluster.kubectl(
        "patch", "configmap", "typed", "-n", namespace, "--type=merge", "-p", '{"data": {"m": "2"}}'
    )
    cm = get_json(cluster, "configmap", "typed", "-n", namespace)
    assert cm["data"] == {"k": "v", "j": "1", "m": "2"}
    assert cluster.kubectl(
        "get", "cm", "-n", namespace, "-l", "tier=web", "-o", "name"
    ).stdout.split() == ["configmap/typed"]


def test_delete_waits_for_finalizers(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fin\n"
            "  finalizers: [lapse.dev/hold]\n"
        ),
    )
    cluster.kubectl("delete", "configmap", "fin", "-n", namespace, "--wait=false")
    assert get_json(cluster, "configmap", "fin", "-n", namespace)["metadata"]["deletionTimestamp"]
    waiting = subprocess.Popen(
        [kubectl_binary(), "delete", "configmap", "fin", "-n", namespace, "--timeout=60s"],
        env=cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        assert waiting.poll() is None
        cluster.kubectl(
            "patch",
            "configmap",
            "fin",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"metadata": {"finalizers": null}}',
        )
        assert waiting.wait(timeout=60) == 0
    finally:
        if waiting.poll() is None:
            waiting.kill()
        waiting.communicate()


def test_get_watch_prints_changes(cluster: Cluster, namespace: str) -> None:
    watcher = subprocess.Popen(
        [
            kubectl_binary(),
            "get",
            "configmaps",
            "-n",
            namespace,
            "--watch",
            "--output-watch-events",
            "--request-timeout=20s",
        ],
        env=cluster.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        cluster.kubectl("create", "configmap", "watched", "-n", namespace)
        lines: list[str] = []
        assert watcher.stdout is not None

        def saw_added() -> bool:
            lines.append(watcher.stdout.readline())  # type: ignore[union-attr]
            return any("ADDED" in line and "watched" in line for line in lines)

        wait_for(saw_added, timeout=30, interval=0)
    finally:
        watcher.kill()
        watcher.communicate()


def test_explain_and_wait_on_the_crd(cluster: Cluster, widgets: str) -> None:
    cluster.kubectl(
        "wait", "--for=condition=Established", f"crd/{widgets}.{GROUP}", "--timeout=30s"
    )
    explained = cluster.kubectl("explain", f"{widgets}.spec").stdout
    assert "Widget" in explained


def test_auth_whoami_and_can_i(cluster: Cluster, namespace: str) -> None:
    assert "system:masters" in cluster.kubectl("auth", "whoami").stdout
    denied = cluster.kubectl(
        "auth", "can-i", "list", "configmaps", "-n", namespace, as_user="nobody", check=False
    )
    assert denied.stdout.strip() == "no"
    cluster.kubectl(
        "create",
        "rolebinding",
        "nobody-view",
        "-n",
        namespace,
        "--clusterrole=view",
        "--user=nobody",
    )
    allowed = cluster.kubectl(
        "auth", "can-i", "list", "configmaps", "-n", namespace, as_user="nobody"
    )
    assert allowed.stdout.strip() == "yes"


def test_apply_of_an_unknown_kind_says_no_matches(cluster: Cluster, namespace: str) -> None:
    result = cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        check=False,
        input="apiVersion: nowhere.lapse.dev/v1\nkind: Ghost\nmetadata: {name: boo}\n",
    )
    assert result.returncode != 0
    assert 'no matches for kind "Ghost" in version "nowhere.lapse.dev/v1"' in result.stderr


def test_service_account_token_authenticates_as_the_account(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl("create", "serviceaccount", "robot", "-n", namespace)
    token = cluster.kubectl("create", "token", "robot", "-n", namespace).stdout.strip()
    # The token alone: `--token` beside an admin's client certificate would be ignored.
    robot = tmp_path / "robot.kubeconfig"
    write_token_kubeconfig(robot, cluster.kubeconfig, token, "robot", namespace)
    whoami = cluster.kubectl("auth", "whoami", f"--kubeconfig={robot}", "-o", "json")
    info = json.loads(whoami.stdout)["status"]["userInfo"]
    assert info["username"] == f"system:serviceaccount:{namespace}:robot"
    assert f"system:serviceaccounts:{namespace}" in info["groups"]
    denied = cluster.kubectl("get", "configmaps", f"--kubeconfig={robot}", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr


def test_a_token_for_less_than_ten_minutes_is_invalid(cluster: Cluster, namespace: str) -> None:
    """kube-apiserver's TokenRequest floor, which Lapse relies on in refusing grantees' tokens
    rather than shortening them: no token can be made to lapse with a grant of seconds."""
    cluster.kubectl("create", "serviceaccount", "robot", "-n", namespace)
    short = cluster.kubectl(
        "create", "token", "robot", "-n", namespace, "--duration=599s", check=False
    )
    assert short.returncode != 0
    assert (
        "spec.expirationSeconds: Invalid value: 599: may not specify a duration less than "
        "10 minutes" in short.stderr
    ), short.stderr
    assert cluster.kubectl("create", "token", "robot", "-n", namespace, "--duration=600s").stdout


def test_exec_is_admitted_as_connect_then_refused_without_a_node(
    cluster: Cluster, namespace: str
) -> None:
    """No node runs the pod (the local API has none; on a cluster with nodes it selects a node
    label no node has, so it is never scheduled): the API server authorises and admits the
    exec, then answers that the pod has no host."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "idle"},
        "spec": {
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
            "nodeSelector": {"lapse.dev/no-such-node": "true"},
        },
    }
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(pod))
    tried = cluster.kubectl("exec", "idle", "-n", namespace, "--", "id", check=False)
    assert tried.returncode != 0
    assert "pod idle does not have a host assigned" in tried.stderr, tried.stderr
    stranger = cluster.kubectl(
        "exec", "--as=nobody", "idle", "-n", namespace, "--", "id", check=False
    )
    assert "forbidden" in stranger.stderr, stranger.stderr


def test_unknown_fields_of_builtins_are_refused_under_strict_validation(
    cluster: Cluster, namespace: str
) -> None:
    typo = ROLEBINDING.format(team="a", user="alice").replace("subjects:", "subject:")
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=typo, check=False)
    assert result.returncode != 0
    assert 'strict decoding error: unknown field "subject"' in result.stderr
    warned = cluster.kubectl("apply", "-n", namespace, "--validate=warn", "-f", "-", input=typo)
    assert 'unknown field "subject"' in warned.stderr
    stored = get_json(cluster, "rolebinding", "readers", "-n", namespace)
    assert "subject" not in stored and "subjects" not in stored


def test_a_disruption_budget_applies_and_is_found_by_its_short_name(
    cluster: Cluster, namespace: str
) -> None:
    """Lapse's installation ships a PodDisruptionBudget: `kubectl apply -k deploy/` must take
    it on the local API as kube-apiserver does."""
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "keep-one"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}},
    }
    applied = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(budget))
    assert "poddisruptionbudget.policy/keep-one created" in applied.stdout
    found = json.loads(
        cluster.kubectl("get", "pdb", "keep-one", "-n", namespace, "-o", "json").stdout
    )
    assert found["spec"]["minAvailable"] == 1
    cluster.kubectl("delete", "pdb", "keep-one", "-n", namespace)
