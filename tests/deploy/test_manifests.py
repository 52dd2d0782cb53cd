"""The installation artefacts render, agree with each other and grant no more than Lapse needs.

These tests need no cluster: kustomize is run through the real `kubectl kustomize`, the Helm
chart through Helm's own Go library (the `helm-python-sdk` wheel) when it is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from lapse import crdgen
from lapse.config import Settings
from tests.deploy.metrics_contract import METRICS, SERIES, referenced

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "lapse"
KUBECTL = shutil.which("kubectl", path=str(ROOT / ".venv" / "bin")) or shutil.which("kubectl")

DEFAULT_GRANTABLE = ["view", "edit", "admin", "cluster-admin"]
LAPSE_ENV = {
    "LAPSE_NAMESPACE",
    "LAPSE_WEBHOOK_MODE",
    "LAPSE_WEBHOOK_SERVICE",
    "LAPSE_WEBHOOK_PORT",
    "LAPSE_WEBHOOK_CONFIGURATION",
    "LAPSE_METRICS_PORT",
    "LAPSE_LIVENESS_ENDPOINT",
    "LAPSE_SWEEP_INTERVAL",
    "LAPSE_RETENTION",
    "LAPSE_TRAIL_RETRY_MAX",
    "LAPSE_LEADER_ELECTION",
    "LAPSE_LEASE_DURATION",
    "LAPSE_LEASE_RENEW",
    "LAPSE_DEPLOYMENT",
    "POD_NAME",
}

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (make venv)")


def kustomize(path: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    done = subprocess.run(
        [KUBECTL, "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def overlay(tmp_path: Path, *components: str) -> Path:
    """A kustomization outside the repository that adds the named components to deploy/."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize accepts only relative paths to other kustomizations.
                "resources": [os.path.relpath(DEPLOY, tmp_path)],
                "components": [
                    os.path.relpath(DEPLOY / "components" / c, tmp_path) for c in components
                ],
            }
        )
    )
    return tmp_path


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (make venv)")
    return kustomize(DEPLOY)


def test_base_renders_the_installation(base: list[dict[str, Any]]) -> None:
    kinds = Counter(d["kind"] for d in base)
    assert kinds == {
        "CustomResourceDefinition": 3,
        "Namespace": 1,
        "ServiceAccount": 1,
        "ClusterRole": 1,
        "ClusterRoleBinding": 1,
        "Role": 1,
        "RoleBinding": 1,
        "Deployment": 1,
        "Service": 2,
        "PodDisruptionBudget": 1,
        "MutatingWebhookConfiguration": 1,
        "ValidatingWebhookConfiguration": 1,
    }
    namespaced = [d for d in base if d["kind"] in {"ServiceAccount", "Role", "Deployment"}]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"lapse-system"}


def test_base_carries_the_generated_crds(base: list[dict[str, Any]]) -> None:
    rendered = {d["metadata"]["name"]: d for d in base if d["kind"] == "CustomResourceDefinition"}
    generated = {s.name: crdgen.crd(s) for s in crdgen.CRDS}
    assert set(rendered) == set(generated)
    for name, crd in generated.items():
        assert rendered[name]["spec"] == crd["spec"], name


def test_samples_are_not_installed(base: list[dict[str, Any]]) -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert not any("samples" in r for r in kustomization["resources"])
    assert not any(d["kind"] in {"AccessPolicy", "AccessRequest", "BreakGlass"} for d in base)


def test_helm_crds_equal_the_generated_crds() -> None:
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == sorted(crdgen.generate())
    for name, text in crdgen.generate().items():
        assert (CHART / "crds" / name).read_text() == text, f"{name}: copy crds/ into the chart"


def all_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for d in docs if d["kind"] in {"ClusterRole", "Role"} for r in d["rules"]]


def test_no_wildcard_in_any_rule(base: list[dict[str, Any]]) -> None:
    rules = all_rules(base)
    assert rules
    for rule in rules:
        for key in ("verbs", "resources", "apiGroups", "resourceNames"):
            assert not any("*" in value for value in rule.get(key, [])), rule


def grants(docs: list[dict[str, Any]], kind: str) -> set[tuple[str, str, str, str]]:
    """(apiGroup, resource, verb, resourceName or '') for every permission of a role."""
    role = one(docs, kind, "lapse-operator")
    return {
        (group, resource, verb, name)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames", [""])
    }


def test_cluster_role_is_what_the_operator_does(base: list[dict[str, Any]]) -> None:
    granted = grants(base, "ClusterRole")
    for resource in ("accesspolicies", "accessrequests", "breakglasses"):
        for verb in ("get", "list", "watch", "patch"):
            assert ("lapse.dev", resource, verb, "") in granted
        for verb in ("update", "patch"):
            assert ("lapse.dev", f"{resource}/status", verb, "") in granted
        assert ("lapse.dev", resource, "create", "") not in granted
    # Retention deletes ended requests and break-glasses; never a policy.
    assert ("lapse.dev", "accessrequests", "delete", "") in granted
    assert ("lapse.dev", "breakglasses", "delete", "") in granted
    assert ("lapse.dev", "accesspolicies", "delete", "") not in granted
    for resource in ("rolebindings", "clusterrolebindings"):
        for verb in ("create", "get", "list", "watch", "delete", "patch", "update"):
            assert ("rbac.authorization.k8s.io", resource, verb, "") in granted
    # `bind` exactly on the grantable roles, `get` to tell a missing role apart, `list` and
    # `watch` to notice a bound role drifting, `delete` to remove roles a grantee made under a
    # grant, and no way to create, update or patch roles.
    bind = {(r, n) for g, r, v, n in granted if v == "bind"}
    assert bind == {(r, n) for r in ("clusterroles", "roles") for n in DEFAULT_GRANTABLE}
    on_roles = {(r, v, n) for g, r, v, n in granted if r in {"clusterroles", "roles"}}
    assert {(r, v, n) for r, v, n in on_roles if v != "bind"} == {
        ("clusterroles", "get", ""),
        ("roles", "get", ""),
        ("clusterroles", "delete", ""),
        ("roles", "delete", ""),
        ("clusterroles", "list", ""),
        ("roles", "list", ""),
        ("clusterroles", "watch", ""),
        ("roles", "watch", ""),
    }
    # Footholds: delete only, on the kinds a grantee's workloads come in (and `get` on pods,
    # for the account a connection into one could read); never create, list or watch.
    workloads = {
        ("", "pods"),
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("apps", "replicasets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
    }
    assert {(g, r, v) for g, r, v, n in granted if (g, r) in workloads} == {
        (g, r, "delete") for g, r in workloads
    } | {("", "pods", "get")}
    assert not any(v == "escalate" for g, r, v, n in granted)
    # Secrets and leases only in the operator's own namespace (the Role), never cluster-wide.
    assert not any(r in {"secrets", "leases"} for g, r, v, n in granted)
    assert ("", "namespaces", "watch", "") in granted
    assert ("", "namespaces", "patch", "") not in granted
    assert ("apiextensions.k8s.io", "customresourcedefinitions", "list", "") in granted
    assert ("apiextensions.k8s.io", "customresourcedefinitions", "create", "") not in granted
    for group in ("", "events.k8s.io"):
        assert (group, "events", "create", "") in granted
    # Webhook configurations: only Lapse's own may be changed.
    for resource in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        assert ("admissionregistration.k8s.io", resource, "create", "") in granted
        assert ("admissionregistration.k8s.io", resource, "patch", "lapse.dev") in granted
        assert ("admissionregistration.k8s.io", resource, "patch", "") not in granted
        assert ("admissionregistration.k8s.io", resource, "delete", "") not in granted


def test_namespace_role_and_bindings(base: list[dict[str, Any]]) -> None:
    granted = grants(base, "Role")
    assert granted == {
        *(("coordination.k8s.io", "leases", v, "") for v in
          ("get", "list", "watch", "create", "update", "patch")),
        *(("", "secrets", v, "") for v in ("get", "create", "update")),
        *(("", "configmaps", v, "") for v in ("get", "create", "update")),
        ("apps", "deployments", "get", "lapse-operator"),
    }  # fmt: skip
    subject = {"kind": "ServiceAccount", "name": "lapse-operator", "namespace": "lapse-system"}
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = one(base, kind, "lapse-operator")
        assert binding["subjects"] == [subject]
        assert binding["roleRef"]["kind"] == role_kind
        assert binding["roleRef"]["name"] == "lapse-operator"


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def test_deployment_is_hardened(base: list[dict[str, Any]]) -> None:
    deployment = one(base, "Deployment", "lapse-operator")
    # Two replicas elect a leader (docs/ha.md); never more than one down during a rollout.
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    env = {e["name"]: e for e in container(base)["env"]}
    assert env["LAPSE_LEADER_ELECTION"]["value"] == "on"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "lapse-operator"
    # Service links would name the Service lapse-webhook LAPSE_WEBHOOK_PORT=tcp://… here.
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(base)
    security = c["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert set(c["resources"]) == {"requests", "limits"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Ready only when the webhook port serves the certificate, over TLS as the API server
    # calls it; a stopping replica answers on while the endpoints drop it.
    ready = {"path": "/readyz", "port": "webhook", "scheme": "HTTPS"}
    assert c["readinessProbe"]["httpGet"] == ready
    assert c["lifecycle"]["preStop"]["sleep"]["seconds"] >= 3
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["LAPSE_LIVENESS_ENDPOINT"] == "http://0.0.0.0:8080/healthz"
    assert c["image"] == "ghcr.io/lapse-dev/lapse:0.1.0"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert set(env) == LAPSE_ENV
    assert env["LAPSE_WEBHOOK_MODE"] == "service"
    # The certificate comes from a Secret through the API, never from a file: /tmp only.
    assert set(mounts) == {"/tmp"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"webhook": 9443, "metrics": 9090, "health": 8080}
    assert env["LAPSE_WEBHOOK_PORT"] == "9443"
    assert env["LAPSE_METRICS_PORT"] == "9090"
    # An uninstall is told from a restart by this very Deployment going away, and ending every
    # grant then must fit in the grace period after the preStop sleep.
    assert env["LAPSE_DEPLOYMENT"] == deployment["metadata"]["name"]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert grace >= pause + Settings().uninstall_timeout + 5


def test_env_names_are_ones_the_operator_reads(base: list[dict[str, Any]]) -> None:
    config = (ROOT / "operator" / "lapse" / "config.py").read_text()
    for name in LAPSE_ENV:
        assert f'"{name}"' in config, name


def test_services_reach_the_operator(base: list[dict[str, Any]]) -> None:
    labels = one(base, "Deployment")["spec"]["template"]["metadata"]["labels"]
    webhook = one(base, "Service", "lapse-webhook")
    metrics = one(base, "Service", "lapse-metrics")
    for service in (webhook, metrics):
        assert service["spec"]["selector"].items() <= labels.items()
    assert {(p["port"], p["targetPort"]) for p in webhook["spec"]["ports"]} >= {(443, "webhook")}
    assert [(p["name"], p["port"]) for p in metrics["spec"]["ports"]] == [("metrics", 9090)]
    # The API server dials the Service, never a URL it would resolve with its own resolver.
    env = {e["name"]: e.get("value") for e in container(base)["env"]}
    assert "LAPSE_WEBHOOK_HOST" not in env
    assert env["LAPSE_WEBHOOK_SERVICE"] == webhook["metadata"]["name"]
    assert [p["port"] for p in webhook["spec"]["ports"]] == [443]


def test_webhook_configurations_ship_empty_and_one_replica_stays(
    base: list[dict[str, Any]],
) -> None:
    """The leader fills the configurations; shipping them lets every uninstall route delete
    them, and an empty list keeps a re-apply from touching what the leader wrote."""
    name = {e["name"]: e.get("value") for e in container(base)["env"]}[
        "LAPSE_WEBHOOK_CONFIGURATION"
    ]
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        configuration = one(base, kind, name)
        assert "webhooks" not in configuration
    budget = one(base, "PodDisruptionBudget", "lapse-operator")
    labels = one(base, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_cert_manager_component_serves_the_certificate(tmp_path: Path) -> None:
    """cert-manager issues into the Secret Lapse serves from, its cainjector owns caBundle,
    and Lapse is told to make no CA."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (make venv)")
    docs = kustomize(overlay(tmp_path, "cert-manager"))
    certificate = one(docs, "Certificate", "lapse-webhook")
    assert "lapse-webhook.lapse-system.svc" in certificate["spec"]["dnsNames"]
    env = {e["name"]: e.get("value") for e in container(docs)["env"]}
    assert env["LAPSE_WEBHOOK_CERTIFICATE"] == "cert-manager"
    assert certificate["spec"]["secretName"] == Settings().webhook_secret
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        annotations = one(docs, kind, "lapse.dev")["metadata"]["annotations"]
        assert annotations["cert-manager.io/inject-ca-from"] == "lapse-system/lapse-webhook"
    issuers = {d["metadata"]["name"] for d in docs if d["kind"] == "Issuer"}
    assert certificate["spec"]["issuerRef"]["name"] in issuers


def prometheus_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rule = one(docs, "PrometheusRule", "lapse")
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


def test_monitoring_component_scrapes_and_alerts(tmp_path: Path) -> None:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (make venv)")
    docs = kustomize(overlay(tmp_path, "monitoring"))
    monitor = one(docs, "ServiceMonitor", "lapse")
    service = one(docs, "Service", "lapse-metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    alerts = {r["alert"]: r["expr"] for r in prometheus_rules(docs)}
    assert set(alerts) == {
        "LapseBreakGlassActive",
        "LapseBreakGlassUnreviewed",
        "LapseRevocationLagHigh",
        "LapseOperatorDown",
        "LapseReconcileErrors",
        "LapseWebhookCertificateExpiring",
        "LapsePolicyExposed",
        "LapseTrailSinkDown",
        "LapseTrailBacklog",
        "LapseRetentionHeld",
    }
    assert "lapse_breakglass_active" in alerts["LapseBreakGlassActive"]
    assert "lapse_breakglass_unreviewed" in alerts["LapseBreakGlassUnreviewed"]
    lag = " ".join(alerts["LapseRevocationLagHigh"].split())
    assert "histogram_quantile(0.99," in lag
    assert "lapse_revocation_lag_seconds_bucket[5m]" in lag
    assert lag.endswith("> 1")
    assert alerts["LapseOperatorDown"].startswith("absent(up{")
    assert "rate(lapse_errors_total[5m])" in alerts["LapseReconcileErrors"]
    # Renewal is due 30 days before the end: 14 days left means it failed.
    expiring = alerts["LapseWebhookCertificateExpiring"]
    assert "lapse_webhook_certificate_expiry_timestamp_seconds" in expiring
    assert expiring.endswith("< 14 * 86400")


def alert_expressions() -> list[str]:
    doc = yaml.safe_load((DEPLOY / "components" / "monitoring" / "prometheusrule.yaml").read_text())
    return [r["expr"] for g in doc["spec"]["groups"] for r in g["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "lapse-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def test_alerts_and_dashboard_use_only_exported_metrics() -> None:
    used = set().union(*map(referenced, alert_expressions() + dashboard_expressions()))
    assert used, "no lapse_ metric found: the expressions were not read"
    assert used <= SERIES, used - SERIES


def test_referenced_finds_histogram_series() -> None:
    assert referenced("sum(rate(lapse_x_bucket[5m])) / lapse_y") == {"lapse_x_bucket", "lapse_y"}
    assert "lapse_grant_latency_seconds_bucket" in SERIES
    assert "lapse_grant_latency_seconds" in METRICS


def test_dashboard_shows_what_an_on_call_needs() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "lapse-dashboard.json").read_text())
    exprs = " ".join(dashboard_expressions())
    for metric in (
        "lapse_active_grants",
        "lapse_breakglass_active",
        "lapse_breakglass_unreviewed",
        "lapse_grant_latency_seconds_bucket",
        "lapse_revocation_lag_seconds_bucket",
        "lapse_requests_total",
        "lapse_decisions_total",
        "lapse_errors_total",
    ):
        assert metric in exprs, metric
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}," in exprs
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "lapse-overview"


def test_helm_alerts_equal_the_kustomize_alerts() -> None:
    chart_groups = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    doc = yaml.safe_load((DEPLOY / "components" / "monitoring" / "prometheusrule.yaml").read_text())
    assert chart_groups == {"groups": doc["spec"]["groups"]}


def test_dockerfile_builds_a_non_root_image_without_compilers() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) == 2
    assert "ARG BASE=docker.io/library/python:3.11." in text and "-slim" in text
    final = text.split(stages[1], 1)[1]
    assert "USER 65532:65532" in final
    assert 'ENTRYPOINT ["lapse-operator"]' in final
    for compiler in ("gcc", "build-essential", "apt-get install"):
        assert compiler not in final
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") :][:4] == ["*", "!pyproject.toml", "!README.md", "!operator/"]


# Helm: rendered with Helm's Go library when the helm-python-sdk wheel is installed.


def helm_render(
    values: dict[str, Any] | None = None, *, hooks: bool = False
) -> list[dict[str, Any]]:
    """What the chart installs (the CRDs and its objects), or with `hooks` only its hooks."""
    chart_mod = pytest.importorskip("helm_python.chart")
    with chart_mod.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name="lapse", namespace="lapse-system", is_install=True)
    docs = [
        d
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for d in yaml.safe_load_all(text)
        if d
    ]
    hooked = [d for d in docs if "helm.sh/hook" in (d["metadata"].get("annotations") or {})]
    if hooks:
        return hooked
    crds = [yaml.safe_load((CHART / "crds" / n).read_text()) for n in sorted(crdgen.generate())]
    return crds + [d for d in docs if d not in hooked]


def test_helm_uninstall_first_stops_the_deployment() -> None:
    """`helm uninstall` runs, before deleting anything, a Job that stops the operator's
    Deployment and waits while its replicas end every grant; it may do nothing else."""
    hooks = helm_render(hooks=True)
    assert {d["metadata"]["annotations"]["helm.sh/hook"] for d in hooks} == {"pre-delete"}
    job = one(hooks, "Job", "lapse-uninstall")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["args"][0] == "uninstall"
    assert c["image"] == container(helm_render())["image"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["LAPSE_DEPLOYMENT"] == one(helm_render(), "Deployment")["metadata"]["name"]
    # The operator's own account, which Helm has not deleted yet and which may already get
    # and delete its Deployment: the hook brings no RBAC of its own.
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "lapse-operator"
    assert job["spec"]["template"]["spec"]["enableServiceLinks"] is False
    assert [d["kind"] for d in hooks] == ["Job"]
    installed = helm_render()
    rules = [r for d in installed if d["kind"] in ("Role", "ClusterRole") for r in d["rules"]]
    for verb in ("get", "delete"):
        assert any(
            "apps" in r["apiGroups"] and "deployments" in r["resources"] and verb in r["verbs"]
            for r in rules
        ), verb
    assert helm_render({"uninstall": {"endGrants": False}}, hooks=True) == []


def test_helm_lint_is_clean() -> None:
    chart_mod = pytest.importorskip("helm_python.chart")
    result = chart_mod.lint(str(CHART), strict=True)
    assert result["errors"] == []
    assert [m for m in result["messages"] if m["severity"] > 1] == []


def test_helm_renders_the_same_objects_as_kustomize(base: list[dict[str, Any]]) -> None:
    chart = helm_render({"namespace": {"create": True}})
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, chart)) == sorted(map(key, base))
    assert grants(chart, "ClusterRole") == grants(base, "ClusterRole")
    assert grants(chart, "Role") == grants(base, "Role")
    for kind in ("Deployment", "Service"):
        for name in {d["metadata"]["name"] for d in base if d["kind"] == kind}:
            assert one(chart, kind, name)["spec"] == one(base, kind, name)["spec"], name
    assert container(chart)["image"] == container(base)["image"]


def test_helm_without_namespace_creation_leaves_it_to_helm() -> None:
    kinds = {d["kind"] for d in helm_render()}
    assert "Namespace" not in kinds
    assert {"Deployment", "ClusterRole", "CustomResourceDefinition"} <= kinds


def test_helm_grantable_roles_set_bind() -> None:
    chart = helm_render({"grantableRoles": ["view", "payments-operator"]})
    bind = {(r, n) for g, r, v, n in grants(chart, "ClusterRole") if v == "bind"}
    assert bind == {
        (r, n) for r in ("clusterroles", "roles") for n in ("view", "payments-operator")
    }


def test_helm_refuses_an_empty_grantable_list() -> None:
    errors = pytest.importorskip("helm_python.errors")
    with pytest.raises(errors.HelmError, match="grantableRoles must name at least one role"):
        helm_render({"grantableRoles": []})


def test_helm_options_match_the_kustomize_components(tmp_path: Path) -> None:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (make venv)")
    chart = helm_render(
        {
            "namespace": {"create": True},
            "monitoring": {"enabled": True},
            "certManager": {"enabled": True},
        }
    )
    docs = kustomize(overlay(tmp_path, "cert-manager", "monitoring"))
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, chart)) == sorted(map(key, docs))
    assert prometheus_rules(chart) == prometheus_rules(docs)
    for kind in ("Deployment", "Certificate", "Issuer", "ServiceMonitor"):
        for name in {d["metadata"]["name"] for d in docs if d["kind"] == kind}:
            assert unordered(one(chart, kind, name)["spec"]) == unordered(
                one(docs, kind, name)["spec"]
            ), (kind, name)


def unordered(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec with its pod volumes sorted by name: kustomize's patches may reorder them."""
    pod = spec.get("template", {}).get("spec", {})
    if "volumes" in pod:
        pod["volumes"] = sorted(pod["volumes"], key=lambda v: v["name"])
    return spec


def test_helm_ports_and_image_follow_values() -> None:
    chart = helm_render(
        {
            "image": {"repository": "registry.example/lapse", "tag": "9.9.9"},
            "webhook": {"port": 10443},
            "metrics": {"port": 19090},
        }
    )
    c = container(chart)
    assert c["image"] == "registry.example/lapse:9.9.9"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert (env["LAPSE_WEBHOOK_PORT"], env["LAPSE_METRICS_PORT"]) == ("10443", "19090")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert (ports["webhook"], ports["metrics"]) == (10443, 19090)
    metrics = one(chart, "Service", "lapse-metrics")
    assert metrics["spec"]["ports"][0]["port"] == 19090


def test_helm_trail_sinks_read_their_secrets_from_mounted_files() -> None:
    """Each sink's credentials come from a Secret mounted read-only, never from a value in
    the Deployment: a token in an env value is readable by whoever may read the Deployment."""
    values = {
        "retention": "24h",
        "trail": {
            "syslog": {
                "address": "syslog.example.com:6514",
                "caSecret": "siem-ca",
                "clientCertSecret": "lapse-syslog-client",
            },
            "https": {
                "url": "https://hec.example.com:8088/services/collector/event",
                "tokenSecret": "hec-token",
                "caSecret": "siem-ca",
            },
        },
    }
    deployment = one(helm_render(values), "Deployment", "lapse-operator")
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["LAPSE_RETENTION"] == "24h"
    assert env["LAPSE_TRAIL_SYSLOG_ADDRESS"] == "syslog.example.com:6514"
    assert env["LAPSE_TRAIL_HTTPS_URL"].startswith("https://hec.example.com")
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    for variable, secret in (
        ("LAPSE_TRAIL_SYSLOG_CA_FILE", "siem-ca"),
        ("LAPSE_TRAIL_SYSLOG_CERT_FILE", "lapse-syslog-client"),
        ("LAPSE_TRAIL_SYSLOG_KEY_FILE", "lapse-syslog-client"),
        ("LAPSE_TRAIL_HTTPS_TOKEN_FILE", "hec-token"),
        ("LAPSE_TRAIL_HTTPS_CA_FILE", "siem-ca"),
    ):
        directory = env[variable].rsplit("/", 1)[0]
        mount = mounts[directory]
        assert mount["readOnly"] is True
        assert secrets[mount["name"]] == secret, variable
    assert "LAPSE_TRAIL_HTTPS_CERT_FILE" not in env
    # Without sinks, nothing of the trail is set or mounted.
    plain = one(helm_render(), "Deployment", "lapse-operator")["spec"]["template"]["spec"]
    assert not any(
        e["name"].startswith("LAPSE_TRAIL_") and e["name"] != "LAPSE_TRAIL_RETRY_MAX"
        for e in plain["containers"][0]["env"]
    )
    assert [v["name"] for v in plain["volumes"]] == ["tmp"]
