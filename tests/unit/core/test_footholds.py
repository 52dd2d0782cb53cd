"""Which writes under a grant are footholds, and what becomes of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from lapse.core.footholds import (
    GranteeGrant,
    build_grantee_grant,
    compute_caller_keys,
    compute_covering_grant,
    compute_foothold_verdict,
    compute_object_path,
    compute_settle_message,
)
from lapse.core.grants import GrantKey
from lapse.core.models import AccessPolicy, Subject, SubjectKind

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
