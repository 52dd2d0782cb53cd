"""The CRDs in `crds/` are what the models say, and are CRDs the API server accepts.

The generator is the only way the models reach the cluster's schema; these tests keep the
committed files equal to its output and check the properties the API server and `kubectl explain`
depend on (structural schema, descriptions, printer columns that point at real fields).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from lapse import crdgen
from lapse.core.models import DURATION_PATTERN, AccessPolicy, AccessRequest, BreakGlass

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"
SAMPLES_DIR = ROOT / "deploy" / "samples"

# Keywords a structural schema may not carry once Lapse's generator is done with it.
FORBIDDEN = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "nullable", "const", "title"}

MODELS: dict[str, type[BaseModel]] = {
    "AccessPolicy": AccessPolicy,
    "AccessRequest": AccessRequest,
    "BreakGlass": BreakGlass,
}


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def committed() -> dict[str, dict[str, Any]]:
    return {p.name: load(p) for p in sorted(CRD_DIR.glob("*.yaml"))}


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its dotted path; `[]` marks list items, `{}` map values."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def all_crds() -> list[tuple[str, dict[str, Any]]]:
    return [(name, yaml.safe_load(text)) for name, text in crdgen.generate().items()]


CRDS = all_crds()
CRD_IDS = [name for name, _ in CRDS]


def test_committed_crds_equal_the_generator_output() -> None:
    generated = crdgen.generate()
    assert sorted(p.name for p in CRD_DIR.glob("*.yaml")) == sorted(generated)
    for name, text in generated.items():
        assert (CRD_DIR / name).read_text(encoding="utf-8") == text, f"{name}: run `make crds`"


def test_generation_is_deterministic() -> None:
    assert crdgen.generate() == crdgen.generate()


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    lines: list[str] = []
    assert crdgen.main([str(tmp_path)], out=lines.append) == 0
    assert len(lines) == 3
    assert crdgen.main(["--check", str(tmp_path)], out=lines.append) == 0
    victim = tmp_path / "accessrequests.lapse.dev.yaml"
    victim.write_text(victim.read_text(encoding="utf-8").replace("shortNames", "shortnames"))
    stale: list[str] = []
    assert crdgen.main(["--check", str(tmp_path)], out=stale.append) == 1
    assert stale == [f"stale: {victim} (run `make crds`)"]
    # Writing again repairs only what differs.
    assert crdgen.write(tmp_path) == [victim]


@pytest.mark.parametrize(
    ("kind", "plural", "scope", "short"),
    [
        ("AccessPolicy", "accesspolicies", "Cluster", "ap"),
        ("AccessRequest", "accessrequests", "Namespaced", "ar"),
        ("BreakGlass", "breakglasses", "Cluster", "bg"),
    ],
)
def test_names_scope_and_version(kind: str, plural: str, scope: str, short: str) -> None:
    crd = load(CRD_DIR / f"{plural}.lapse.dev.yaml")
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{plural}.lapse.dev"
    spec = crd["spec"]
    assert spec["group"] == "lapse.dev"
    assert spec["scope"] == scope
    assert spec["names"]["kind"] == kind
    assert spec["names"]["plural"] == plural
    assert spec["names"]["shortNames"] == [short]
    assert spec["names"]["categories"] == ["lapse"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize(("name", "crd"), CRDS, ids=CRD_IDS)
def test_every_property_has_a_description(name: str, crd: dict[str, Any]) -> None:
    missing = [
        f"{path}.{prop}"
        for path, node in walk(schema_of(crd))
        for prop, child in node.get("properties", {}).items()
        if not child.get("description", "").strip()
        # kube-apiserver refuses anything but `type` under the root metadata.
        and not (path == "" and prop == "metadata")
    ]
    assert missing == []


@pytest.mark.parametrize(("name", "crd"), CRDS, ids=CRD_IDS)
def test_schema_is_structural(name: str, crd: dict[str, Any]) -> None:
    schema = schema_of(crd)
    for path, node in walk(schema):
        assert node.get("type") or any(k.startswith("x-kubernetes-") for k in node), path
        assert FORBIDDEN.isdisjoint(node), f"{path}: {FORBIDDEN & set(node)}"
        if "properties" in node or "additionalProperties" in node:
            assert node["type"] == "object", path
        if "items" in node:
            assert node["type"] == "array", path
        if node.get("type") == "array":
            assert "items" in node, path
        for required in node.get("required", []):
            assert required in node["properties"], f"{path}: {required}"
    # The API server owns metadata's schema; a CRD may only call it an object.
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert schema["required"] == ["spec"]


WITH_STATUS = [(n, c) for n, c in CRDS if "status" in schema_of(c)["properties"]]


def test_every_kind_has_a_status() -> None:
    # A policy's status says who else can act as its appliers and approvers.
    assert [c["spec"]["names"]["kind"] for _, c in WITH_STATUS] == [
        "AccessPolicy",
        "AccessRequest",
        "BreakGlass",
    ]


@pytest.mark.parametrize(("name", "crd"), WITH_STATUS, ids=[n for n, _ in WITH_STATUS])
def test_status_requires_nothing_and_defaults_nothing(name: str, crd: dict[str, Any]) -> None:
    status = schema_of(crd)["properties"]["status"]
    for path, node in walk(status, ".status"):
        assert "required" not in node, path
        assert "default" not in node, path
        assert "x-kubernetes-validations" not in node, path


@pytest.mark.parametrize(("name", "crd"), CRDS, ids=CRD_IDS)
def test_defaults_are_scalars_the_model_agrees_with(name: str, crd: dict[str, Any]) -> None:
    model = MODELS[crd["spec"]["names"]["kind"]]
    defaults = {path: node["default"] for path, node in walk(schema_of(crd)) if "default" in node}
    for path, value in defaults.items():
        assert isinstance(value, str | int | bool), path
        assert "[]" not in path and "{}" not in path, path
    # Build the smallest object that reaches every defaulted field and check that the model,
    # left to its own defaults, arrives at the same values.
    minimal = {
        "AccessPolicy": {
            "metadata": {"name": "p"},
            "spec": {"approval": {}, "breakGlass": {"review": {}}},
        },
        "AccessRequest": {
            "metadata": {"name": "r", "namespace": "n"},
            "spec": {"role": {"kind": "ClusterRole", "name": "view"}, "reason": "x"},
        },
        "BreakGlass": {
            "metadata": {"name": "b"},
            "spec": {
                "role": {"kind": "ClusterRole", "name": "view"},
                "duration": "5m",
                "reason": "x",
            },
        },
    }[model.__name__]
    dumped = model.model_validate(minimal).model_dump(by_alias=True, mode="json")
    for path, value in defaults.items():
        node: Any = dumped
        for part in path.strip(".").split("."):
            node = node[part]
        assert node == value, path


def test_default_duration_is_not_defaulted_so_a_lower_max_alone_is_accepted() -> None:
    spec = schema_of(load(CRD_DIR / "accesspolicies.lapse.dev.yaml"))["properties"]["spec"]
    assert "default" not in spec["properties"]["defaultDuration"]
    assert spec["properties"]["maxDuration"]["default"] == "4h"
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert any("duration(self.defaultDuration) <= duration(self.maxDuration)" in r for r in rules)


@pytest.mark.parametrize(("name", "crd"), CRDS, ids=CRD_IDS)
def test_printer_columns_point_at_fields_of_the_schema(name: str, crd: dict[str, Any]) -> None:
    (version,) = crd["spec"]["versions"]
    columns = version["additionalPrinterColumns"]
    assert columns[-1] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    }
    paths = {path for path, _ in walk(schema_of(crd))}
    for column in columns[:-1]:
        # A condition's column filters the list by type: the field is the items' field.
        path = re.sub(r"\[\?\(@\.type==\"[A-Za-z]+\"\)\]", "[]", column["jsonPath"])
        assert path in paths, column


@pytest.mark.parametrize(
    ("plural", "columns"),
    [
        ("accessrequests", ["Role", "Subject", "Phase", "Starts", "Expires", "Age"]),
        ("accesspolicies", ["Mode", "Max", "Exposed", "Age"]),
        ("breakglasses", ["Role", "Requester", "Incident", "Phase", "Expires", "Age"]),
    ],
)
def test_printer_column_names(plural: str, columns: list[str]) -> None:
    (version,) = load(CRD_DIR / f"{plural}.lapse.dev.yaml")["spec"]["versions"]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == columns


@pytest.mark.parametrize(
    ("plural", "kind"), [("accessrequests", "AccessRequest"), ("breakglasses", "BreakGlass")]
)
def test_spec_is_immutable(plural: str, kind: str) -> None:
    spec = schema_of(load(CRD_DIR / f"{plural}.lapse.dev.yaml"))["properties"]["spec"]
    assert {
        "rule": "self == oldSelf",
        "message": f"spec is immutable: create a new {kind} to ask again",
    } in spec["x-kubernetes-validations"]


def duration_nodes() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{name}{path}", node)
        for name, crd in CRDS
        for path, node in walk(schema_of(crd))
        if node.get("pattern") == DURATION_PATTERN
    ]


def admitted(node: dict[str, Any], value: str) -> bool:
    """What admission decides for a duration field, with CEL's `matches` as `re.search`."""
    if not node["minLength"] <= len(value) <= node["maxLength"]:
        return False
    if re.search(node["pattern"], value) is None:
        return False
    for rule in node["x-kubernetes-validations"]:
        (regex,) = re.fullmatch(r"self\.matches\('(.*)'\)", rule["rule"]).groups()  # type: ignore[union-attr]
        if re.search(regex, value) is None:
            return False
    return True


@pytest.mark.parametrize(("path", "node"), duration_nodes(), ids=lambda v: str(v)[:60])
def test_durations_are_positive_and_well_formed(path: str, node: dict[str, Any]) -> None:
    assert node["x-kubernetes-validations"][0]["message"] == (
        "duration must be a positive duration such as 30m or 2h"
    )
    for good in ("30m", "2h", "1h30m", "45s", "0h5m", "10s"):
        assert admitted(node, good), good
    for bad in ("0s", "0h", "00m", "0h0m0s", "", "5", "1d", "-1h", "1.5h", "30 m"):
        assert not admitted(node, bad), bad


def test_duration_fields_are_where_the_models_put_them() -> None:
    paths = {path for path, _ in duration_nodes()}
    assert paths == {
        "accesspolicies.lapse.dev.yaml.spec.defaultDuration",
        "accesspolicies.lapse.dev.yaml.spec.maxDuration",
        "accesspolicies.lapse.dev.yaml.spec.approval.timeout",
        "accesspolicies.lapse.dev.yaml.spec.breakGlass.maxDuration",
        "accesspolicies.lapse.dev.yaml.spec.breakGlass.review.deadline",
        "accesspolicies.lapse.dev.yaml.spec.breakGlass.review.revokeIfUnreviewedAfter",
        "accessrequests.lapse.dev.yaml.spec.duration",
        "accesspolicies.lapse.dev.yaml.spec.maxTotalDuration",
        "accesspolicies.lapse.dev.yaml.spec.maxLeadTime",
        "breakglasses.lapse.dev.yaml.spec.duration",
    }


def test_optional_fields_are_plain_types_not_unions() -> None:
    spec = schema_of(load(CRD_DIR / "accessrequests.lapse.dev.yaml"))["properties"]["spec"]
    assert spec["required"] == ["role", "reason"]
    assert spec["properties"]["ticket"] == {
        "description": "A ticket or change reference.",
        "maxLength": 256,
        "type": "string",
    }
    assert spec["properties"]["role"]["properties"]["kind"]["enum"] == ["ClusterRole", "Role"]


def sample_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(SAMPLES_DIR.glob("**/*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if isinstance(doc, dict) and doc.get("kind") in MODELS:
                docs.append((f"{path.relative_to(ROOT)}#{i}", doc))
    return docs


@pytest.mark.parametrize(("where", "doc"), sample_documents(), ids=lambda v: str(v)[:60])
def test_samples_validate_against_the_models(where: str, doc: dict[str, Any]) -> None:
    model = MODELS[doc["kind"]]
    obj = model.model_validate(doc)
    assert obj.to_wire()["spec"]
    schema = schema_of(
        yaml.safe_load(crdgen.render(next(s for s in crdgen.CRDS if s.model is model)))
    )
    # Every field a sample writes is a field the CRD knows (the API server would prune others).
    assert list(unknown_fields(doc["spec"], schema["properties"]["spec"], ".spec")) == [], where


def unknown_fields(value: Any, node: dict[str, Any], path: str) -> Iterator[str]:
    if isinstance(value, dict):
        for key, child in value.items():
            if key in node.get("properties", {}):
                yield from unknown_fields(child, node["properties"][key], f"{path}.{key}")
            elif isinstance(node.get("additionalProperties"), dict):
                yield from unknown_fields(child, node["additionalProperties"], f"{path}.{key}")
            else:
                yield f"{path}.{key}"
    elif isinstance(value, list):
        for child in value:
            yield from unknown_fields(child, node.get("items", {}), f"{path}[]")


def test_unknown_fields_are_found() -> None:
    schema = schema_of(load(CRD_DIR / "accesspolicies.lapse.dev.yaml"))["properties"]["spec"]
    spec = {
        "namespaceSelector": {"matchLabels": {"team": "payments"}},
        "roles": [{"kind": "ClusterRole", "name": "view", "colour": "red"}],
        "maxDuraton": "1h",
    }
    assert list(unknown_fields(spec, schema, ".spec")) == [
        ".spec.roles[].colour",
        ".spec.maxDuraton",
    ]
