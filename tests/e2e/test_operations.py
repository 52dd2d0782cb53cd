"""What a cluster's kubelet and Prometheus see of a running operator: health and metrics."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import yaml

from tests.deploy import metrics_contract
from tests.e2e.harness import Operator

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_liveness_endpoint_answers_for_the_deployment_probes(operator: Operator) -> None:
    with urllib.request.urlopen(operator.health_url, timeout=5) as response:
        assert response.status == 200


def test_metrics_endpoint_serves_lapse_series(operator: Operator) -> None:
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
        text = response.read().decode()
    assert "# TYPE lapse_active_grants gauge" in text
    assert "# TYPE lapse_revocation_lag_seconds histogram" in text


def exported_series(text: str) -> set[str]:
    """Every series name a query may use, from the live exposition's `# TYPE` lines."""
    series: set[str] = set()
    for line in text.splitlines():
        if not line.startswith("# TYPE lapse_"):
            continue
        _, _, name, kind = line.split()
        if kind == "histogram":
            series |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "counter" and not name.endswith("_total"):
            series.add(f"{name}_total")
        else:
            series.add(name)
    return series


def test_alerts_and_dashboard_watch_only_metrics_the_operator_exports(operator: Operator) -> None:
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
        live = exported_series(response.read().decode())
    assert live == metrics_contract.SERIES, "the metrics contract has drifted from /metrics"

    rules = yaml.safe_load((DEPLOY / "components/monitoring/prometheusrule.yaml").read_text())
    alerts = [rule["expr"] for group in rules["spec"]["groups"] for rule in group["rules"]]
    dashboard = json.loads((DEPLOY / "grafana/lapse-dashboard.json").read_text())
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert alerts and queries
    for expression in alerts + queries:
        assert metrics_contract.referenced(expression) <= live, expression
