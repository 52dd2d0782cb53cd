"""`kubectl lapse audit` end to end: an auditor's access review of real grants, and the check of
an exported trail with the operator's own key.

The auditor holds only what the docs give one: read on AccessRequests and BreakGlasses, and
`get` on the operator's signing-key Secret. The trail file is built here from a real grant's
status with the key the running operator made (there is no exporter to fill one yet), written
as a syslog collector and a Splunk HEC collector would keep it, then tampered with.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lapse.core.grants import GrantKey
from lapse.core.models import AccessRequest
from lapse.core.trail import (
    build_trail_record,
    compute_facts,
    compute_genesis,
    compute_record_hash,
)
from tests.cluster import Cluster, kubectl_binary
from tests.conftest import TEST_PREFIX
from tests.e2e import test_breakglass
from tests.e2e.conftest import Operator, Team, wait_for
from tests.e2e.test_breakglass import Crew, annotate, unique
from tests.e2e.test_cli import lapse

RBAC = "rbac.authorization.k8s.io"
# The break-glass suite's fixtures, by name: a crew of SREs and their reviewers.
crew = test_breakglass.crew
glass_rbac = test_breakglass.glass_rbac
SECRET = "lapse-signing-key"


class Auditor:
    """A user in a group that may read every grant and the operator's signing key."""

    def __init__(self, cluster: Cluster, operator_namespace: str) -> None:
        self.cluster = cluster
        self.group = f"{TEST_PREFIX}auditors-{secrets.token_hex(3)}"
        self.user = "audrey"
        self.operator_namespace = operator_namespace

    def items(self) -> list[dict[str, Any]]:
        name, ns = self.group, self.operator_namespace
        subjects = [{"kind": "Group", "name": name, "apiGroup": RBAC}]
        return [
            {
                "apiVersion": f"{RBAC}/v1",
                "kind": "ClusterRole",
                "metadata": {"name": name},
                "rules": [
                    {
                        "apiGroups": ["lapse.dev"],
                        "resources": ["accessrequests", "breakglasses"],
                        "verbs": ["get", "list"],
                    }
                ],
            },
            {
                "apiVersion": f"{RBAC}/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "subjects": subjects,
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": name},
            },
            {
                "apiVersion": f"{RBAC}/v1",
                "kind": "Role",
                "metadata": {"name": name, "namespace": ns},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["secrets"],
                        "resourceNames": [SECRET],
                        "verbs": ["get"],
                    }
                ],
            },
            {
                "apiVersion": f"{RBAC}/v1",
                "kind": "RoleBinding",
                "metadata": {"name": name, "namespace": ns},
                "subjects": subjects,
                "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": name},
            },
        ]

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = [
            kubectl_binary(),
            "lapse",
            *args,
            f"--as={self.user}",
            f"--as-group={self.group}",
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, env=env or self.cluster.env(), timeout=60
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result


@pytest.fixture
def auditor(cluster: Cluster, operator: Operator) -> Iterator[Auditor]:
    made = Auditor(cluster, operator.namespace)
    listing = {"apiVersion": "v1", "kind": "List", "items": made.items()}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(listing))
    try:
        yield made
    finally:
        cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input=json.dumps(listing))


def by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in rows}


def test_access_review_of_self_service_and_break_glass(
    team: Team, crew: Crew, auditor: Auditor
) -> None:
    policy = team.policy()
    team.ask("fix-retries", duration="1h")
    team.wait_phase("fix-retries", "Active")
    revoked = lapse(team, "revoke", "fix-retries", "-n", team.namespace, "-m", "Finished")
    assert revoked.returncode == 0, revoked.stderr

    glass_policy = crew.policy()
    reviewed, unreviewed = unique("reviewed"), unique("unreviewed")
    crew.break_glass(reviewed, duration="10m")
    crew.break_glass(unreviewed, duration="10m", incident="INC-<b>")
    crew.wait_phase(reviewed, "Active")
    crew.wait_phase(unreviewed, "Active")
    annotate(crew.as_lead, reviewed, "lapse.dev/review", "Justified: failover needed a restart")
    wait_for(
        lambda: (crew.get(reviewed) or {}).get("status", {}).get("review"),
        timeout=10,
        what="the review in status",
    )

    period = ("audit", "report", "--since", "1h", "-n", team.namespace)
    answer = auditor.run(*period, "-o", "json")
    assert answer.returncode == 0, answer.stderr
    rows = by_name(json.loads(answer.stdout))
    request = rows["fix-retries"]
    assert request["kind"] == "AccessRequest" and request["namespace"] == team.namespace
    assert request["subject"] == "User:alice" and request["requester"] == "alice"
    assert request["role"] == "ClusterRole/edit" and request["policy"] == policy
    assert request["approval"] == f"self-service (policy {policy})"
    assert request["ended"] == "Revoked" and request["endedAt"]
    assert request["targetNamespaces"] == [team.namespace]
    glass = rows[reviewed]
    assert glass["kind"] == "BreakGlass" and glass["incident"] == "INC-4711"
    assert (glass["reviewVerdict"], glass["reviewer"]) == ("Justified", "lead")
    assert glass["approval"] == f"break-glass (policy {glass_policy})"
    assert glass["unreviewed"] is False
    assert rows[unreviewed]["unreviewed"] is True
    # Another role filters the request out; cluster-wide break-glasses reach every namespace.
    assert "fix-retries" not in by_name(
        json.loads(auditor.run(*period, "--role", "view", "-o", "json").stdout)
    )

    table = auditor.run(*period, "--subject", "alice")
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("KIND ") and "fix-retries" in table.stdout
    assert reviewed not in table.stdout

    as_csv = auditor.run(*period, "-o", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    assert as_csv.stdout.startswith("cluster,kind,namespace,name,")
    csv_rows = by_name(list(csv.DictReader(io.StringIO(as_csv.stdout, newline=""))))
    assert csv_rows["fix-retries"]["approval"] == f"self-service (policy {policy})"
    assert csv_rows[reviewed]["reviewVerdict"] == "Justified"
    assert csv_rows[unreviewed]["unreviewed"] == "true"

    page = auditor.run(*period, "-o", "html")
    assert page.returncode == 0, page.stderr
    assert page.stdout.startswith("<!DOCTYPE html>")
    assert f"namespace {team.namespace}" in page.stdout
    assert "Justified by lead" in page.stdout and "UNREVIEWED" in page.stdout
    # What users typed is escaped, never markup.
    assert "INC-&lt;b&gt;" in page.stdout and "INC-<b>" not in page.stdout

    # Whoever may not list grants everywhere learns it in one sentence.
    refused = lapse(team, "audit", "report", "--since", "1h")
    assert refused.returncode == 1 and "forbidden" in refused.stderr


def trail_of(body: dict[str, Any], key: bytes) -> list[dict[str, Any]]:
    """The records Lapse's exporter would make of this grant, signed with `key`."""
    grant = AccessRequest.model_validate(body)
    assert grant.metadata.uid
    owner = GrantKey("AccessRequest", grant.metadata.namespace, grant.metadata.name,
                     grant.metadata.uid)  # fmt: skip
    records, prev = [], compute_genesis(owner.uid)
    for seq, fact in enumerate(compute_facts("AccessRequest", grant.status), start=1):
        record = build_trail_record(
            key=owner,
            status=grant.status,
            role=grant.spec.role,
            fact=fact,
            seq=seq,
            prev=prev,
            signing_key=key,
        )
        records.append(record)
        prev = compute_record_hash(record)
    return records


def test_verify_an_exported_trail_then_a_tampered_line(
    team: Team, auditor: Auditor, cluster: Cluster, operator: Operator, tmp_path: Path
) -> None:
    team.policy()
    team.ask("watch-logs", duration="1h")
    team.wait_phase("watch-logs", "Active")
    assert lapse(team, "revoke", "watch-logs", "-n", team.namespace).returncode == 0
    encoded = cluster.kubectl(
        "get", "secret", SECRET, "-n", operator.namespace, "-o", "jsonpath={.data.key}"
    ).stdout.strip()
    key = base64.b64decode(encoded)
    records = trail_of(team.request("watch-logs"), key)
    actions = [r["action"] for r in records]
    assert actions[0] == "granted" and "revoked" in actions and len(records) >= 2
    other = trail_of(team.request("watch-logs"), key)

    # Line 1 is someone else's syslog line; then syslog lines, a repeat, and a HEC batch.
    prefix = '<134>1 2026-12-05T10:00:00Z node lapse - audit [origin ip="10.0.0.1"] '
    lines = ["<38>1 2026-12-05T10:00:00Z node sshd 77 - - session opened for alice"]
    lines += [prefix + json.dumps(r) for r in records]
    lines.append(prefix + json.dumps(records[0]))
    lines.append("".join(json.dumps({"time": 1, "event": r}) for r in other))
    trail = tmp_path / "trail.log"
    trail.write_text("\n".join(lines) + "\n")

    namespace_flag = ("--operator-namespace", operator.namespace)
    whole = auditor.run("audit", "verify", str(trail), *namespace_flag)
    print(f"\n{whole.stdout}{whole.stderr}")
    assert whole.returncode == 0, whole.stderr
    said = f"1 stream, {len(records)} records ({len(records) + 1} repeats dropped)"
    assert f"{said}: whole and unaltered" in whole.stdout
    assert "0 complete, 1 still open" in whole.stdout

    # With the key in a file no cluster is needed at all.
    key_file = tmp_path / "lapse.key"
    key_file.write_text(encoded + "\n")
    offline = {**cluster.env(), "KUBECONFIG": str(tmp_path / "none")}
    result = subprocess.run(
        [kubectl_binary(), "lapse", "audit", "verify", "--key-file", str(key_file), "-",
         "-o", "json"],
        input=trail.read_text(), capture_output=True, text=True, env=offline, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["intact"] is True

    # Who may not read the key is told so, and nothing is checked.
    refused = lapse(team, "audit", "verify", str(trail), *namespace_flag)
    assert refused.returncode == 2
    assert (
        f'you may not read secret "{SECRET}"' in refused.stderr and "--key-file" in refused.stderr
    )

    # Someone rewrites who held the access, in line 3.
    tampered = tmp_path / "tampered.log"
    changed = lines.copy()
    assert '"User:alice"' in changed[2]
    changed[2] = changed[2].replace('"User:alice"', '"User:bob"')
    tampered.write_text("\n".join(changed) + "\n")
    broken = auditor.run("audit", "verify", str(tampered), *namespace_flag)
    print(broken.stdout)
    assert broken.returncode == 1, broken.stderr
    assert f"{tampered}:3 (seq 2)" in broken.stdout
    assert "BROKEN AccessRequest" in broken.stdout
