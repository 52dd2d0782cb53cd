"""What an SRE did with a break-glass, from the API server's audit log, shown to the reviewer.

The cluster's API server sends its audit events to the operator's `/audit` (the local API is
started that way; a real one is configured so, see docs/activity.md). During a break-glass the
SRE deletes a pod, scales a deployment, reads a Secret and is refused a RoleBinding; the review
and `kubectl lapse report` show exactly those, with their times, and nothing the SRE did
before or after the glass, nor anything anyone else did meanwhile. An operator killed in the
middle loses nothing it had already written.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from tests.cluster import AuditWebhook, Cluster, kubectl_binary
from tests.conftest import TEST_PREFIX
from tests.e2e.conftest import SAMPLES, Operator, operator_backend, parse_time, wait_for

RBAC = "rbac.authorization.k8s.io"
# The API server batches audit events for up to a second (a real one as configured for these
# tests, the local one likewise); the operator writes what it folded every half second.
SETTLE = 3.0


@pytest.fixture(autouse=True)
def audited(audit_webhook: AuditWebhook | None) -> None:
    if audit_webhook is None:
        pytest.skip("this cluster's API server sends no audit events to Lapse (LAPSE_TEST_AUDIT_*)")
    if operator_backend() == "in-cluster":
        # LAPSE_TEST_AUDIT_* name a port on this machine, where only a local process listens.
        pytest.skip("in-cluster operator: the API server's audit webhook names a local process")


@dataclass
class Incident:
    cluster: Cluster
    namespace: str
    sre: str
    oncall: str
    leads: str
    glass: str

    def as_sre(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(
            *args, as_user=self.sre, groups=(self.oncall,), input=input, check=check
        )

    def lapse(self, *args: str, user: str, groups: tuple[str, ...]) -> str:
        command = [kubectl_binary(), "lapse", *args, f"--as={user}"]
        command += [f"--as-group={g}" for g in groups]
        result = subprocess.run(
            command, capture_output=True, text=True, env=self.cluster.env(), timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout + result.stderr

    def status(self) -> dict[str, Any]:
        result = self.cluster.kubectl("get", "breakglass", self.glass, "-o", "json")
        return dict(json.loads(result.stdout).get("status") or {})

    def activity_shows(self, count: int) -> dict[str, Any]:
        def written() -> dict[str, Any] | None:
            activity = self.status().get("activity") or {}
            return activity if activity.get("events", 0) >= count else None

        return wait_for(written, 15, 0.2, f"{count} audit events in status.activity")


@pytest.fixture
def incident(cluster: Cluster, namespace: str, operator: Operator) -> Iterator[Incident]:
    cluster.kubectl("apply", "-f", str(SAMPLES / "breakglass-clusterrole.yaml"))
    oncall, leads = f"{namespace}-oncall", f"{namespace}-leads"
    for group, role in ((oncall, "lapse-breakglass"), (leads, "lapse-reviewer")):
        binding = {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": group},
            "subjects": [{"kind": "Group", "name": group, "apiGroup": RBAC}],
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(binding))
    policy = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": f"{namespace}-bg"},
        "spec": {
            "breakGlass": {
                "requesters": {"groups": [oncall]},
                "roles": [{"kind": "ClusterRole", "name": "edit"}],
                "maxDuration": "1h",
                "review": {"approvers": {"groups": [leads]}},
            }
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(policy))
    objects = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            _pod(namespace, "web-1"),
            _pod(namespace, "web-2"),
            _deployment(namespace, "api"),
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "db-password", "namespace": namespace},
                "stringData": {"password": "hunter2"},
            },
        ],
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(objects))
    # A user of its own: nothing another test's SRE does may land in this record.
    sre = f"sre-{secrets.token_hex(3)}"
    glass = f"{TEST_PREFIX}inc-{secrets.token_hex(3)}"
    crew = Incident(cluster, namespace, sre, oncall, leads, glass)
    time.sleep(0.3)
    try:
        yield crew
    finally:
        cluster.kubectl("delete", "breakglass", glass, "--ignore-not-found", check=False)
        cluster.kubectl("delete", "accesspolicy", f"{namespace}-bg", "--ignore-not-found")
        for group in (oncall, leads):
            cluster.kubectl("delete", "clusterrolebinding", group, "--ignore-not-found")


def _pod(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.9"}]},
    }


def _deployment(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": "registry.k8s.io/pause:3.9"}]},
            },
        },
    }


def _within(entry: dict[str, Any], start: datetime, end: datetime) -> bool:
    return start <= parse_time(entry["at"]) <= end


def test_the_review_shows_what_was_done_during_the_break_glass(
    incident: Incident, operator: Operator
) -> None:
    ns = incident.namespace
    # Before the glass: refused, and not part of it.
    assert incident.as_sre("delete", "pod", "web-2", "-n", ns, check=False).returncode != 0

    manifest = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "BreakGlass",
        "metadata": {"name": incident.glass},
        "spec": {
            "role": {"kind": "ClusterRole", "name": "edit"},
            "namespaces": [ns],
            "duration": "10m",
            "incident": "INC-4711",
            "reason": "Payments pods wedged after the failover.",
        },
    }
    incident.as_sre("create", "-f", "-", input=json.dumps(manifest))
    wait_for(lambda: incident.status().get("phase") == "Active", 15, 0.1, "the glass Active")

    incident.as_sre("delete", "pod", "web-1", "-n", ns, "--wait=false")
    incident.as_sre("get", "secret", "db-password", "-n", ns, "-o", "name")
    # Someone else, meanwhile: an admin, and a colleague of the same on-call group.
    incident.cluster.kubectl("delete", "pod", "web-2", "-n", ns, "--wait=false")
    incident.cluster.kubectl(
        "delete", "deployment", "api", "-n", ns, "--dry-run=server",
        as_user="colleague", groups=(incident.oncall,), check=False,
    )  # fmt: skip
    incident.activity_shows(2)

    # The operator dies mid-grant; what it had written stays, and it carries on after.
    operator.kill()
    operator.start()
    incident.as_sre("scale", "deployment", "api", "-n", ns, "--replicas=3")
    refused = incident.as_sre(
        "create", "rolebinding", "back-door", "-n", ns, "--clusterrole=admin",
        f"--user={incident.sre}", check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()
    incident.activity_shows(4)

    incident.as_sre("annotate", "breakglass", incident.glass, "lapse.dev/revoke=fixed")
    wait_for(lambda: incident.status().get("phase") == "Revoked", 15, 0.1, "the glass Revoked")
    # After the glass: refused again, and not part of it either.
    assert incident.as_sre("get", "secret", "db-password", "-n", ns, check=False).returncode != 0
    time.sleep(SETTLE)

    status = incident.status()
    start, end = parse_time(status["grantedAt"]), parse_time(status["endedAt"])
    activity = status["activity"]
    writes = [(w["verb"], w["resource"], w.get("name")) for w in activity["writes"]]
    assert len(writes) == 2, activity
    assert writes[0] == ("delete", "pods", "web-1")
    assert writes[1][0] in ("patch", "update") and writes[1][1:] == ("deployments/scale", "api")
    assert [(r["verb"], r["name"]) for r in activity["secretReads"]] == [("get", "db-password")]
    assert [(d["verb"], d["resource"], d["code"]) for d in activity["denied"]] == [
        ("create", "rolebindings", 403)
    ]
    assert activity.get("connects", []) == []
    entries = activity["writes"] + activity["secretReads"] + activity["denied"]
    assert all(_within(e, start, end) for e in entries)
    assert all(e["namespace"] == ns and e["auditId"] for e in entries)
    assert activity["events"] == 4

    review = incident.lapse(
        "review", incident.glass, "--verdict", "justified", "-m", "Runbook followed",
        user="lead", groups=(incident.leads,),
    )  # fmt: skip
    print(f"\n$ kubectl lapse review {incident.glass} …\n{review}")
    assert "4 requests, 2 writes, 1 Secret read, 0 exec sessions, 1 refused" in review
    for line in (
        f"delete pods {ns}/web-1  (200)",
        f"deployments/scale {ns}/api  (200)",
        f"get secrets {ns}/db-password  (200)",
        f"create rolebindings {ns}",
    ):
        assert line in review
    assert "web-2" not in review and "colleague" not in review
    assert review.index("Activity") < review.index("reviewed: Justified")

    report = incident.lapse("report", f"bg/{incident.glass}", user="lead", groups=(incident.leads,))
    print(f"$ kubectl lapse report bg/{incident.glass}\n{report}")
    assert f"delete pods {ns}/web-1" in report and "Requests by verb and resource:" in report

    described = incident.lapse("get", f"bg/{incident.glass}", user="lead", groups=(incident.leads,))
    assert "4 requests, 2 writes, 1 Secret read, 0 exec sessions, 1 refused" in described

    line = operator.wait_for_audit(
        lambda a: a["action"] == "revoked" and a["name"] == incident.glass
    )
    assert line["activity"] == "4 requests, 2 writes, 1 Secret read, 0 exec sessions, 1 refused"
    metrics = operator.metrics()
    # Counted by the operator that saw it: the scale came after the restart.
    assert metrics.get('lapse_breakglass_writes_total{resource="deployments"}', 0) >= 1
    assert metrics.get('lapse_audit_batches_total{result="accepted"}', 0) >= 1


def test_an_unauthenticated_caller_is_refused_at_the_sink(
    operator: Operator, audit_webhook: AuditWebhook
) -> None:
    """Nobody but the API server may write into grants' activity records."""
    import ssl
    import urllib.error
    import urllib.request

    forged = {
        "kind": "EventList",
        "apiVersion": "audit.k8s.io/v1",
        "items": [{"stage": "ResponseComplete", "verb": "delete"}],
    }
    context = ssl.create_default_context(cafile=str(audit_webhook.cert_dir / "ca.crt"))
    for token in (None, "not-the-token"):
        request = urllib.request.Request(
            audit_webhook.url,
            data=json.dumps(forged).encode(),
            headers={"Content-Type": "application/json"}
            | ({"Authorization": f"Bearer {token}"} if token else {}),
            method="POST",
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, context=context, timeout=5)
        assert refused.value.code == 401
    assert operator.metrics().get('lapse_audit_batches_total{result="refused"}', 0) >= 2


def test_a_grantee_erasing_the_record_is_undone_and_recorded(
    incident: Incident, operator: Operator
) -> None:
    """A cluster-wide break-glass may write any status, its own included: erasing what it
    says one did is itself a request the audit log reports, and Lapse writes the record
    again from what it folded, the erasure added."""
    ns = incident.namespace
    policy = f"{ns}-bg"
    incident.cluster.kubectl(
        "patch", "accesspolicy", policy, "--type=json", "-p",
        json.dumps([{"op": "add", "path": "/spec/breakGlass/roles/-",
                     "value": {"kind": "ClusterRole", "name": "cluster-admin"}}]),
    )  # fmt: skip
    time.sleep(0.3)
    manifest = {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "BreakGlass",
        "metadata": {"name": incident.glass},
        "spec": {
            "role": {"kind": "ClusterRole", "name": "cluster-admin"},
            "duration": "10m",
            "incident": "INC-4712",
            "reason": "The whole cluster is on fire.",
        },
    }
    incident.as_sre("create", "-f", "-", input=json.dumps(manifest))
    wait_for(lambda: incident.status().get("phase") == "Active", 15, 0.1, "the glass Active")
    incident.as_sre("delete", "pod", "web-1", "-n", ns, "--wait=false")
    incident.activity_shows(1)

    incident.as_sre(
        "patch", "breakglass", incident.glass, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"activity": None}}),
    )  # fmt: skip

    def restored() -> dict[str, Any] | None:
        activity = incident.status().get("activity") or {}
        resources = [(w["verb"], w["resource"]) for w in activity.get("writes", [])]
        return activity if ("patch", "breakglasses/status") in resources else None

    activity = wait_for(restored, 15, 0.2, "the erased record written again, erasure included")
    assert ("delete", "pods", "web-1") in [
        (w["verb"], w["resource"], w.get("name")) for w in activity["writes"]
    ]
    incident.as_sre("annotate", "breakglass", incident.glass, "lapse.dev/revoke=done")
    wait_for(lambda: incident.status().get("phase") == "Revoked", 15, 0.1, "the glass Revoked")
