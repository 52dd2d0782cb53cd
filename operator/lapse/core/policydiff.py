"""How the AccessPolicies of several clusters differ.

The fleet's clusters are meant to run the same policies (one Git repository, applied to each
by GitOps); when one cluster's copy drifts, a developer is granted in one region what another
refuses, or an approver's rule holds in one only. This module compares what each cluster has,
spec by spec: a policy missing somewhere, and the variants of one that differs, each with the
clusters holding it. Metadata is left out on purpose (labels, annotations and managed fields
differ between clusters by nature and decide nothing).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict


class Variant(BaseModel):
    """One spec of a policy, and the clusters that hold exactly it."""

    model_config = ConfigDict(frozen=True)

    contexts: list[str]
    spec: dict[str, Any]


class PolicyComparison(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    present: list[str]
    missing: list[str]
    # The first variant is the one held by the first cluster (in the order given) that has it.
    variants: list[Variant]

    @property
    def same(self) -> bool:
        return not self.missing and len(self.variants) == 1


def _canonical(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def compute_policy_comparisons(
    specs: Mapping[str, Mapping[str, Mapping[str, Any]]], contexts: Sequence[str]
) -> list[PolicyComparison]:
    """`specs[context][policy name]` → each policy's comparison across `contexts` (those that
    answered, in order), by name."""
    names = sorted({name for context in contexts for name in specs.get(context, {})})
    comparisons: list[PolicyComparison] = []
    for name in names:
        present = [c for c in contexts if name in specs.get(c, {})]
        variants: dict[str, Variant] = {}
        for context in present:
            spec = dict(specs[context][name])
            key = _canonical(spec)
            if key in variants:
                variants[key].contexts.append(context)
            else:
                variants[key] = Variant(contexts=[context], spec=spec)
        comparisons.append(
            PolicyComparison(
                name=name,
                present=present,
                missing=[c for c in contexts if c not in present],
                variants=list(variants.values()),
            )
        )
    return comparisons


def _yaml(spec: Mapping[str, Any]) -> list[str]:
    text = yaml.safe_dump(dict(spec), sort_keys=True, default_flow_style=False)
    return text.splitlines(keepends=True)


def build_variant_diff(name: str, reference: Variant, other: Variant) -> str:
    """A unified diff of two variants' specs as YAML, each side named by its clusters."""
    lines = difflib.unified_diff(
        _yaml(reference.spec),
        _yaml(other.spec),
        fromfile=f"{','.join(reference.contexts)}: accesspolicy/{name}",
        tofile=f"{','.join(other.contexts)}: accesspolicy/{name}",
    )
    return "".join(lines).rstrip("\n")
