"""Lapse's kinds, named once: group, version, plural, scope, short names, finalizer.

Handlers subscribe to a kind's resource, the API module builds its paths, the CLI resolves
what users type, and crdgen writes the CRD: all from these entries, so a kind's identity
cannot drift between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

GROUP = "lapse.dev"
VERSION = "v1alpha1"
API_VERSION: Final = "lapse.dev/v1alpha1"  # f"{GROUP}/{VERSION}", spelled out for mypy
# kopf's own finalizer string: Lapse's admission webhook adds it at creation so that a grant
# needs no extra write before it starts, and kopf removes it once the delete handler ran.
FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


@dataclass(frozen=True)
class Kind:
    """One of Lapse's custom resources, with every name the API and kubectl know it by."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    namespaced: bool
    # Whether Lapse's admission webhook puts kopf's finalizer on new objects of this kind.
    finalized: bool

    @property
    def resource(self) -> tuple[str, str, str]:
        """(group, version, plural), as kopf's decorators take it."""
        return (GROUP, VERSION, self.plural)

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def scope(self) -> str:
        return "Namespaced" if self.namespaced else "Cluster"

    @property
    def names(self) -> tuple[str, ...]:
        """Every name kubectl accepts for this kind, short and qualified."""
        plain = (*self.short_names, self.singular, self.plural)
        return (*plain, f"{self.singular}.{GROUP}", f"{self.plural}.{GROUP}")

    def describe(self, name: str, namespace: str | None, state: str = "") -> str:
        """`accessrequest "x" not found in namespace "payments"`, with `state` = "not found"."""
        where = f' in namespace "{namespace}"' if self.namespaced and namespace else ""
        said = f" {state}" if state else ""
        return f'{self.singular} "{name}"{said}{where}'


ACCESS_POLICY = Kind(
    kind="AccessPolicy",
    plural="accesspolicies",
    singular="accesspolicy",
    short_names=("ap",),
    namespaced=False,
    finalized=False,
)
ACCESS_REQUEST = Kind(
    kind="AccessRequest",
    plural="accessrequests",
    singular="accessrequest",
    short_names=("ar",),
    namespaced=True,
    finalized=True,
)
BREAK_GLASS = Kind(
    kind="BreakGlass",
    plural="breakglasses",
    singular="breakglass",
    short_names=("bg",),
    namespaced=False,
    finalized=True,
)
KINDS: tuple[Kind, ...] = (ACCESS_POLICY, ACCESS_REQUEST, BREAK_GLASS)
# The kinds that own grants (and so bindings, statuses, expiries).
GRANT_KINDS: tuple[Kind, ...] = (ACCESS_REQUEST, BREAK_GLASS)


def kind_named(kind: str) -> Kind:
    """The entry for `kind` ("AccessRequest"); KeyError for anything not Lapse's."""
    return _BY_KIND[kind]


_BY_KIND = {k.kind: k for k in KINDS}
