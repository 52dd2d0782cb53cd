"""Which resources are served right now: the built-ins plus what established CRDs declare.

Discovery, routing, OpenAPI and Table printing all ask the registry; the server keeps it in
step with CustomResourceDefinitions as they are created, changed and removed.
"""

from __future__ import annotations

from typing import Any

from .builtins import BUILTINS
from .resources import ResourceInfo


def crd_resources(crd: dict[str, Any]) -> list[ResourceInfo]:
    """The ResourceInfos a CRD serves: one per served version."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    kind = names.get("kind", "")
    plural = names.get("plural", "")
    infos = []
    for version in spec.get("versions") or ():
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        subs = tuple(s for s in ("status", "scale") if s in subresources)
        infos.append(
            ResourceInfo(
                group=spec.get("group", ""),
                version=version.get("name", ""),
                kind=kind,
                plural=plural,
                singular=names.get("singular") or kind.lower(),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=subs,
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
                crd=crd,
            )
        )
    return infos


def storage_version(crd: dict[str, Any]) -> str:
    versions = (crd.get("spec") or {}).get("versions") or ()
    for version in versions:
        if version.get("storage"):
            return str(version.get("name", ""))
    return str(versions[0].get("name", "")) if versions else ""


class Registry:
    def __init__(self) -> None:
        self._builtin: dict[tuple[str, str, str], ResourceInfo] = {
            (r.group, r.version, r.plural): r for r in BUILTINS
        }
        self._custom: dict[str, list[ResourceInfo]] = {}  # CRD name -> its served versions
        self._index: dict[tuple[str, str, str], ResourceInfo] = {}
        self._reindex()

    def _reindex(self) -> None:
        index = dict(self._builtin)
        for infos in self._custom.values():
            for info in infos:
                index.setdefault((info.group, info.version, info.plural), info)
        self._index = index

    def serve_crd(self, crd: dict[str, Any]) -> None:
        self._custom[crd["metadata"]["name"]] = crd_resources(crd)
        self._reindex()

    def unserve_crd(self, name: str) -> None:
        if self._custom.pop(name, None) is not None:
            self._reindex()

    def lookup(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._index.get((group, version, plural))

    def all(self) -> list[ResourceInfo]:
        return list(self._index.values())

    def by_kind(self, group: str, kind: str) -> ResourceInfo | None:
        for info in self._index.values():
            if info.group == group and info.kind == kind:
                return info
        return None

    def groups(self) -> dict[str, list[str]]:
        """Group name -> its versions, preferred first (the core group excluded)."""
        found: dict[str, list[str]] = {}
        for info in self._index.values():
            if info.group and info.version not in found.setdefault(info.group, []):
                found[info.group].append(info.version)
        for name, versions in found.items():
            preferred = self._preferred(name)
            versions.sort(key=_version_priority)
            if preferred in versions:
                versions.remove(preferred)
                versions.insert(0, preferred)
        return found

    def _preferred(self, group: str) -> str:
        for infos in self._custom.values():
            if infos and infos[0].group == group and infos[0].crd is not None:
                return storage_version(infos[0].crd)
        return ""

    def in_group_version(self, group: str, version: str) -> list[ResourceInfo]:
        return [i for i in self._index.values() if i.group == group and i.version == version]


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version ordering: GA > beta > alpha, then higher numbers first."""
    import re

    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (3, 0, 0)
    major, stage, minor = match.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -int(major), -int(minor or 0))
