"""The install YAML a release attaches, and the Helm chart, run the image the release pushes
(release/manifests.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from release import manifests, version
from tests.cluster import ROOT


def deployment_images(docs: list[dict[str, Any]]) -> list[str]:
    return [
        container["image"]
        for doc in docs
        if doc and doc["kind"] == "Deployment"
        for container in doc["spec"]["template"]["spec"]["containers"]
    ]


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
