"""What the server serves: one `ResourceInfo` per (group, version, plural).

The registry of built-in kinds and of kinds served from CustomResourceDefinitions produces
these; discovery, OpenAPI, Table printing, storage and authorization all read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The Kubernetes release the server answers as: /version and the OpenAPI documents agree.
KUBERNETES_VERSION = "v1.31.0"


@dataclass(frozen=True)
class ResourceInfo:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # e.g. ("status",)
    # openAPIV3Schema of a CRD version, or a hand-written one for a built-in kind.
    schema: dict[str, Any] | None = None
    # A CRD version's additionalPrinterColumns; empty means Name and Age.
    printer_columns: tuple[dict[str, Any], ...] = ()
    # The CRD object this resource is served from (None for built-ins): validation, CEL, defaults.
    crd: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"
