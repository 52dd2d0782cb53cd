"""The release workflow (.github/workflows/release.yml), as far as it can be checked without
the forge: it parses, runs on version tags, builds for two architectures, signs where it holds
the OIDC token, and runs only `make` targets that exist."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.cluster import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


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
