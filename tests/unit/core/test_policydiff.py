"""The comparison behind `kubectl lapse policy diff`: missing policies, variants, their diff."""

from __future__ import annotations

from lapse.core.policydiff import build_variant_diff, compute_policy_comparisons

BASE = {"roles": [{"kind": "ClusterRole", "name": "edit"}], "maxDuration": "4h"}
LONGER = {**BASE, "maxDuration": "8h"}


def test_the_same_policy_everywhere_is_the_same() -> None:
    [only] = compute_policy_comparisons(
        {"eu": {"devs": BASE}, "us": {"devs": dict(BASE)}}, ["eu", "us"]
    )
    assert only.same and only.present == ["eu", "us"] and only.missing == []


def test_a_policy_missing_somewhere_is_named_with_where() -> None:
    [only] = compute_policy_comparisons({"eu": {"devs": BASE}, "us": {}}, ["eu", "us"])
    assert not only.same
    assert (only.present, only.missing) == (["eu"], ["us"])


def test_variants_group_the_clusters_holding_each_and_key_order_does_not_matter() -> None:
    reordered = dict(reversed(list(BASE.items())))
    [only] = compute_policy_comparisons(
        {"eu": {"devs": BASE}, "us": {"devs": LONGER}, "ap": {"devs": reordered}},
        ["eu", "us", "ap"],
    )
    assert [v.contexts for v in only.variants] == [["eu", "ap"], ["us"]]
    diff = build_variant_diff("devs", only.variants[0], only.variants[1])
    assert "--- eu,ap: accesspolicy/devs" in diff and "+++ us: accesspolicy/devs" in diff
    assert "-maxDuration: 4h" in diff and "+maxDuration: 8h" in diff


def test_only_the_clusters_that_answered_are_compared() -> None:
    comparisons = compute_policy_comparisons({"eu": {"devs": BASE}}, ["eu"])
    assert [c.same for c in comparisons] == [True]
