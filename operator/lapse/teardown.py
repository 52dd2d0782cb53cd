"""The first step of uninstalling Lapse: stop its Deployment and wait while the replicas end
every grant (`lapse-operator uninstall`, the Helm chart's pre-delete hook).

A stopping replica ends every grant when it sees its Deployment going away (lapse.uninstall),
but only while it still holds its RBAC — and an uninstall deletes the ClusterRoleBinding in
the same second as the Deployment, before the replicas are even sent SIGTERM. So this runs
before anything else is deleted: the Deployment goes with foreground propagation, which keeps
it until its pods are gone, and this returns once it is gone (or says it was not in time).
"""

from __future__ import annotations

import sys
import time

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException

from lapse.config import Settings


def _client() -> kubernetes.client.ApiClient:
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    return kubernetes.client.ApiClient()


def stop_deployment(settings: Settings, timeout: float) -> int:
    """Delete the Deployment (foreground) and wait until it is gone; the exit status."""
    name, namespace = settings.deployment, settings.namespace
    if not name:
        print("lapse-operator: error: LAPSE_DEPLOYMENT names no Deployment.", file=sys.stderr)
        return 2
    apps = kubernetes.client.AppsV1Api(_client())
    try:
        apps.delete_namespaced_deployment(name, namespace, propagation_policy="Foreground")
    except ApiException as error:
        if error.status == 404:
            print(f"Deployment {namespace}/{name} is not there: nothing to stop.")
            return 0
        print(f"lapse-operator: error: cannot delete Deployment {namespace}/{name}: "
              f"{error.status} {error.reason}", file=sys.stderr)  # fmt: skip
        return 1
    print(f"Stopping Deployment {namespace}/{name}: its replicas end every grant first.")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            apps.read_namespaced_deployment(name, namespace)
        except ApiException as error:
            if error.status == 404:
                print(f"Deployment {namespace}/{name} is gone: Lapse may be uninstalled.")
                return 0
            raise
        time.sleep(1)
    print(
        f"lapse-operator: error: Deployment {namespace}/{name} still there after {timeout:.0f} s; "
        "grants may be left: see deploy/README.md, Uninstalling.",
        file=sys.stderr,
    )
    return 1
