"""Which writes under a grant are footholds, and what becomes of them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from lapse.core.footholds import (
    Connection,
    GranteeGrant,
    build_grantee_grant,
    compute_caller_keys,
    compute_covering_grant,
    compute_foothold_verdict,
    compute_object_path,
    compute_settle_message,
    describe_foothold,
)
from lapse.core.grants import GrantKey
from lapse.core.models import AccessPolicy, RoleRef, Subject, SubjectKind
from lapse.core.rbac import (
    RBAC_GROUP,
    Snapshot,
    compute_holdings,
    parse_binding,
    parse_role,
    role_key,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def grant(namespaces: tuple[str, ...] = ("pay",), minutes: int = 10) -> GranteeGrant:
    return GranteeGrant(
        key=GrantKey("AccessRequest", "pay", "r", "uid-r"),
        subject=Subject(kind=SubjectKind.USER, name="alice"),
        namespaces=namespaces,
        expires_at=NOW + timedelta(minutes=minutes),
        policy="p",
    )


def verdict(resource: str, body: dict[str, Any], held: GranteeGrant | None, **kw: Any) -> Any:
    policy = AccessPolicy.model_validate(
        {"metadata": {"name": "p"}, "spec": {"footholds": {"workloads": "Remove"}}}
    )
    return compute_foothold_verdict(
        username="alice", resource=resource, subresource=kw.get("subresource"), name="",
        namespace=kw.get("namespace", "pay"), body=body, grant=held, policies={"p": policy},
        now=NOW,
    )  # fmt: skip


def test_the_index_keeps_active_grants_by_subject_only() -> None:
    body = {
        "metadata": {"name": "r", "namespace": "pay", "uid": "u"},
        "status": {
            "phase": "Active",
            "expiresAt": "2026-12-04T12:10:00Z",
            "subject": {"kind": "User", "name": "alice"},
            "policy": "p",
        },
    }
    key, entry = build_grantee_grant("AccessRequest", body) or ("", None)
    assert key == "User:alice" and entry is not None and entry.namespaces == ("pay",)
    assert build_grantee_grant("AccessRequest", {**body, "status": {"phase": "Expired"}}) is None
    assert "User:alice" in compute_caller_keys("alice", ["devs"])
    assert "Group:devs" in compute_caller_keys("alice", ["devs"])
    assert "ServiceAccount:ns:sa" in compute_caller_keys("system:serviceaccount:ns:sa", [])


def test_covering_grant_by_namespace_scope_and_time() -> None:
    assert compute_covering_grant([grant()], "pay", NOW) is not None
    assert compute_covering_grant([grant()], "other", NOW) is None
    assert compute_covering_grant([grant()], None, NOW) is None  # cluster-scoped object
    assert compute_covering_grant([grant(())], None, NOW) is not None  # cluster-wide glass
    assert compute_covering_grant([grant(minutes=-1)], "pay", NOW) is None
    longest = compute_covering_grant([grant(minutes=5), grant(minutes=50)], "pay", NOW)
    assert longest is not None and longest.expires_at == NOW + timedelta(minutes=50)


def test_tokens_and_token_secrets_are_refused_others_pass() -> None:
    held = grant()
    assert verdict("serviceaccounts", {}, held, subresource="token").refusal
    token_secret = {"type": "kubernetes.io/service-account-token"}
    assert "never expires" in verdict("secrets", token_secret, held).refusal
    assert verdict("secrets", {"type": "Opaque"}, held) == verdict("configmaps", {}, held)
    assert verdict("serviceaccounts", {}, None, subresource="token").refusal is None


def test_workloads_and_rbac_are_recorded_with_their_account_and_action() -> None:
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "n", "uid": "u1"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"serviceAccountName": "sa"}}}}},
    }
    found = verdict("cronjobs", cron, grant()).foothold
    assert found.service_account == "sa" and found.uid == "u1" and found.action == "Remove"
    assert compute_object_path(found) == "/apis/batch/v1/namespaces/pay/cronjobs/n"
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "b"}}  # fmt: skip
    crb = verdict("clusterrolebindings", binding, grant(()), namespace=None).foothold
    assert crb.action == "Remove" and crb.service_account is None
    assert compute_object_path(crb) == "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/b"
    pod = verdict(
        "pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}, grant()
    ).foothold
    assert pod.service_account == "default"
    assert compute_object_path(pod) == "/api/v1/namespaces/pay/pods/p"


def test_the_end_of_grant_message_says_what_went_and_what_stays() -> None:
    base = verdict(
        "pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}, grant()
    ).foothold
    message, remains = compute_settle_message(
        [
            base.model_copy(update={"outcome": "Removed"}),
            base.model_copy(update={"name": "q", "outcome": "Reported"}),
        ]
    )
    assert remains and "Removed what was made under the grant: Pod pay/p" in message
    assert "Still in place" in message and "Pod pay/q" in message


EDIT = [{"apiGroups": [""], "resources": ["pods", "pods/exec", "secrets"], "verbs": ["*"]}]
ADMIN = [*EDIT, {"apiGroups": [RBAC_GROUP], "resources": ["rolebindings"], "verbs": ["create"]}]


def cluster_rbac(*bindings: tuple[str, str, dict[str, str]]) -> Snapshot:
    """ClusterRoles `edit` and `admin`, and RoleBindings in `pay` of (name, role, subject)."""
    roles = {
        role_key("ClusterRole", name, None): parse_role(
            "ClusterRole", {"metadata": {"name": name}, "rules": rules}
        )
        for name, rules in (("edit", EDIT), ("admin", ADMIN))
    }
    records = [
        parse_binding(
            "RoleBinding",
            {
                "metadata": {"name": name, "namespace": "pay"},
                "roleRef": {"kind": "ClusterRole", "name": role},
                "subjects": [subject],
            },
        )
        for name, role, subject in bindings
    ]
    return Snapshot(roles, records)


def pod(account: str, token: bool = True) -> dict[str, Any]:
    volumes = [
        {"name": "kube-api-access-x", "projected": {"sources": [{"serviceAccountToken": {}}]}}
    ]
    return {
        "metadata": {"name": "w", "namespace": "pay", "uid": "pod-uid"},
        "spec": {"serviceAccountName": account, "volumes": volumes if token else []},
    }


DEPLOYER = {"kind": "ServiceAccount", "name": "deployer", "namespace": "pay"}
ALICE = {"kind": "User", "name": "alice"}


def connect(
    into: dict[str, Any] | None,
    stronger: str | None = None,
    subresource: str = "exec",
    snapshot: Snapshot | None = None,
    ready: bool = True,
    role: str | None = "edit",
) -> Any:
    snapshot = snapshot or cluster_rbac(("deployer-admin", "admin", DEPLOYER))
    footholds = {"strongerPods": stronger} if stronger else {}
    policy = AccessPolicy.model_validate(
        {"metadata": {"name": "p"}, "spec": {"footholds": footholds}}
    )
    held = grant()
    if role is not None:
        held = replace(held, role=RoleRef(kind="ClusterRole", name=role))
    return compute_foothold_verdict(
        username="alice", resource="pods", subresource=subresource, namespace="pay", name="w",
        body={}, grant=held, policies={"p": policy}, now=NOW,
        connection=Connection(
            pod=into, groups=("devs", "system:authenticated"),
            holdings=compute_holdings(snapshot) if ready else None, snapshot=snapshot,
            error="it does not exist",
        ),
    )  # fmt: skip


def test_exec_into_a_pod_whose_account_can_do_more_is_refused_by_default() -> None:
    refused = connect(pod("deployer"))
    assert refused.foothold is None and refused.refusal is not None
    assert "Pod pay/w runs as ServiceAccount pay/deployer and mounts its token" in refused.refusal
    assert f"create rolebindings.{RBAC_GROUP} in pay" in refused.refusal
    assert "alice holds AccessRequest pay/r" in refused.refusal
    assert connect(pod("deployer"), subresource="attach").refusal is not None


def test_the_grants_own_role_counts_before_its_binding_is_seen() -> None:
    # deployer holds `edit`: exactly the grant, whose binding the index has not seen yet.
    snapshot = cluster_rbac(("deployer-edit", "edit", DEPLOYER))
    allowed = connect(pod("deployer"), snapshot=snapshot)
    assert allowed.refusal is None and allowed.foothold.service_account == "deployer"
    assert connect(pod("deployer"), snapshot=snapshot, role=None).refusal is not None
    # What alice holds on her own (here: admin) counts as hers.
    own = cluster_rbac(("deployer-admin", "admin", DEPLOYER), ("alice-admin", "admin", ALICE))
    assert connect(pod("deployer"), snapshot=own).refusal is None


def test_a_pod_without_a_token_or_as_a_weaker_account_is_recorded_as_before() -> None:
    plain = connect(pod("deployer", token=False))
    assert plain.refusal is None and plain.foothold.connect == "exec"
    assert plain.foothold.action == "Report" and plain.foothold.beyond is None
    weaker = connect(pod("default"))
    assert weaker.refusal is None and weaker.foothold.service_account == "default"
    # A port-forward reaches ports, not files: never refused for the account.
    forward = connect(pod("deployer"), subresource="portforward")
    assert forward.refusal is None and forward.foothold.connect == "portforward"


def test_end_pods_records_the_pod_to_end_and_report_only_reports() -> None:
    ending = connect(pod("deployer"), stronger="EndPods").foothold
    assert ending.action == "Remove" and ending.uid == "pod-uid"
    assert ending.beyond and f"create rolebindings.{RBAC_GROUP} in pay" in ending.beyond
    assert compute_object_path(ending) == "/api/v1/namespaces/pay/pods/w"
    reported = connect(pod("deployer"), stronger="Report").foothold
    assert reported.action == "Report" and reported.beyond == ending.beyond
    assert "which can create rolebindings" in describe_foothold(reported)


def test_unknown_rbac_or_an_unreadable_pod_fails_safe() -> None:
    # Until the RBAC index is loaded, a pod with a token is refused whatever the policy.
    for stronger in ("Refuse", "EndPods", "Report"):
        assert connect(pod("deployer"), stronger=stronger, ready=False).refusal is not None
    assert connect(pod("deployer", token=False), ready=False).refusal is None
    unread = connect(None)
    assert unread.refusal is not None and "could not read Pod pay/w" in unread.refusal
    assert "it does not exist" in unread.refusal
    recorded = connect(None, stronger="EndPods")
    assert recorded.refusal is None and recorded.foothold.action == "Report"


def test_ended_pods_leave_nothing_to_rotate() -> None:
    ending = connect(pod("deployer"), stronger="EndPods").foothold
    message, remains = compute_settle_message([ending.model_copy(update={"outcome": "Ended"})])
    assert not remains and "Pods connected to under the grant are gone" in message
    reported = connect(pod("deployer"), stronger="Report").foothold
    message, remains = compute_settle_message([reported.model_copy(update={"outcome": "Reported"})])
    assert remains and "rotate the credentials" in message


def test_what_every_service_account_reads_of_the_issuer_makes_none_stronger() -> None:
    discovery = parse_role(
        "ClusterRole",
        {
            "metadata": {"name": "system:service-account-issuer-discovery"},
            "rules": [
                {"verbs": ["get"], "nonResourceURLs": ["/openid/v1/jwks", "/openid/v1/jwks/"]}
            ],
        },
    )
    every_account = parse_binding(
        "ClusterRoleBinding",
        {
            "metadata": {"name": "system:service-account-issuer-discovery"},
            "roleRef": {"kind": "ClusterRole", "name": discovery.name},
            "subjects": [{"kind": "Group", "name": "system:serviceaccounts"}],
        },
    )
    rbac = cluster_rbac()
    snapshot = Snapshot(
        {**rbac.roles, role_key("ClusterRole", discovery.name, None): discovery},
        [every_account],
    )
    assert connect(pod("default"), snapshot=snapshot).refusal is None
