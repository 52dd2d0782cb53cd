"""CRD schemas at admission through the running API and the real kubectl: rejections with the
API server's messages, strict unknown-field errors, CEL immutability, defaults and pruning."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import kubernetes.client
import pytest
import yaml
from kubernetes.client.rest import ApiException

from tests.cluster import Cluster
from tests.conformance.conftest import wait_established

GROUP = "schema.lapse.dev"
CRD_NAME = f"tickets.{GROUP}"

TICKET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A ticket that asks for access.",
    "properties": {
        "spec": {
            "type": "object",
            "description": "What the ticket asks for.",
            "required": ["role", "duration"],
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "spec is immutable"}
            ],
            "properties": {
                "role": {"type": "string", "description": "The role to grant."},
                "duration": {
                    "type": "string",
                    "pattern": "^([0-9]+h)?([0-9]+m)?$",
                    "description": "How long the access lasts, such as 2h or 30m.",
                },
                "mode": {"type": "string", "enum": ["Auto", "Approvers"], "default": "Auto"},
                "notes": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "status": {
            "type": "object",
            "properties": {
                "phase": {"type": "string"},
                "expiresAt": {"type": "string", "format": "date-time"},
            },
        },
    },
}


def ticket_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": "tickets",
                "singular": "ticket",
                "kind": "Ticket",
                "listKind": "TicketList",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": TICKET_SCHEMA},
                    "additionalPrinterColumns": [
                        {"name": "Role", "type": "string", "jsonPath": ".spec.role"},
                        {"name": "Duration", "type": "string", "jsonPath": ".spec.duration"},
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


@pytest.fixture(scope="session")
def tickets(cluster: Cluster) -> Iterator[str]:
    ext = kubernetes.client.ApiextensionsV1Api(cluster.api())
    try:
        ext.create_custom_resource_definition(ticket_crd())
    except ApiException as exc:
        if exc.status != 409:
            raise
    wait_established(ext, CRD_NAME)
    yield "tickets"


def manifest(name: str, namespace: str, **spec: Any) -> str:
    body = {"role": "edit", "duration": "2h", **spec}
    return yaml.safe_dump(
        {
            "apiVersion": f"{GROUP}/v1",
            "kind": "Ticket",
            "metadata": {"name": name, "namespace": namespace},
            "spec": body,
        }
    )


def test_schema_violation_is_rejected_with_the_field_error(
    cluster: Cluster, tickets: str, namespace: str
) -> None:
    result = cluster.kubectl(
        "apply", "-f", "-", input=manifest("bad", namespace, duration="abc"), check=False
    )
    assert result.returncode != 0
    assert (
        'The Ticket "bad" is invalid: spec.duration: Invalid value: "abc": spec.duration in '
        "body should match '^([0-9]+h)?([0-9]+m)?$'"
    ) in result.stderr


def test_missing_required_field_and_enum(cluster: Cluster, tickets: str, namespace: str) -> None:
    text = yaml.safe_dump(
        {
            "apiVersion": f"{GROUP}/v1",
            "kind": "Ticket",
            "metadata": {"name": "incomplete", "namespace": namespace},
            "spec": {"duration": "1h", "mode": "Sometimes"},
        }
    )
    result = cluster.kubectl("apply", "-f", "-", input=text, check=False)
    assert result.returncode != 0
    assert "spec.role: Required value" in result.stderr
    assert 'spec.mode: Unsupported value: "Sometimes": supported values: "Auto", "Approvers"' in (
        result.stderr
    )


def test_unknown_field_fails_strict_validation(
    cluster: Cluster, tickets: str, namespace: str
) -> None:
    result = cluster.kubectl(
        "apply", "-f", "-", input=manifest("strict", namespace, colour="red"), check=False
    )
    assert result.returncode != 0
    assert 'strict decoding error: unknown field "spec.colour"' in result.stderr


def test_unknown_field_is_pruned_when_validation_is_off(
    cluster: Cluster, tickets: str, namespace: str
) -> None:
    text = manifest("pruned", namespace, colour="red", notes={"free": {"form": 1}})
    cluster.kubectl("apply", "--validate=false", "-f", "-", input=text)
    stored = json.loads(
        cluster.kubectl("get", "ticket", "pruned", "-n", namespace, "-o", "json").stdout
    )
    assert "colour" not in stored["spec"]
    assert stored["spec"]["notes"] == {"free": {"form": 1}}


def test_defaults_are_visible(cluster: Cluster, tickets: str, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=manifest("defaulted", namespace))
    shown = yaml.safe_load(
        cluster.kubectl("get", "ticket", "defaulted", "-n", namespace, "-o", "yaml").stdout
    )
    assert shown["spec"]["mode"] == "Auto"


def test_cel_rule_keeps_the_spec_immutable(cluster: Cluster, tickets: str, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=manifest("fixed", namespace))
    result = cluster.kubectl(
        "apply", "-f", "-", input=manifest("fixed", namespace, duration="9h"), check=False
    )
    assert result.returncode != 0
    assert 'The Ticket "fixed" is invalid: spec: Invalid value: spec is immutable' in (
        result.stderr
    )
    # The unchanged spec still applies cleanly.
    cluster.kubectl("apply", "-f", "-", input=manifest("fixed", namespace))


def test_malformed_crd_is_rejected(cluster: Cluster) -> None:
    crd = ticket_crd()
    crd["metadata"]["name"] = f"broken.{GROUP}"
    result = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(crd), check=False)
    assert result.returncode != 0
    assert 'metadata.name: Invalid value: "broken.schema.lapse.dev": must be ' in result.stderr


def test_crd_describing_metadata_is_refused(cluster: Cluster) -> None:
    # kube-apiserver owns ObjectMeta's schema: even a description under the root `metadata`
    # makes the whole CRD invalid (Lapse's CRDs once carried one and installed nowhere real).
    crd = ticket_crd()
    crd["metadata"]["name"] = f"described.{GROUP}"
    crd["spec"]["names"] = {"plural": "described", "kind": "Described"}
    schema = json.loads(json.dumps(TICKET_SCHEMA))
    schema["properties"]["metadata"] = {"type": "object", "description": "Standard metadata."}
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = schema
    result = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(crd), check=False)
    assert result.returncode != 0
    assert (
        "spec.validation.openAPIV3Schema.properties[metadata]: Forbidden: must not specify "
        "anything other than name and generateName, but metadata is implicitly specified"
    ) in result.stderr


def test_crd_with_bare_object_metadata_is_accepted(cluster: Cluster) -> None:
    crd = ticket_crd()
    crd["metadata"]["name"] = f"bare.{GROUP}"
    crd["spec"]["names"] = {"plural": "bare", "kind": "Bare"}
    schema = json.loads(json.dumps(TICKET_SCHEMA))
    schema["properties"]["metadata"] = {"type": "object"}
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] = schema
    try:
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(crd))
    finally:
        cluster.kubectl("delete", "crd", f"bare.{GROUP}", "--ignore-not-found", check=False)
