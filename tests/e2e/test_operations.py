"""What a cluster's kubelet and Prometheus see of a running operator: health and metrics."""

from __future__ import annotations

import urllib.request

from tests.e2e.harness import Operator


def test_liveness_endpoint_answers_for_the_deployment_probes(operator: Operator) -> None:
    with urllib.request.urlopen(operator.health_url, timeout=5) as response:
        assert response.status == 200


def test_metrics_endpoint_serves_lapse_series(operator: Operator) -> None:
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
        text = response.read().decode()
    assert "# TYPE lapse_active_grants gauge" in text
    assert "# TYPE lapse_revocation_lag_seconds histogram" in text
