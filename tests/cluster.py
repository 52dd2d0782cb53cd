"""The Kubernetes cluster an end-to-end test runs against, whichever backend provides it.

`local` starts the project's own API server (`python -m kubeapi`) as a subprocess, `kind`
takes pytest-kind's cluster where Docker exists, `kubeconfig` uses whatever `KUBECONFIG` names.
Tests see one `Cluster` with the same helpers in every case.

`Cluster` lives in `demo/harness.py` and `LocalServer` in `kubeapi/process.py`, since the demo
and the local API's load test use them too and nothing outside `tests/` imports `tests`; they
are imported here under their old names.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from demo.harness import (
    ROOT,
    VENV_BIN,
    AuditWebhook,
    Cluster,
    kubectl_binary,
    write_token_kubeconfig,
)
from kubeapi.process import READY_PREFIX, LocalServer, server_of

__all__ = [
    "READY_PREFIX",
    "ROOT",
    "VENV_BIN",
    "AuditWebhook",
    "Cluster",
    "LocalServer",
    "faults_client",
    "kubectl_binary",
    "server_of",
    "write_token_kubeconfig",
]


def faults_client(server: str, kubeconfig: Path) -> Any | None:
    """The fault controls of the local API (admin token and CA from the kubeconfig)."""
    try:
        from kubeapi import faults
    except ImportError:
        return None
    client_type = getattr(faults, "FaultsClient", None)
    if client_type is None:
        return None
    config = yaml.safe_load(kubeconfig.read_text())
    token = config["users"][0]["user"]["token"]
    ca_data = config["clusters"][0]["cluster"].get("certificate-authority-data")
    cafile = None
    if ca_data:
        ca_path = kubeconfig.with_name("ca.crt")
        ca_path.write_bytes(base64.b64decode(ca_data))
        cafile = str(ca_path)
    return client_type(server, token, cafile)
