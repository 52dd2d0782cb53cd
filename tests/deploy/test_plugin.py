"""`kubectl lapse` as users install it: a krew plugin archive, or `pip install`.

The krew archive is built as a release builds it (`python -m plugins.krew`, what `make plugin`
runs) for this machine's platform, installed the way krew installs it (unpacked, its `bin`
linked into a directory on PATH), and found and run by the real kubectl against the cluster.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.cluster import Cluster, kubectl_binary

ROOT = Path(__file__).resolve().parents[2]
HOST = {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}.get(platform.machine())
VERSION = "v" + tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def build(dist: Path) -> subprocess.CompletedProcess[str]:
    assert HOST is not None
    return subprocess.run(
        [sys.executable, "-m", "plugins.krew", "--dist", str(dist), "--platform", HOST],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip


def test_the_manifest_template_covers_the_released_platforms() -> None:
    template = (ROOT / "plugins" / "lapse.yaml").read_text()
    for os_name, arch in (("linux", "amd64"), ("linux", "arm64"), ("darwin", "arm64")):
        assert f"matchLabels: {{os: {os_name}, arch: {arch}}}" in template
        assert f"kubectl-lapse_{{{{ .TagName }}}}_{os_name}_{arch}.tar.gz" in template


@pytest.mark.skipif(HOST is None or sys.platform != "linux", reason="builds for linux hosts")
def test_krew_archive_installs_and_runs_against_the_cluster(
    tmp_path: Path, cluster: Cluster
) -> None:
    dist = tmp_path / "dist"
    build(dist)
    manifest = yaml.safe_load((dist / "lapse.yaml").read_text())
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert manifest["kind"] == "Plugin" and manifest["metadata"]["name"] == "lapse"
    spec = manifest["spec"]
    assert spec["version"] == VERSION and spec["shortDescription"] and spec["homepage"]
    (entry,) = spec["platforms"]  # only what was built is named
    os_name, arch = HOST.split("/")
    assert entry["selector"]["matchLabels"] == {"os": os_name, "arch": arch}
    archive = dist / f"kubectl-lapse_{VERSION}_{os_name}_{arch}.tar.gz"
    assert entry["uri"].endswith(f"/{VERSION}/{archive.name}")
    assert entry["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert entry["bin"] == "kubectl-lapse"

    # Reproducible: the same commit gives the same archive, so the manifest's sha256 holds.
    again = tmp_path / "again"
    build(again)
    assert (again / archive.name).read_bytes() == archive.read_bytes()

    # As krew installs it: unpacked into its store, `bin` linked into ~/.krew/bin.
    store = tmp_path / "krew" / "store" / "lapse" / VERSION
    store.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(store, filter="data")
    bin_dir = tmp_path / "krew" / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl-lapse").symlink_to(store / entry["bin"])
    # Only krew's bin and a plain Python 3.11 on PATH: not the project's venv.
    python_dir = Path(os.path.realpath(sys.executable)).parent
    env = {
        **cluster.env(),
        "PATH": os.pathsep.join([str(bin_dir), str(python_dir), "/usr/bin", "/bin"]),
    }
    env.pop("PYTHONPATH", None)
    listed = subprocess.run(
        [kubectl_binary(), "plugin", "list"], env=env, capture_output=True, text=True
    )
    assert str(bin_dir / "kubectl-lapse") in listed.stdout, listed.stdout + listed.stderr
    helped = subprocess.run(
        [kubectl_binary(), "lapse", "--help"], env=env, capture_output=True, text=True
    )
    assert helped.returncode == 0, helped.stderr
    assert "breakglass" in helped.stdout and "approve" in helped.stdout
    cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s", "-f", str(ROOT / "crds")
    )
    listing = subprocess.run(
        [kubectl_binary(), "lapse", "list", "-A"], env=env, capture_output=True, text=True
    )
    assert listing.returncode == 0, listing.stderr
    assert "Traceback" not in listing.stderr


def test_pip_install_gives_the_kubectl_lapse_command(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("lapse-*.whl")
    with zipfile.ZipFile(wheel) as packed:
        name = next(n for n in packed.namelist() if n.endswith(".dist-info/entry_points.txt"))
        entry_points = packed.read(name).decode()
    assert "kubectl-lapse = lapse.cli:main" in entry_points
