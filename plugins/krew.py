"""`make plugin`: the krew archives of `kubectl lapse` and the manifest that names them.

A krew plugin is one archive per platform plus a manifest giving each archive's uri and sha256.
`kubectl lapse` is Python, so each archive holds a launcher script, Lapse's own package and the
CLI's libraries as that platform's wheels for CPython 3.11, unpacked. Archives are reproducible
(entries sorted, times and owners fixed), so the sha256 in a manifest matches an archive built
from the same commit anywhere.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "plugins" / "lapse.yaml"
PACKAGE = ROOT / "operator" / "lapse"
HOMEPAGE = "https://github.com/lapse-dev/lapse"
RELEASES = f"{HOMEPAGE}/releases/download"
PYTHON = "3.11"
# What `lapse.cli` imports beyond the standard library (it never imports the operator's kopf,
# aiohttp or prometheus-client); versions as in pyproject.toml.
CLI_DEPENDENCIES = ("kubernetes>=29", "pydantic>=2.6,<3", "PyYAML>=6")
PLATFORMS = {
    "linux/amd64": "manylinux2014_x86_64",
    "linux/arm64": "manylinux2014_aarch64",
    "darwin/arm64": "macosx_11_0_arm64",
}
LAUNCHER = """\
#!/bin/sh
# kubectl lapse as krew installs it: Lapse and its libraries in lib/ beside this script.
here=$(dirname "$(readlink -f "$0")")
for python in python3.11 python3; do
  if command -v "$python" >/dev/null 2>&1 &&
     "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    PYTHONPATH="$here/lib" exec "$python" -c \\
      'import sys; from lapse.cli import main; sys.exit(main(sys.argv[1:]))' "$@"
  fi
done
echo "error: kubectl lapse needs Python 3.11 (python3.11 or python3 on PATH)" >&2
exit 1
"""
_URI_AND_SHA = re.compile(
    r'^(?P<indent>\s*)\{\{addURIAndSha "(?P<uri>[^"]+)" \.TagName \}\}$', re.M
)


@dataclass(frozen=True)
class Archive:
    platform: str
    path: Path
    sha256: str


def version() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return f"v{project['version']}"


def archive_name(tag: str, platform: str) -> str:
    return f"kubectl-lapse_{tag}_{platform.replace('/', '_')}.tar.gz"


def _install_libraries(lib: Path, platform: str) -> None:
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--target", str(lib), "--only-binary=:all:", "--platform", PLATFORMS[platform],
            "--python-version", PYTHON, "--implementation", "cp", "--no-compile",
            *CLI_DEPENDENCIES,
        ],
        check=True,
    )  # fmt: skip
    shutil.copytree(PACKAGE, lib / "lapse", ignore=shutil.ignore_patterns("__pycache__"))


def _tar(tree: Path, out: Path) -> None:
    """A gzip'd tar of `tree` that depends on its contents alone."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(tree.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(tree)))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if path.is_dir() or info.mode & 0o100 else 0o644
            if path.is_file():
                with path.open("rb") as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)
    with out.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed:
        packed.write(buffer.getvalue())


def build_archive(platform: str, dist: Path, tag: str) -> Archive:
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch)
        _install_libraries(tree / "lib", platform)
        launcher = tree / "kubectl-lapse"
        launcher.write_text(LAUNCHER)
        launcher.chmod(0o755)
        out = dist / archive_name(tag, platform)
        _tar(tree, out)
    return Archive(platform, out, hashlib.sha256(out.read_bytes()).hexdigest())


def render_manifest(template: str, tag: str, archives: dict[str, Archive]) -> str:
    """The template with each archive's uri and sha256; a platform not built is left out."""
    # The template's own comment is about the template, not the plugin.
    template = re.sub(r"\A(?:#.*\n)+", "", template)
    text = template.replace("{{ .ReleaseURL }}", RELEASES).replace("{{ .Homepage }}", HOMEPAGE)
    text = text.replace("{{ .TagName }}", tag)
    by_name = {archive_name(tag, platform): archive for platform, archive in archives.items()}

    def fill(match: re.Match[str]) -> str:
        uri = match["uri"]
        archive = by_name[uri.rsplit("/", 1)[-1]]
        indent = match["indent"]
        return f"{indent}uri: {uri}\n{indent}sha256: {archive.sha256}"

    kept = []
    for entry in re.split(r"(?m)^(?=    - selector:)", text):
        found = _URI_AND_SHA.search(entry)
        if found is None or found["uri"].rsplit("/", 1)[-1] in by_name:
            kept.append(entry)
    return _URI_AND_SHA.sub(fill, "".join(kept))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plugins.krew", description=__doc__)
    parser.add_argument("--dist", type=Path, default=ROOT / "dist")
    parser.add_argument(
        "--platform", action="append", choices=sorted(PLATFORMS), help="default: all"
    )
    args = parser.parse_args(argv)
    tag = version()
    args.dist.mkdir(parents=True, exist_ok=True)
    archives = {p: build_archive(p, args.dist, tag) for p in args.platform or sorted(PLATFORMS)}
    manifest = args.dist / "lapse.yaml"
    manifest.write_text(render_manifest(TEMPLATE.read_text(), tag, archives))
    for archive in archives.values():
        print(f"{archive.path}  {archive.sha256}")
    print(f"wrote {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
