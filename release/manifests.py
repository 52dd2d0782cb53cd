"""`make release-manifests`: the one YAML file a release attaches, `kubectl apply`-able as is.

It is `kubectl kustomize deploy/` (CRDs, namespace, RBAC, Deployment, Services), checked to run
the image the release pushes: the repository and pyproject.toml's version. `--image` points it
at another repository (a fork's registry) without editing the kustomization.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from release.version import IMAGE_REPOSITORY, ROOT, out_of_step, project_version

INSTALL = "install.yaml"


def kubectl() -> str:
    local = ROOT / ".venv" / "bin" / "kubectl"
    found = str(local) if local.exists() else shutil.which("kubectl")
    if not found:
        raise SystemExit("error: kubectl is needed to render the manifests (make venv has one)")
    return found


def render(*, version: str, repository: str = IMAGE_REPOSITORY) -> str:
    """The installation for `version`, its Deployment running `repository:version`."""
    stale = out_of_step()
    if stale:
        raise SystemExit("error: run `make version` first; out of step:\n  " + "\n  ".join(stale))
    rendered = subprocess.run(
        [kubectl(), "kustomize", str(ROOT / "deploy")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    docs: list[dict[str, Any]] = [d for d in yaml.safe_load_all(rendered) if d]
    image = f"{repository}:{version}"
    for doc in docs:
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                container["image"] = image
    header = (
        f"# Lapse {version}: kubectl apply --server-side -f {INSTALL}\n"
        f"# CRDs, the lapse-system namespace, RBAC, the operator ({image}) and its Services.\n"
    )
    return header + yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument("--image", default=IMAGE_REPOSITORY, help="the image's repository")
    args = parser.parse_args()
    args.dist.mkdir(parents=True, exist_ok=True)
    target = args.dist / INSTALL
    target.write_text(render(version=project_version(), repository=args.image))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
