"""The image's pins (release/constraints.txt) give Lapse what pyproject.toml asks for, and
nothing the operator does not run with."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from release import constraints
from tests.cluster import ROOT


def pins() -> dict[str, str]:
    found = {}
    for line in constraints.CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            assert pinned, f"not an exact pin: {line!r}"
            found[canonicalize_name(name)] = pinned
    return found


def project() -> dict[str, list[str]]:
    loaded: dict[str, list[str]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return loaded


def test_every_runtime_requirement_is_pinned_within_its_range() -> None:
    pinned = pins()
    for text in project()["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not pinned: make constraints"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{requirement.name}=={pinned[name]} is outside {requirement.specifier}"
        )


def test_no_development_tool_is_pinned_into_the_image() -> None:
    development = {
        canonicalize_name(Requirement(text).name)
        for text in project()["optional-dependencies"]["dev"]
    }
    assert development & set(pins()) == set()


def test_the_file_is_what_make_constraints_writes() -> None:
    assert constraints.render(pins()) == constraints.CONSTRAINTS.read_text()
