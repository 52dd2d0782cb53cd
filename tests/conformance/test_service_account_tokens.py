"""ServiceAccount credentials as kube-apiserver v1.36 issues and honours them, on the local API
and on a real cluster alike: TokenRequest (`kubectl create token`), the identity a token
carries, tokens bound to a Pod or a Secret, and legacy token Secrets filled in by the tokens
controller. A token stops authenticating when what it names is gone; a real server may take
about ten seconds to notice (its authentication cache), so those checks poll."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import kubernetes.client
from kubernetes.client.rest import ApiException

from tests.cluster import Cluster
from tests.conformance.conftest import raw, wait_for
from tests.conformance.identities import (
    CREDENTIAL_ID,
    EXTRA,
    PAUSE,
    claims,
    create_token,
    node_names,
    service_account,
    wait_unauthorized,
    whoami,
)

TOKEN_TYPE = "kubernetes.io/service-account-token"
ACCOUNT_ANNOTATION = "kubernetes.io/service-account.name"
UID_ANNOTATION = "kubernetes.io/service-account.uid"


def core(cluster: Cluster) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(cluster.api())


def timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def token_path(namespace: str, account: str) -> str:
    return f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"


def request_token(cluster: Cluster, namespace: str, account: str, **spec: Any) -> tuple[int, Any]:
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    return raw(cluster, "POST", token_path(namespace, account), body)


def running_pod(cluster: Cluster, namespace: str, name: str, account: str) -> dict[str, Any]:
    """A pod of `account` on a node: the cluster's first node (where the pause image is, so it
    really runs), or on the local API, which serves no nodes, a node by name only."""
    nodes = node_names(cluster)
    pod = {
        "metadata": {"name": name},
        "spec": {
            "serviceAccountName": account,
            "nodeName": nodes[0] if nodes else "cf-local-node",
            "containers": [{"name": "c", "image": PAUSE, "imagePullPolicy": "Never"}],
        },
    }
    made = core(cluster).create_namespaced_pod(namespace, pod)
    plain: dict[str, Any] = cluster.api().sanitize_for_serialization(made)  # type: ignore[no-untyped-call]
    return plain


def test_kubectl_create_token_answer_and_identity(cluster: Cluster, cf_namespace: str) -> None:
    account = service_account(cluster, cf_namespace, "app")
    uid = account["metadata"]["uid"]
    answer = json.loads(
        cluster.kubectl("create", "token", "app", "-n", cf_namespace, "-o", "json").stdout
    )
    assert answer["kind"] == "TokenRequest"
    assert answer["apiVersion"] == "authentication.k8s.io/v1"
    # The answer carries the ServiceAccount's uid as its own.
    assert {k: answer["metadata"][k] for k in ("name", "namespace", "uid")} == {
        "name": "app",
        "namespace": cf_namespace,
        "uid": uid,
    }
    token = answer["status"]["token"]
    issued = claims(token)
    assert answer["spec"] == {
        "audiences": issued["aud"],
        "expirationSeconds": 3600,
        "boundObjectRef": None,
    }
    assert issued["aud"] == [issued["iss"]]
    assert issued["sub"] == f"system:serviceaccount:{cf_namespace}:app"
    assert issued["exp"] - issued["iat"] == 3600
    assert issued["nbf"] == issued["iat"]
    assert abs(timestamp(answer["status"]["expirationTimestamp"]) - issued["exp"]) <= 2
    assert issued["kubernetes.io"] == {
        "namespace": cf_namespace,
        "serviceaccount": {"name": "app", "uid": uid},
    }

    status, user = whoami(cluster, token)
    assert status == 201, user
    assert user == {
        "username": f"system:serviceaccount:{cf_namespace}:app",
        "uid": uid,
        "groups": [
            "system:serviceaccounts",
            f"system:serviceaccounts:{cf_namespace}",
            "system:authenticated",
        ],
        "extra": {CREDENTIAL_ID: [f"JTI={issued['jti']}"]},
    }
    # Every token is a credential of its own.
    other = claims(create_token(cluster, cf_namespace, "app", "--duration=20m"))
    assert other["jti"] != issued["jti"]
    assert other["exp"] - other["iat"] == 1200


def test_token_request_refusals(cluster: Cluster, cf_namespace: str) -> None:
    service_account(cluster, cf_namespace, "app")
    service_account(cluster, cf_namespace, "other")
    core(cluster).create_namespaced_secret(
        cf_namespace, {"metadata": {"name": "s"}, "stringData": {"k": "v"}}
    )

    short = cluster.kubectl(
        "create", "token", "app", "-n", cf_namespace, "--duration=5m", check=False
    )
    assert short.returncode == 1
    assert short.stderr.strip() == (
        'error: failed to create token: TokenRequest.authentication.k8s.io "" is invalid: '
        "spec.expirationSeconds: Invalid value: 300: may not specify a duration less than "
        "10 minutes"
    )
    status, body = raw(
        cluster,
        "POST",
        token_path(cf_namespace, "app"),
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": "x"},
        },
    )
    assert (status, body["message"]) == (
        422,
        'TokenRequest.authentication.k8s.io "app" is invalid: metadata.name: Invalid value: '
        '"x": must match the service account name if specified',
    )
    status, body = request_token(cluster, cf_namespace, "nobody")
    assert (status, body["message"]) == (404, 'serviceaccounts "nobody" not found')

    refusals = [
        ({"kind": "Pod", "apiVersion": "v1", "name": "nope"}, 404, 'pods "nope" not found'),
        ({"kind": "Secret", "apiVersion": "v1", "name": "nope"}, 404, 'secrets "nope" not found'),
        (
            {"kind": "ConfigMap", "apiVersion": "v1", "name": "kube-root-ca.crt"},
            400,
            "cannot bind token to object of type /v1, Kind=ConfigMap",
        ),
        (
            {"kind": "Secret", "apiVersion": "v1", "name": "s", "uid": "not-its-uid"},
            409,
            'Operation cannot be fulfilled on Secret "s": the UID in the bound object reference '
            "(not-its-uid) does not match the UID in record. The object might have been deleted "
            "and then recreated",
        ),
    ]
    for ref, code, message in refusals:
        status, body = request_token(cluster, cf_namespace, "app", boundObjectRef=ref)
        assert (status, body.get("message")) == (code, message), ref
    running_pod(cluster, cf_namespace, "p", "other")
    status, body = request_token(
        cluster,
        cf_namespace,
        "app",
        boundObjectRef={"kind": "Pod", "apiVersion": "v1", "name": "p"},
    )
    assert (status, body["message"]) == (
        400,
        'cannot bind token for serviceaccount "app" to pod running with different serviceaccount '
        "name.",
    )


def test_pod_bound_token_names_the_pod_and_ends_with_it(
    cluster: Cluster, cf_namespace: str
) -> None:
    account = service_account(cluster, cf_namespace, "app")
    pod = running_pod(cluster, cf_namespace, "p", "app")
    pod_uid, node = pod["metadata"]["uid"], pod["spec"]["nodeName"]
    token = create_token(
        cluster,
        cf_namespace,
        "app",
        "--bound-object-kind=Pod",
        "--bound-object-name=p",
        f"--bound-object-uid={pod_uid}",
    )
    issued = claims(token)
    assert issued["kubernetes.io"]["pod"] == {"name": "p", "uid": pod_uid}
    assert issued["kubernetes.io"]["node"]["name"] == node

    status, user = whoami(cluster, token)
    assert status == 201, user
    assert user["uid"] == account["metadata"]["uid"]
    extra = dict(user["extra"])
    # The node's uid is named where the cluster has Node objects; the local API serves none.
    node_uid = extra.pop(EXTRA + "node-uid", None)
    assert node_uid is None or len(node_uid) == 1
    assert extra == {
        CREDENTIAL_ID: [f"JTI={issued['jti']}"],
        EXTRA + "node-name": [node],
        EXTRA + "pod-name": ["p"],
        EXTRA + "pod-uid": [pod_uid],
    }

    # The kubelet's 3607 s is extended to a year, with a warning time in the token.
    kubelet = claims(create_token(cluster, cf_namespace, "app", "--bound-object-kind=Pod",
                                  "--bound-object-name=p", "--duration=3607s"))  # fmt: skip
    assert kubelet["exp"] - kubelet["iat"] == 365 * 24 * 3600
    assert kubelet["kubernetes.io"]["warnafter"] == kubelet["iat"] + 3607

    cluster.kubectl("delete", "pod", "p", "-n", cf_namespace, "--grace-period=0", "--force")
    wait_unauthorized(cluster, token)


def test_secret_bound_token_ends_with_the_secret(cluster: Cluster, cf_namespace: str) -> None:
    service_account(cluster, cf_namespace, "app")
    secret = core(cluster).create_namespaced_secret(
        cf_namespace, {"metadata": {"name": "anchor"}, "stringData": {"k": "v"}}
    )
    token = create_token(
        cluster, cf_namespace, "app", "--bound-object-kind=Secret", "--bound-object-name=anchor"
    )
    issued = claims(token)
    assert issued["kubernetes.io"]["secret"] == {"name": "anchor", "uid": secret.metadata.uid}
    status, user = whoami(cluster, token)
    assert status == 201, user
    # A Secret-bound token says nothing of its Secret in the user's extra.
    assert user["extra"] == {CREDENTIAL_ID: [f"JTI={issued['jti']}"]}
    core(cluster).delete_namespaced_secret("anchor", cf_namespace)
    wait_unauthorized(cluster, token)


def test_token_ends_with_its_service_account_even_recreated(
    cluster: Cluster, cf_namespace: str
) -> None:
    first = service_account(cluster, cf_namespace, "app")
    token = create_token(cluster, cf_namespace, "app")
    assert whoami(cluster, token)[0] == 201
    core(cluster).delete_namespaced_service_account("app", cf_namespace)
    again = service_account(cluster, cf_namespace, "app")
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    wait_unauthorized(cluster, token)
    status, body = whoami(cluster, token)
    assert (status, body["message"], body["reason"]) == (401, "Unauthorized", "Unauthorized")


def decoded(secret: Any) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def filled(cluster: Cluster, namespace: str, name: str) -> Any:
    """The token Secret once the tokens controller has filled it in."""

    def ready() -> Any:
        secret = core(cluster).read_namespaced_secret(name, namespace)
        return secret if {"token", "ca.crt", "namespace"} <= set(secret.data or {}) else None

    return wait_for(ready)


def gone(cluster: Cluster, namespace: str, name: str) -> bool:
    try:
        core(cluster).read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def token_secret(name: str, account: str, **more: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": {ACCOUNT_ANNOTATION: account}},
        "type": TOKEN_TYPE,
        **more,
    }


def test_legacy_token_secret_is_filled_and_authenticates(
    cluster: Cluster, cf_namespace: str
) -> None:
    account = service_account(cluster, cf_namespace, "app")
    uid = account["metadata"]["uid"]
    core(cluster).create_namespaced_secret(cf_namespace, token_secret("legacy", "app"))
    secret = filled(cluster, cf_namespace, "legacy")
    assert secret.metadata.annotations[UID_ANNOTATION] == uid
    data = decoded(secret)
    assert data["namespace"] == cf_namespace
    assert data["ca.crt"].startswith("-----BEGIN CERTIFICATE-----")
    token = data["token"]
    assert claims(token) == {
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": cf_namespace,
        "kubernetes.io/serviceaccount/secret.name": "legacy",
        "kubernetes.io/serviceaccount/service-account.name": "app",
        "kubernetes.io/serviceaccount/service-account.uid": uid,
        "sub": f"system:serviceaccount:{cf_namespace}:app",
    }
    status, user = whoami(cluster, token)
    assert status == 201, user
    # No credential id, no extra at all: a legacy token is the account, nothing more.
    assert user == {
        "username": f"system:serviceaccount:{cf_namespace}:app",
        "uid": uid,
        "groups": [
            "system:serviceaccounts",
            f"system:serviceaccounts:{cf_namespace}",
            "system:authenticated",
        ],
    }
    # Its use is marked on the Secret, by the (UTC) day.
    days = {datetime.now(UTC).strftime("%Y-%m-%d")}

    def marked() -> bool:
        labels = core(cluster).read_namespaced_secret("legacy", cf_namespace).metadata.labels
        days.add(datetime.now(UTC).strftime("%Y-%m-%d"))
        return (labels or {}).get("kubernetes.io/legacy-token-last-used") in days

    wait_for(marked)
    core(cluster).delete_namespaced_secret("legacy", cf_namespace)
    wait_unauthorized(cluster, token)


def test_legacy_token_secrets_follow_their_service_account(
    cluster: Cluster, cf_namespace: str
) -> None:
    service_account(cluster, cf_namespace, "app")
    # A token already there is kept; the rest is filled in.
    core(cluster).create_namespaced_secret(
        cf_namespace, token_secret("given", "app", stringData={"token": "not-a-jwt"})
    )
    core(cluster).create_namespaced_secret(cf_namespace, token_secret("made", "app"))
    assert decoded(filled(cluster, cf_namespace, "given"))["token"] == "not-a-jwt"
    token = decoded(filled(cluster, cf_namespace, "made"))["token"]
    assert whoami(cluster, token)[0] == 201

    # One naming a ServiceAccount that does not exist, or another uid, is deleted.
    core(cluster).create_namespaced_secret(cf_namespace, token_secret("orphan", "ghost"))
    wrong = token_secret("wrong-uid", "app")
    wrong["metadata"]["annotations"][UID_ANNOTATION] = "not-its-uid"
    core(cluster).create_namespaced_secret(cf_namespace, wrong)
    wait_for(
        lambda: gone(cluster, cf_namespace, "orphan") and gone(cluster, cf_namespace, "wrong-uid")
    )

    # The ServiceAccount's deletion takes its token Secrets with it.
    core(cluster).delete_namespaced_service_account("app", cf_namespace)
    wait_for(lambda: gone(cluster, cf_namespace, "given") and gone(cluster, cf_namespace, "made"))
    wait_unauthorized(cluster, token)


def test_token_secret_must_name_its_service_account(cluster: Cluster, cf_namespace: str) -> None:
    status, body = raw(
        cluster,
        "POST",
        f"/api/v1/namespaces/{cf_namespace}/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bare"}, "type": TOKEN_TYPE},
    )
    assert status == 422
    assert body["message"] == (
        'Secret "bare" is invalid: metadata.annotations[kubernetes.io/service-account.name]: '
        "Required value"
    )
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueRequired",
            "message": "Required value",
            "field": "metadata.annotations[kubernetes.io/service-account.name]",
        }
    ]


def test_token_for_another_audience_does_not_authenticate(
    cluster: Cluster, cf_namespace: str
) -> None:
    service_account(cluster, cf_namespace, "app")
    token = create_token(cluster, cf_namespace, "app", "--audience=somebody-else")
    assert claims(token)["aud"] == ["somebody-else"]
    assert whoami(cluster, token)[0] == 401
