"""What Lapse asks the authorizer after a grant, and how it reads the answers."""

from __future__ import annotations

from lapse.core.models import Subject, SubjectKind, UserInfo
from lapse.core.verification import (
    MAX_CHECKS,
    AccessCheck,
    build_access_review,
    compute_access_checks,
    compute_verification,
)

EDIT_LIKE = [
    {"apiGroups": [""], "resources": ["pods", "pods/exec"], "verbs": ["get", "create"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"]},
    {"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
]


def test_checks_cover_the_rules_in_each_namespace_and_are_bounded() -> None:
    checks = compute_access_checks(EDIT_LIKE, ["a"])
    assert checks[:2] == [
        AccessCheck("get", "", "pods", "a"),
        AccessCheck("create", "", "pods", "a"),
    ]
    assert AccessCheck("*", "apps", "deployments", "a") in checks
    assert all(c.namespace == "a" for c in checks)
    many = compute_access_checks(EDIT_LIKE, ["a", "b", "c"])
    assert len(many) == MAX_CHECKS
    assert compute_access_checks(EDIT_LIKE, [])[0].namespace is None


def test_reviews_ask_as_the_subject_would_be_seen() -> None:
    check = AccessCheck("create", "", "pods/exec", "a")
    alice = UserInfo(username="alice", groups=["devs"])
    review = build_access_review(check, Subject(kind=SubjectKind.USER, name="alice"), alice)
    spec = review["spec"]
    assert spec["user"] == "alice" and spec["groups"] == ["devs"]
    assert spec["resourceAttributes"] == {
        "verb": "create", "group": "", "resource": "pods", "subresource": "exec", "namespace": "a",
    }  # fmt: skip
    robot = Subject(kind=SubjectKind.SERVICE_ACCOUNT, name="ci", namespace="build")
    assert build_access_review(check, robot, alice)["spec"]["user"] == (
        "system:serviceaccount:build:ci"
    )
    group = build_access_review(check, Subject(kind=SubjectKind.GROUP, name="ops"), alice)
    assert group["spec"] == {"resourceAttributes": spec["resourceAttributes"], "groups": ["ops"]}


def test_verdicts() -> None:
    check = AccessCheck("get", "", "pods", "a")
    assert compute_verification([(check, False, "")], []).reason == "AccessGone"
    elsewhere = compute_verification([(check, True, 'RBAC: allowed by RoleBinding "own/a"')], [])
    assert elsewhere.status == "True" and elsewhere.reason == "HeldElsewhere"
    assert "own/a" in elsewhere.message
    remains = compute_verification([(check, True, "")], ["lapse-x-1"])
    assert remains.status == "False" and remains.reason == "AccessRemains"
    assert "lapse-x-1" in remains.message
    assert compute_verification([], []).reason == "NothingToCheck"
