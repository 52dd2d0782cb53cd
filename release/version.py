"""`make version`: Lapse's version lives in pyproject.toml alone; this stamps it everywhere else.

The chart's `version` and `appVersion`, the image tag of the kustomize installation and of its
base Deployment, and the commands of the READMEs and the Dockerfile follow pyproject.toml.
`--version` of `lapse-operator` and `kubectl lapse` reads the installed distribution, and the
krew manifest reads pyproject.toml when it is built (`plugins/krew.py`), so neither needs
stamping. The release workflow refuses a tag that
differs from pyproject.toml, and `--check` (run by the tests) refuses a file left behind.

    python -m release.version               stamp pyproject.toml's version
    python -m release.version --set 0.2.0   write 0.2.0 into pyproject.toml first, then stamp
    python -m release.version --check       exit 1 naming every file out of step
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE_REPOSITORY = "ghcr.io/lapse-dev/lapse"
# Semantic versions only: they become image tags, chart versions and krew tags.
VERSION = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")


@dataclass(frozen=True)
class Stamp:
    """One line of one file that carries the version; `{version}` marks where."""

    path: str
    pattern: str
    line: str

    def apply(self, text: str, version: str) -> str:
        stamped, count = re.subn(self.pattern, self.line.format(version=version), text, flags=re.M)
        if count != 1:
            raise ValueError(f"{self.path}: expected one line matching {self.pattern!r}")
        return stamped


@dataclass(frozen=True)
class Mentions:
    """A document whose commands name the version in the places `MENTIONED` knows: each one
    follows, however many there are."""

    path: str

    def apply(self, text: str, version: str) -> str:
        stamped, count = MENTIONED.subn(lambda m: m.group("before") + version, text)
        if count == 0:
            raise ValueError(f"{self.path}: no mention of the version found")
        return stamped

    @property
    def line(self) -> str:
        return "every mention of {version}"


# An image tag, a release download, a krew archive, a chart version, a build argument, a
# kustomize image tag: each followed by the version.
MENTIONED = re.compile(
    r"(?P<before>ghcr\.io/lapse-dev/lapse:|releases/download/v|kubectl-lapse_v"
    r"|lapse --version |--build-arg VERSION=|newTag: )\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]*[0-9A-Za-z])?"
)

PYPROJECT = Stamp("pyproject.toml", r'^version = ".*"$', 'version = "{version}"')
STAMPS = (
    Stamp("deploy/helm/lapse/Chart.yaml", r"^version: .*$", "version: {version}"),
    Stamp("deploy/helm/lapse/Chart.yaml", r"^appVersion: .*$", 'appVersion: "{version}"'),
    Stamp("deploy/kustomization.yaml", r"^    newTag: .*$", "    newTag: {version}"),
    Stamp(
        "deploy/base/deployment.yaml",
        rf"^          image: {re.escape(IMAGE_REPOSITORY)}:.*$",
        f"          image: {IMAGE_REPOSITORY}:{{version}}",
    ),
    Mentions("README.md"),
    Mentions("deploy/README.md"),
    Mentions("Dockerfile"),
)


def project_version(root: Path = ROOT) -> str:
    return str(tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"])


def stamp(root: Path, version: str | None = None) -> list[str]:
    """Write `version` (default: pyproject.toml's) into every stamped file; the files changed."""
    if version is not None:
        if not VERSION.match(version):
            raise ValueError(f"{version!r} is not a version such as 1.2.3 or 1.2.3-rc.1")
        _rewrite(root, PYPROJECT, version)
    version = project_version(root)
    return [stamp.path for stamp in STAMPS if _rewrite(root, stamp, version)]


def out_of_step(root: Path = ROOT) -> list[str]:
    """The stamped lines that do not carry pyproject.toml's version."""
    version = project_version(root)
    return [
        f"{s.path}: {s.line.format(version=version).strip()!r}"
        for s in STAMPS
        if s.apply((root / s.path).read_text(), version) != (root / s.path).read_text()
    ]


def _rewrite(root: Path, stamp: Stamp, version: str) -> bool:
    path = root / stamp.path
    before = path.read_text()
    after = stamp.apply(before, version)
    if after != before:
        path.write_text(after)
    return after != before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", metavar="VERSION", help="write this version first")
    parser.add_argument("--check", action="store_true", help="change nothing; fail if stale")
    args = parser.parse_args()
    if args.check:
        stale = out_of_step()
        for line in stale:
            print(f"not at {project_version()}: {line}", file=sys.stderr)
        sys.exit(1 if stale else 0)
    changed = stamp(ROOT, args.set)
    print(f"Lapse {project_version()}: " + (", ".join(changed) or "every file already stamped"))


if __name__ == "__main__":
    main()
