"""Whether one subject's rules cover another's, as kube-apiserver's escalation check decides."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lapse.core.coverage import (
    Atom,
    build_atoms,
    compute_beyond,
    compute_highlights,
    compute_uncovered,
    rule_covers,
)
from lapse.core.rbac import Held, Rule, parse_rules

RBAC = "rbac.authorization.k8s.io"


def rule(
    verbs: str,
    resources: str = "",
    groups: str = "",
    names: str = "",
    urls: str = "",
) -> Rule:
    def split(text: str) -> list[str]:
        return [part for part in text.split(",") if part] if text != "core" else [""]

    spec = {
        "verbs": split(verbs),
        "apiGroups": split(groups or "core") if resources else [],
        "resources": split(resources),
        "resourceNames": split(names),
        "nonResourceURLs": split(urls),
    }
    return parse_rules([spec])[0]


def covers(owner: list[Rule], servant: list[Rule]) -> bool:
    return not compute_uncovered(owner, servant)


def test_a_rule_is_broken_into_single_verb_resource_and_name_atoms() -> None:
    atoms = build_atoms(rule("get,list", "pods,secrets", names="a,b"))
    assert len(atoms) == 8
    assert Atom("get", "", "secrets", "b") in atoms
    urls = build_atoms(rule("get", urls="/healthz,/version"))
    assert set(urls) == {Atom("get", url="/healthz"), Atom("get", url="/version")}
    # A resource rule without API groups allows nothing, and breaks into nothing.
    assert build_atoms(Rule(verbs=frozenset({"get"}), resources=frozenset({"pods"}))) == []


def test_wildcards_cover_everything_and_are_covered_only_by_wildcards() -> None:
    everything = rule("*", "*", "*")
    assert covers([everything], [rule("create", "rolebindings", RBAC), rule("get", "pods/exec")])
    assert not covers([rule("get", "pods")], [rule("get", "*")])
    assert not covers([rule("get", "pods")], [rule("*", "pods")])
    assert not covers([rule("get", "pods")], [rule("get", "pods", "*")])
    # Resource wildcards do not reach non-resource URLs.
    assert not covers([everything], [rule("get", urls="/metrics")])
    assert covers([rule("*", urls="*")], [rule("get", urls="/metrics")])


def test_resource_names_narrow_what_a_rule_covers() -> None:
    named = rule("get", "secrets", names="app")
    assert covers([rule("get", "secrets")], [named])
    assert covers([named], [named])
    assert not covers([named], [rule("get", "secrets")])
    assert not covers([named], [rule("get", "secrets", names="app,db")])


def test_subresources_by_name_or_by_star_slash() -> None:
    assert covers([rule("get", "*/status")], [rule("get", "pods/status,deployments/status")])
    assert not covers([rule("get", "*/status")], [rule("get", "pods")])
    assert not covers([rule("create", "pods")], [rule("create", "pods/exec")])
    assert covers([rule("create", "pods/exec")], [rule("create", "pods/exec")])


def test_non_resource_urls_with_a_trailing_star() -> None:
    owner = [rule("get", urls="/healthz/*")]
    assert covers(owner, [rule("get", urls="/healthz/ready")])
    assert not covers(owner, [rule("get", urls="/healthz")])
    assert not covers(owner, [rule("post", urls="/healthz/ready")])
    assert covers([rule("get", urls="/version")], [rule("get", urls="/version")])


def test_what_is_uncovered_is_listed_once_in_order() -> None:
    owner = [rule("get,list", "pods")]
    servant = [rule("get,delete", "pods"), rule("delete", "pods")]
    assert compute_uncovered(owner, servant) == [Atom("delete", "", "pods")]


def held(rules: list[Rule], scope: str | None, through: str = "b") -> list[Held]:
    return [Held(r, scope, through) for r in rules]


def test_a_namespace_is_covered_there_or_cluster_wide_never_from_another_namespace() -> None:
    account = held([rule("create", "rolebindings", RBAC)], "shop")
    assert compute_beyond(account, held([rule("*", "*", "*")], "shop")) == []
    assert compute_beyond(account, held([rule("*", "*", "*")], None)) == []
    beyond = compute_beyond(account, held([rule("*", "*", "*")], "other"))
    assert [b.describe() for b in beyond] == [f"create rolebindings.{RBAC} in shop"]
    # What an account may do everywhere is not covered by the same rule in one namespace.
    everywhere = held([rule("get", "secrets")], None, "ClusterRoleBinding x")
    beyond = compute_beyond(everywhere, held([rule("get", "secrets")], "shop"))
    assert [(b.describe(), b.through) for b in beyond] == [
        ("get secrets cluster-wide", "ClusterRoleBinding x")
    ]


def test_non_resource_urls_count_only_cluster_wide() -> None:
    # A RoleBinding to a ClusterRole with nonResourceURLs gives none of them.
    urls = [rule("get", urls="/metrics")]
    assert compute_beyond(held(urls, "shop"), []) == []
    assert [b.describe() for b in compute_beyond(held(urls, None), [])] == [
        "get /metrics cluster-wide"
    ]


def test_highlights_put_wildcards_and_rbac_first_and_merge_verbs() -> None:
    account = held(
        [
            rule("get", "configmaps"),
            rule("create,delete", "rolebindings", RBAC),
            rule("get", "secrets"),
        ],
        "shop",
    ) + held([rule("*", "*", "*")], None)
    lines = compute_highlights(compute_beyond(account, []))
    assert lines == [
        "do anything to every resource of every API group cluster-wide",
        f"create, delete rolebindings.{RBAC} in shop",
        "get secrets in shop",
        "get configmaps in shop",
    ]


WORDS = st.sampled_from(["", "*", "get", "pods", "pods/exec", "*/exec", "apps", "a"])


@given(
    verbs=st.frozensets(WORDS, min_size=1),
    groups=st.frozensets(WORDS, min_size=1),
    resources=st.frozensets(WORDS, min_size=1),
    names=st.frozensets(WORDS),
    atom=st.tuples(
        st.sampled_from(["get", "create"]),
        st.sampled_from(["", "apps"]),
        st.sampled_from(["pods", "pods/exec", "secrets"]),
        st.sampled_from(["", "a", "b"]),
    ),
)
def test_covering_a_plain_atom_means_the_authorizer_allows_it(
    verbs: frozenset[str],
    groups: frozenset[str],
    resources: frozenset[str],
    names: frozenset[str],
    atom: tuple[str, str, str, str],
) -> None:
    owner = Rule(verbs, groups, resources, names)
    verb, group, resource, name = atom
    if rule_covers(owner, Atom(verb, group, resource, name)):
        assert owner.allows(verb, group, resource, name)
    # A rule the authorizer lets do anything to the named object covers it.
    if owner.allows(verb, group, resource, name) and name:
        assert rule_covers(owner, Atom(verb, group, resource, name))
