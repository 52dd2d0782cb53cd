"""The built operator image, run as the shipped Deployment runs it (`make image-test`).

These tests need an image built by `make image` and buildah to run it; `make image-test` names
the image in `LAPSE_TEST_IMAGE`. Without it (as in `make test`) they are skipped, saying why.
"""

from __future__ import annotations

import os
import shutil

import pytest

IMAGE_VARIABLE = "LAPSE_TEST_IMAGE"
# Figures of the run, printed at the end: how long the image took to start.
FIGURES = pytest.StashKey[dict[str, float]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get(IMAGE_VARIABLE):
        skip = pytest.mark.skip(
            reason=f"no image: `make image && make image-test` names one in ${IMAGE_VARIABLE}"
        )
        for item in items:
            if "tests/image/" in item.nodeid:
                item.add_marker(skip)
    elif not shutil.which("buildah"):
        raise pytest.UsageError(
            "the image runs under buildah, which is not installed "
            "(Debian, Ubuntu: apt-get install -y buildah podman debootstrap)"
        )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FIGURES] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    figures = terminalreporter.config.stash.get(FIGURES, {})
    for name, seconds in figures.items():
        terminalreporter.write_line(f"image {name}: {seconds:.2f} s")
