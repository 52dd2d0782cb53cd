"""Lapse: temporary RBAC for Kubernetes.

`__version__` is the installed distribution's, so `lapse-operator --version` and `kubectl lapse
--version` say what pyproject.toml said when Lapse was built (release/version.py stamps the same
version into the chart and the manifests).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lapse")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0+unknown"
