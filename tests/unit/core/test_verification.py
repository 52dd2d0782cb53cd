"""What Lapse asks the authorizer after a grant, and how it reads the answers."""

from __future__ import annotations

from lapse.core.models import Subject, SubjectKind, UserInfo
from lapse.core.rbac import parse_rules
from lapse.core.verification import (
    MAX_CHECKS,
    AccessCheck,
    build_access_review,
    compute_access_checks,
    compute_next_check,
    compute_verification,
)

EDIT_LIKE = parse_rules(
    [
        {"apiGroups": [""], "resources": ["pods", "pods/exec"], "verbs": ["get", "create"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["one"], "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"]},
        {"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
    ]
)


def test_checks_cover_the_rules_in_each_namespace_and_are_bounded() -> None:
    checks = compute_access_checks(EDIT_LIKE, ["a"])
    assert checks[:2] == [
        AccessCheck("create", "", "pods", "a"),
        AccessCheck("get", "", "pods", "a"),
    ]
    assert AccessCheck("*", "apps", "deployments", "a") in checks
    assert all(c.namespace == "a" for c in checks)
    # A rule for named objects only proves nothing when denied: it is not asked.
    assert not [c for c in checks if c.resource == "secrets"]
    many = compute_access_checks(EDIT_LIKE * 3, ["a", "b", "c"])
    assert len(many) == 3 * len(checks)
    wide = parse_rules([{"apiGroups": ["x"], "resources": list("abcdefghij"), "verbs": ["get"]}])
    assert len(compute_access_checks(wide, ["a", "b"])) == 2 * MAX_CHECKS
    assert compute_access_checks(EDIT_LIKE, [])[0].namespace is None


def test_one_denial_a_place_settles_it() -> None:
    checks = compute_access_checks(EDIT_LIKE, ["a", "b"])
    first_a, first_b = checks[0], next(c for c in checks if c.namespace == "b")
    assert compute_next_check(checks, []) == first_a
    # Denied in a: nothing more is asked there; b is next.
    assert compute_next_check(checks, [(first_a, False, "")]) == first_b
    assert compute_next_check(checks, [(first_a, False, ""), (first_b, False, "")]) is None
    # Allowed by no binding the authorizer names: the next permission of the place is asked.
    assert compute_next_check(checks, [(first_a, True, "")]) == checks[1]
    # Allowed by a binding (another one, or the grant's own): the place is settled.
    held = 'RBAC: allowed by RoleBinding "own/a" of ClusterRole "edit" to User "al"'
    assert compute_next_check(checks, [(first_a, True, held)]) == first_b


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
    ours = [("lapse-x-1", "a")]
    gone = compute_verification([(check, False, "")], ours)
    assert gone.reason == "AccessGone" and "denies get pods in a" in gone.message
    elsewhere = compute_verification([(check, True, 'RBAC: allowed by RoleBinding "own/a"')], ours)
    assert elsewhere.status == "True" and elsewhere.reason == "HeldElsewhere"
    assert "own/a" in elsewhere.message
    # The authorizer names the grant's own binding: it survived.
    reason = 'RBAC: allowed by RoleBinding "lapse-x-1/a" of ClusterRole "edit" to User "al"'
    remains = compute_verification([(check, True, reason)], ours)
    assert remains.status == "False" and remains.reason == "AccessRemains"
    assert "lapse-x-1" in remains.message
    assert compute_verification([], ours).reason == "NothingToCheck"
