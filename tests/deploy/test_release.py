"""The release path, as far as it runs without a forge: one version, stamped everywhere; the
install YAML a release attaches runs the image the release pushes; the workflow parses and
runs only `make` targets that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from plugins import krew
from release import manifests, version
from tests.cluster import ROOT, VENV_BIN

WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def deployment_images(docs: list[dict[str, Any]]) -> list[str]:
    return [
        container["image"]
        for doc in docs
        if doc and doc["kind"] == "Deployment"
        for container in doc["spec"]["template"]["spec"]["containers"]
    ]


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
    assert deployment_images([deployment]) == [f"{version.IMAGE_REPOSITORY}:2.3.4-rc.1"]
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


def test_release_manifests_run_the_released_image(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "release.manifests", "--dist", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = (tmp_path / manifests.INSTALL).read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    project = version.project_version()
    assert deployment_images(docs) == [f"{version.IMAGE_REPOSITORY}:{project}"]
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "Namespace", "ClusterRole", "Deployment"} <= kinds
    assert text.startswith(f"# Lapse {project}: kubectl apply")


def test_release_manifests_follow_another_repository() -> None:
    text = manifests.render(version="1.0.0", repository="registry.example/team/lapse")
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert deployment_images(docs) == ["registry.example/team/lapse:1.0.0"]


def test_helm_installs_the_image_the_release_pushes() -> None:
    chart_mod = pytest.importorskip("helm_python.chart")
    with chart_mod.Chart.load(str(ROOT / "deploy" / "helm" / "lapse")) as chart:
        rendered = chart.render({}, name="lapse", namespace="lapse-system", is_install=True)
    docs = [
        d
        for path, text in rendered.items()
        if path.endswith(".yaml")
        for d in yaml.safe_load_all(text)
        if d
    ]
    assert deployment_images(docs) == [f"{version.IMAGE_REPOSITORY}:{version.project_version()}"]


@pytest.mark.parametrize("program", ["lapse-operator", "kubectl-lapse"], ids=["operator", "cli"])
def test_programs_say_their_version(program: str) -> None:
    done = subprocess.run(
        [str(VENV_BIN / program), "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == version.project_version()


def workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def test_the_release_workflow_runs_on_version_tags() -> None:
    flow = workflow()
    # YAML 1.1 reads the key `on` as true.
    trigger = flow.get("on", flow.get(True))
    assert trigger == {"push": {"tags": ["v*.*.*"]}}
    jobs = flow["jobs"]
    assert {"version", "test", "image", "chart", "release"} <= set(jobs)
    for job in jobs.values():
        assert job["runs-on"] and job["steps"]
    steps = "\n".join(str(step) for job in jobs.values() for step in job["steps"])
    assert "linux/amd64,linux/arm64" in steps
    assert "cosign sign --yes" in steps
    assert "helm push" in steps and "oci://" in str(flow["env"])
    assert "dist/install.yaml" in steps and "krew_template_file" in steps
    # Signing keyless needs the workflow's OIDC token, and only where it signs.
    for name, job in jobs.items():
        wants_token = (job.get("permissions") or {}).get("id-token") == "write"
        assert wants_token == (name in {"image", "chart"}), name


def test_the_workflow_runs_only_make_targets_that_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-zA-Z0-9_-]+):", makefile, re.M))
    runs = "\n".join(
        step.get("run", "") for job in workflow()["jobs"].values() for step in job["steps"]
    )
    wanted = {t for line in re.findall(r"\bmake ([a-z -]+)", runs) for t in line.split()}
    assert wanted and wanted <= targets, wanted - targets
