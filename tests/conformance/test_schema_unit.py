"""The local API's schema machinery, through its module functions: CRD admission (pruning,
defaults, OpenAPI keywords, CEL rules), CRD validation, Table printing and OpenAPI documents,
each error message checked against the API server's wording."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeapi import openapi, schema, table
from kubeapi.errors import ApiError
from kubeapi.resources import ResourceInfo

CRDS = Path(__file__).resolve().parents[2] / "crds"

SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "What access is asked for.",
    "required": ["role", "duration"],
    "x-kubernetes-validations": [
        {"rule": "self == oldSelf", "message": "spec is immutable"},
        {"rule": "duration(self.duration) <= duration('4h')", "message": "at most 4h"},
    ],
    "properties": {
        "role": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "kind": {
                    "type": "string",
                    "enum": ["ClusterRole", "Role"],
                    "default": "ClusterRole",
                },
                "name": {"type": "string", "minLength": 1, "description": "The role's name."},
            },
        },
        "duration": {
            "type": "string",
            "pattern": "^([0-9]+h)?([0-9]+m)?$",
            "description": "How long the access lasts.",
        },
        "reason": {"type": "string", "maxLength": 16},
        "approvals": {"type": "integer", "minimum": 1, "maximum": 3, "default": 1},
        "mode": {"type": "string", "enum": ["Auto", "Approvers"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "options": {
            "type": "object",
            "default": {},
            "properties": {"notify": {"type": "boolean", "default": True}},
        },
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "phase": {"type": "string"},
        "expiresAt": {"type": "string", "format": "date-time"},
        "conditions": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
            "items": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "status": {"type": "string"}},
            },
        },
    },
}
ROOT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": SPEC_SCHEMA,
        "status": STATUS_SCHEMA,
    },
}
COLUMNS: tuple[dict[str, Any], ...] = (
    {"name": "Role", "type": "string", "jsonPath": ".spec.role.name"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Approvals", "type": "integer", "jsonPath": ".spec.approvals", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
)


def make_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "accessrequests.lapse.dev"},
        "spec": {
            "group": "lapse.dev",
            "scope": "Namespaced",
            "names": {
                "plural": "accessrequests",
                "singular": "accessrequest",
                "kind": "AccessRequest",
                "listKind": "AccessRequestList",
            },
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": copy.deepcopy(ROOT_SCHEMA)},
                    "additionalPrinterColumns": list(COLUMNS),
                    "subresources": {"status": {}},
                }
            ],
        },
    }


INFO = ResourceInfo(
    group="lapse.dev",
    version="v1alpha1",
    kind="AccessRequest",
    plural="accessrequests",
    singular="accessrequest",
    namespaced=True,
    subresources=("status",),
    schema=ROOT_SCHEMA,
    printer_columns=COLUMNS,
    crd=make_crd(),
)


def request(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"role": {"name": "edit"}, "duration": "2h"}
    body.update(spec)
    return {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {"name": "r1", "namespace": "payments"},
        "spec": body,
    }


BLOCKED = (
    "<nil>: Invalid value: null: some validation rules were not checked because the object "
    "was invalid; correct the existing errors to complete validation"
)


def listed(error: ApiError) -> list[str]:
    """The error's causes as `field: message`, the way the 422 message lists them."""
    return [f"{c['field']}: {c['message']}" for c in error.details["causes"]]


def rejection(obj: dict[str, Any], old: dict[str, Any] | None = None) -> ApiError:
    with pytest.raises(ApiError) as caught:
        schema.admit(INFO, obj, old)
    return caught.value


# --- admission --------------------------------------------------------------------------------


def test_valid_object_gets_defaults_including_nested_ones() -> None:
    stored = schema.admit(INFO, request(), None)
    assert stored["spec"]["role"] == {"name": "edit", "kind": "ClusterRole"}
    assert stored["spec"]["approvals"] == 1
    # The defaulted parent object gets its own children's defaults.
    assert stored["spec"]["options"] == {"notify": True}


def test_admit_does_not_change_the_callers_object() -> None:
    obj = request(unknown="x")
    schema.admit(INFO, obj, None)
    assert obj["spec"]["unknown"] == "x"
    assert "approvals" not in obj["spec"]


def test_unknown_fields_are_pruned_but_preserved_ones_and_metadata_kept() -> None:
    obj = request(unknown="x", extra={"anything": {"goes": 1}})
    obj["metadata"]["labels"] = {"team": "payments"}
    obj["metadata"]["bogus"] = "dropped"
    obj["topLevel"] = 1
    stored = schema.admit(INFO, obj, None)
    assert "unknown" not in stored["spec"]
    assert "topLevel" not in stored
    assert stored["spec"]["extra"] == {"anything": {"goes": 1}}
    assert stored["metadata"] == {
        "name": "r1",
        "namespace": "payments",
        "labels": {"team": "payments"},
    }


def test_strict_field_validation_rejects_unknown_fields() -> None:
    obj = request(unknown="x", tags=["a"])
    obj["spec"]["role"]["colour"] = "red"
    with pytest.raises(ApiError) as caught:
        schema.admit(INFO, obj, None, field_validation="Strict")
    assert caught.value.code == 400
    assert caught.value.reason == "BadRequest"
    assert caught.value.message == (
        'AccessRequest in version "v1alpha1" cannot be handled as a AccessRequest: strict '
        'decoding error: unknown field "spec.role.colour", unknown field "spec.unknown"'
    )


def test_warn_field_validation_reports_and_prunes() -> None:
    warnings: list[str] = []
    stored = schema.admit(
        INFO, request(unknown="x"), None, field_validation="Warn", warnings=warnings
    )
    assert warnings == ['unknown field "spec.unknown"']
    assert "unknown" not in stored["spec"]


def test_missing_required_field() -> None:
    obj = request()
    del obj["spec"]["duration"]
    error = rejection(obj)
    assert error.code == 422
    # As in apiextensions, a blocking schema error stops the CEL rules from running.
    assert error.message == (
        'AccessRequest.lapse.dev "r1" is invalid: [spec.duration: Required value, <nil>: '
        "Invalid value: null: some validation rules were not checked because the object was "
        "invalid; correct the existing errors to complete validation]"
    )
    assert error.details["causes"][0] == {
        "reason": "FieldValueRequired",
        "message": "Required value",
        "field": "spec.duration",
    }


def test_pattern_mismatch() -> None:
    error = rejection(request(duration="abc"))
    assert listed(error) == [
        'spec.duration: Invalid value: "abc": '
        "spec.duration in body should match '^([0-9]+h)?([0-9]+m)?$'",
        # A pattern error does not block the CEL rules, which see the bad value too.
        'spec: Invalid value: "object": time: invalid duration "abc" evaluating rule: '
        "duration(self.duration) <= duration('4h')",
    ]


def test_enum_mismatch() -> None:
    error = rejection(request(mode="X"))
    assert listed(error) == [
        'spec.mode: Unsupported value: "X": supported values: "Auto", "Approvers"',
        BLOCKED,
    ]
    assert error.details["causes"][0]["reason"] == "FieldValueNotSupported"


def test_too_long_string() -> None:
    error = rejection(request(reason="x" * 17))
    assert listed(error) == ["spec.reason: Too long: may not be more than 16 bytes", BLOCKED]


def test_too_short_string() -> None:
    error = rejection(request(role={"name": ""}))
    assert error.message == (
        'AccessRequest.lapse.dev "r1" is invalid: spec.role.name: Invalid value: "": '
        "spec.role.name in body should be at least 1 chars long"
    )


def test_wrong_type() -> None:
    error = rejection(request(approvals="two"))
    assert error.message == (
        'AccessRequest.lapse.dev "r1" is invalid: [spec.approvals: Invalid value: "string": '
        f'spec.approvals in body must be of type integer: "string", {BLOCKED}]'
    )
    assert error.details["causes"][0]["reason"] == "FieldValueTypeInvalid"


def test_bounds_and_item_counts() -> None:
    error = rejection(request(approvals=5, tags=["a", "b", "c"]))
    assert listed(error) == [
        "spec.approvals: Invalid value: 5: spec.approvals in body should be less than or "
        "equal to 3",
        "spec.tags: Too many: 3: must have at most 2 items",
        BLOCKED,
    ]


def test_date_time_format() -> None:
    obj = request()
    obj["status"] = {"expiresAt": "tomorrow"}
    error = rejection(obj)
    assert listed(error) == [
        'status.expiresAt: Invalid value: "tomorrow": status.expiresAt in body must be of '
        'type date-time: "tomorrow"',
        BLOCKED,
    ]


def test_map_list_keys_must_be_unique() -> None:
    obj = request()
    obj["status"] = {"conditions": [{"type": "Ready"}, {"type": "Ready", "status": "True"}]}
    error = rejection(obj)
    assert error.message == (
        'AccessRequest.lapse.dev "r1" is invalid: status.conditions[1]: Duplicate value: '
        '{"type":"Ready"}'
    )


def test_additional_properties_values_are_validated() -> None:
    error = rejection(request(labels={"a": 1}))
    assert listed(error) == [
        'spec.labels.a: Invalid value: "integer": spec.labels.a in body must be of type '
        'string: "integer"',
        BLOCKED,
    ]


def test_cel_rule_with_go_duration() -> None:
    error = rejection(request(duration="5h"))
    assert error.message == (
        'AccessRequest.lapse.dev "r1" is invalid: spec: Invalid value: at most 4h'
    )


def test_transition_rule_skipped_on_create_and_enforced_on_update() -> None:
    old = schema.admit(INFO, request(), None)
    changed = copy.deepcopy(old)
    changed["spec"]["duration"] = "3h"
    error = rejection(changed, old)
    assert error.message == (
        'AccessRequest.lapse.dev "r1" is invalid: spec: Invalid value: spec is immutable'
    )
    # A status-only change passes: the spec equals the old spec.
    status_change = copy.deepcopy(old)
    status_change["status"] = {"phase": "Active"}
    assert schema.admit(INFO, status_change, old, "status")["status"] == {"phase": "Active"}


def test_rules_without_old_self_ratchet_on_unchanged_values() -> None:
    rules: dict[str, Any] = {
        "type": "object",
        "x-kubernetes-validations": [
            {"rule": "self.size() <= 1", "message": "at most one"},
            {"rule": "self == oldSelf", "message": "immutable"},
        ],
        "additionalProperties": {"type": "string"},
    }
    stored = {"a": "1", "b": "2"}
    # Stored before the rule existed: an update that leaves it as it was is not rejected...
    assert schema.validate_rules(rules, stored, dict(stored)) == []
    # ...one that changes it is, and a rule using oldSelf runs on unchanged values too.
    messages = [c.message for c in schema.validate_rules(rules, {**stored, "c": "3"}, stored)]
    assert any("at most one" in m for m in messages)
    assert any("immutable" in m for m in messages)
    assert schema.validate_rules(rules, stored, None) != []


def test_cel_default_message_reason_field_path_and_message_expression() -> None:
    rules = [
        {"rule": "self.name != 'admin'"},
        {
            "rule": "self.name != 'root'",
            "reason": "FieldValueForbidden",
            "fieldPath": ".name",
            "messageExpression": "'role ' + self.name + ' is not grantable'",
        },
    ]
    root = copy.deepcopy(ROOT_SCHEMA)
    root["properties"]["spec"]["properties"]["role"]["x-kubernetes-validations"] = rules
    info = ResourceInfo(**{**INFO.__dict__, "schema": root})
    with pytest.raises(ApiError) as admin:
        schema.admit(info, request(role={"name": "admin"}), None)
    assert admin.value.message == (
        'AccessRequest.lapse.dev "r1" is invalid: spec.role: Invalid value: '
        "failed rule: self.name != 'admin'"
    )
    with pytest.raises(ApiError) as root_role:
        schema.admit(info, request(role={"name": "root"}), None)
    assert root_role.value.message == (
        'AccessRequest.lapse.dev "r1" is invalid: spec.role.name: Forbidden: '
        "role root is not grantable"
    )


def test_cel_evaluation_error_is_reported_like_the_api_server() -> None:
    root = copy.deepcopy(ROOT_SCHEMA)
    root["properties"]["spec"]["x-kubernetes-validations"] = [{"rule": "self.reason != ''"}]
    info = ResourceInfo(**{**INFO.__dict__, "schema": root})
    with pytest.raises(ApiError) as caught:
        schema.admit(info, request(), None)
    assert caught.value.message == (
        'AccessRequest.lapse.dev "r1" is invalid: spec: Invalid value: "object": '
        "no such key: reason evaluating rule: self.reason != ''"
    )


def test_admit_is_fast_enough_for_a_busy_server() -> None:
    old = schema.admit(INFO, request(), None)
    calls = 300
    started = time.perf_counter()
    for _ in range(calls):
        schema.admit(INFO, request(), old)
    per_call = (time.perf_counter() - started) / calls
    # Generous on purpose (a shared 2-core machine); it measures ~1 ms.
    assert per_call < 0.05


# --- CRD validation ---------------------------------------------------------------------------


def crd_rejection(crd: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        schema.validate_crd(crd)
    return caught.value


@pytest.mark.parametrize("path", sorted(CRDS.glob("*.yaml")), ids=lambda p: p.name)
def test_lapse_crds_are_valid(path: Path) -> None:
    schema.validate_crd(yaml.safe_load(path.read_text()))


def test_sample_crd_is_valid() -> None:
    schema.validate_crd(make_crd())


def test_crd_name_must_be_plural_dot_group() -> None:
    crd = make_crd()
    crd["metadata"]["name"] = "requests.lapse.dev"
    error = crd_rejection(crd)
    assert error.message == (
        'CustomResourceDefinition.apiextensions.k8s.io "requests.lapse.dev" is invalid: '
        'metadata.name: Invalid value: "requests.lapse.dev": must be '
        'spec.names.plural+"."+spec.group'
    )


def test_crd_needs_exactly_one_storage_version() -> None:
    crd = make_crd()
    second = copy.deepcopy(crd["spec"]["versions"][0])
    second["name"] = "v1beta1"
    crd["spec"]["versions"].append(second)
    error = crd_rejection(crd)
    assert error.details["causes"][0]["field"] == "spec.versions"
    assert error.details["causes"][0]["message"].endswith(
        ": must have exactly one version marked as storage version"
    )


def test_crd_schema_must_be_structural() -> None:
    crd = make_crd()
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    del props["spec"]["properties"]["reason"]["type"]
    error = crd_rejection(crd)
    assert error.message == (
        'CustomResourceDefinition.apiextensions.k8s.io "accessrequests.lapse.dev" is invalid: '
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[reason].type: "
        "Required value: must not be empty for specified object fields"
    )


def test_crd_rules_must_compile() -> None:
    crd = make_crd()
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    props["spec"]["x-kubernetes-validations"] = [{"rule": "self =="}]
    error = crd_rejection(crd)
    cause = error.details["causes"][0]
    assert cause["field"] == (
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"
    )
    assert '"Rule":"self =="' in cause["message"]
    assert "compilation failed: ERROR: <input>:1:" in cause["message"]


def test_crd_names_are_required() -> None:
    crd = make_crd()
    del crd["spec"]["names"]["kind"]
    error = crd_rejection(crd)
    assert error.message == (
        'CustomResourceDefinition.apiextensions.k8s.io "accessrequests.lapse.dev" is invalid: '
        "spec.names.kind: Required value"
    )


# --- tables -----------------------------------------------------------------------------------


def stored_request() -> dict[str, Any]:
    obj = schema.admit(INFO, request(), None)
    obj["metadata"]["creationTimestamp"] = "2024-05-01T10:00:00Z"
    obj["status"] = {
        "phase": "Active",
        "conditions": [
            {"type": "Approved", "status": "True"},
            {"type": "Ready", "status": "False"},
        ],
    }
    return obj


def test_table_from_printer_columns() -> None:
    result = table.to_table(INFO, [stored_request()])
    assert result["kind"] == "Table"
    assert result["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in result["columnDefinitions"]] == [
        "Name",
        "Role",
        "Phase",
        "Ready",
        "Approvals",
        "Age",
    ]
    assert result["columnDefinitions"][4]["priority"] == 1
    row = result["rows"][0]
    assert row["cells"][:5] == ["r1", "edit", "Active", "False", 1]
    # Dates are rendered as ages by the server, as apiextensions does.
    assert row["cells"][5] == table.since("2024-05-01T10:00:00Z")
    assert row["cells"][5].endswith(("d", "y"))
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["name"] == "r1"


def test_table_missing_values_and_include_object() -> None:
    obj = schema.admit(INFO, request(), None)
    result = table.to_table(INFO, [obj], include_object="Object")
    assert result["rows"][0]["cells"][2:4] == [None, None]
    assert result["rows"][0]["object"] is obj
    assert "object" not in table.to_table(INFO, [obj], include_object="None")["rows"][0]


def test_table_without_printer_columns_shows_name_and_age() -> None:
    info = ResourceInfo(**{**INFO.__dict__, "printer_columns": ()})
    result = table.to_table(info, [stored_request()])
    assert [(c["name"], c["type"]) for c in result["columnDefinitions"]] == [
        ("Name", "string"),
        ("Age", "date"),
    ]


def test_table_for_role_bindings() -> None:
    info = ResourceInfo(
        "rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", True
    )
    binding = {
        "metadata": {"name": "b", "creationTimestamp": "2000-01-01T00:00:00Z"},
        "roleRef": {"kind": "ClusterRole", "name": "edit", "apiGroup": "rbac.authorization.k8s.io"},
        "subjects": [{"kind": "User", "name": "alice"}],
    }
    result = table.to_table(info, [binding])
    assert [c["name"] for c in result["columnDefinitions"]][:3] == ["Name", "Role", "Age"]
    assert result["rows"][0]["cells"][:2] == ["b", "ClusterRole/edit"]
    assert result["rows"][0]["cells"][3] == "alice"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(5, "5s"), (150, "2m30s"), (1800, "30m"), (3 * 3600 + 600, "3h10m"), (50 * 3600, "2d2h")],
)
def test_human_duration(seconds: int, shown: str) -> None:
    assert table.human_duration(seconds) == shown


# --- OpenAPI ----------------------------------------------------------------------------------


def test_v3_index_and_document_advertise_field_validation() -> None:
    index = openapi.v3_index([INFO])
    url = index["paths"]["apis/lapse.dev/v1alpha1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/lapse.dev/v1alpha1?hash=")
    document = openapi.v3_document([INFO], "lapse.dev", "v1alpha1")
    assert document is not None
    patch = document["paths"][
        "/apis/lapse.dev/v1alpha1/namespaces/{namespace}/accessrequests/{name}"
    ]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "lapse.dev",
        "version": "v1alpha1",
        "kind": "AccessRequest",
    }
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    model = document["components"]["schemas"]["dev.lapse.v1alpha1.AccessRequest"]
    assert model["properties"]["spec"]["properties"]["duration"]["description"] == (
        "How long the access lasts."
    )
    assert openapi.v3_document([INFO], "lapse.dev", "v1") is None


def test_v3_hash_follows_the_schema() -> None:
    changed_schema = copy.deepcopy(ROOT_SCHEMA)
    changed_schema["properties"]["spec"]["description"] = "changed"
    changed = ResourceInfo(**{**INFO.__dict__, "schema": changed_schema})
    assert openapi.v3_index([INFO]) != openapi.v3_index([changed])


def test_v2_uses_definitions() -> None:
    document = openapi.v2([INFO])
    assert document["swagger"] == "2.0"
    model = document["definitions"]["dev.lapse.v1alpha1.AccessRequest"]
    assert model["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    ]
