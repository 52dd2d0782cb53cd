"""A webhook's name must be a domain of three labels or more, as kube-apiserver v1.36 checks:
Lapse names its webhooks `<id>.<configuration>`, so a configuration name without a dot is
refused by the real server and must be by the local API too."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.cluster import Cluster


def configuration(name: str, webhook: str) -> str:
    return json.dumps(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": webhook,
                    "clientConfig": {"url": "https://127.0.0.1:1/"},
                    "rules": [
                        {
                            "apiGroups": ["conformance.lapse.dev"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE"],
                            "resources": ["widgets"],
                        }
                    ],
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "failurePolicy": "Ignore",
                }
            ],
        }
    )


@pytest.mark.parametrize("webhook", ["requester.t-only-two", "one"])
def test_a_webhook_name_of_fewer_than_three_labels_is_invalid(
    cluster: Cluster, webhook: str
) -> None:
    name = f"cf-names-{uuid.uuid4().hex[:6]}"
    made = cluster.kubectl("create", "-f", "-", input=configuration(name, webhook), check=False)
    assert made.returncode != 0
    assert "is invalid" in made.stderr
    assert (
        f'webhooks[0].name: Invalid value: "{webhook}": should be a domain with at least three '
        "segments separated by dots" in made.stderr
    )


def test_a_webhook_name_of_three_labels_is_accepted(cluster: Cluster) -> None:
    name = f"cf-names-{uuid.uuid4().hex[:6]}"
    made = cluster.kubectl(
        "create", "-f", "-", input=configuration(name, f"requester.{name}.lapse.dev"), check=False
    )
    try:
        assert made.returncode == 0, made.stderr
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration", name, check=False)
