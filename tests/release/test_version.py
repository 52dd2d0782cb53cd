"""One version, in pyproject.toml, stamped into the chart and the manifests and told by
`--version` of both programs (release/version.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from plugins import krew
from release import version
from tests.cluster import ROOT, VENV_BIN


def test_every_stamped_file_carries_the_project_version() -> None:
    assert version.out_of_step() == []
    chart = yaml.safe_load((ROOT / "deploy" / "helm" / "lapse" / "Chart.yaml").read_text())
    project = version.project_version()
    assert chart["version"] == chart["appVersion"] == project
    assert krew.version() == f"v{project}"


def test_stamping_a_new_version_reaches_every_file(tmp_path: Path) -> None:
    for stamp in (version.PYPROJECT, *version.STAMPS):
        target = tmp_path / stamp.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / stamp.path, target)
    changed = version.stamp(tmp_path, "2.3.4-rc.1")
    assert sorted(set(changed)) == sorted({s.path for s in version.STAMPS})
    assert version.project_version(tmp_path) == "2.3.4-rc.1"
    assert version.out_of_step(tmp_path) == []
    chart = yaml.safe_load((tmp_path / "deploy" / "helm" / "lapse" / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == "2.3.4-rc.1"
    kustomization = yaml.safe_load((tmp_path / "deploy" / "kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": version.IMAGE_REPOSITORY, "newTag": "2.3.4-rc.1"}]
    deployment = yaml.safe_load((tmp_path / "deploy" / "base" / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{version.IMAGE_REPOSITORY}:2.3.4-rc.1"
    # The documents' commands follow, and no mention of the old version is left behind.
    old = version.project_version()
    for document in ("README.md", "deploy/README.md", "Dockerfile"):
        text = (tmp_path / document).read_text()
        assert old not in text, document
        assert "ghcr.io/lapse-dev/lapse:2.3.4-rc.1" in text, document
    readme = (tmp_path / "README.md").read_text()
    assert "releases/download/v2.3.4-rc.1/install.yaml" in readme
    assert "oci://ghcr.io/lapse-dev/charts/lapse --version 2.3.4-rc.1" in readme
    # A file left behind is named.
    chart_path = tmp_path / "deploy" / "helm" / "lapse" / "Chart.yaml"
    chart_path.write_text(chart_path.read_text().replace("version: 2.3.4-rc.1", "version: 9.9.9"))
    assert [line.split(":")[0] for line in version.out_of_step(tmp_path)] == [
        "deploy/helm/lapse/Chart.yaml"
    ]


def test_a_version_that_is_not_semantic_is_refused(tmp_path: Path) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with pytest.raises(ValueError, match="not a version"):
        version.stamp(tmp_path, "latest")
    assert version.project_version(tmp_path) == version.project_version()


@pytest.mark.parametrize("program", ["lapse-operator", "kubectl-lapse"], ids=["operator", "cli"])
def test_programs_say_their_version(program: str) -> None:
    done = subprocess.run(
        [str(VENV_BIN / program), "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == version.project_version()
