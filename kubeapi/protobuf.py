"""Decoding of the Kubernetes protobuf wire format for request bodies kubectl sends that way.

kubectl's typed clients (`kubectl create configmap|secret|namespace|role...`, `kubectl auth
can-i`, `kubectl auth whoami`) post `application/vnd.kubernetes.protobuf` bodies. The server
answers in JSON, which kubectl accepts; only request bodies need decoding, and only for the
kinds below, whose field numbers come from k8s.io/api's generated.proto files.
"""

from __future__ import annotations

import base64
from typing import Any

from . import errors

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

# A schema maps field number -> (json name, type, repeated). A type is "string", "bytes",
# "bool", "int", a nested schema (dict), or ("map", value type).
Schema = dict[int, tuple[str, Any, bool]]

TYPE_META: Schema = {1: ("apiVersion", "string", False), 2: ("kind", "string", False)}
UNKNOWN: Schema = {
    1: ("typeMeta", TYPE_META, False),
    2: ("raw", "bytes", False),
    3: ("contentEncoding", "string", False),
    4: ("contentType", "string", False),
}
OWNER_REFERENCE: Schema = {
    5: ("apiVersion", "string", False),
    1: ("kind", "string", False),
    3: ("name", "string", False),
    4: ("uid", "string", False),
    6: ("controller", "bool", False),
    7: ("blockOwnerDeletion", "bool", False),
}
OBJECT_META: Schema = {
    1: ("name", "string", False),
    2: ("generateName", "string", False),
    3: ("namespace", "string", False),
    5: ("uid", "string", False),
    6: ("resourceVersion", "string", False),
    11: ("labels", ("map", "string"), False),
    12: ("annotations", ("map", "string"), False),
    13: ("ownerReferences", OWNER_REFERENCE, True),
    14: ("finalizers", "string", True),
}
LABEL_SELECTOR: Schema = {
    1: ("matchLabels", ("map", "string"), False),
    2: (
        "matchExpressions",
        {
            1: ("key", "string", False),
            2: ("operator", "string", False),
            3: ("values", "string", True),
        },
        True,
    ),
}
POLICY_RULE: Schema = {
    1: ("verbs", "string", True),
    2: ("apiGroups", "string", True),
    3: ("resources", "string", True),
    4: ("resourceNames", "string", True),
    5: ("nonResourceURLs", "string", True),
}
SUBJECT: Schema = {
    1: ("kind", "string", False),
    2: ("apiGroup", "string", False),
    3: ("name", "string", False),
    4: ("namespace", "string", False),
}
BOUND_OBJECT_REFERENCE: Schema = {
    1: ("kind", "string", False),
    2: ("apiVersion", "string", False),
    3: ("name", "string", False),
    4: ("uid", "string", False),
}
ROLE_REF: Schema = {
    1: ("apiGroup", "string", False),
    2: ("kind", "string", False),
    3: ("name", "string", False),
}
RESOURCE_ATTRIBUTES: Schema = {
    1: ("namespace", "string", False),
    2: ("verb", "string", False),
    3: ("group", "string", False),
    4: ("version", "string", False),
    5: ("resource", "string", False),
    6: ("subresource", "string", False),
    7: ("name", "string", False),
}
NON_RESOURCE_ATTRIBUTES: Schema = {1: ("path", "string", False), 2: ("verb", "string", False)}
ACCESS_SPEC: Schema = {
    1: ("resourceAttributes", RESOURCE_ATTRIBUTES, False),
    2: ("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES, False),
    3: ("user", "string", False),
    4: ("groups", "string", True),
    5: ("extra", ("map", {1: ("items", "string", True)}), False),
    6: ("uid", "string", False),
}


def _object(spec: Schema | None = None, **more: tuple[str, Any, bool]) -> Schema:
    schema: Schema = {1: ("metadata", OBJECT_META, False)}
    if spec is not None:
        schema[2] = ("spec", spec, False)
    for number, entry in more.items():
        schema[int(number.lstrip("f"))] = entry
    return schema


KINDS: dict[tuple[str, str], Schema] = {
    ("v1", "ConfigMap"): _object(
        f2=("data", ("map", "string"), False),
        f3=("binaryData", ("map", "bytes"), False),
        f4=("immutable", "bool", False),
    ),
    ("v1", "Secret"): _object(
        f2=("data", ("map", "bytes"), False),
        f3=("type", "string", False),
        f4=("stringData", ("map", "string"), False),
        f5=("immutable", "bool", False),
    ),
    ("v1", "Namespace"): _object({1: ("finalizers", "string", True)}),
    ("v1", "ServiceAccount"): _object(
        f2=(
            "secrets",
            {
                1: ("kind", "string", False),
                2: ("namespace", "string", False),
                3: ("name", "string", False),
            },
            True,
        ),
        f3=("imagePullSecrets", {1: ("name", "string", False)}, True),
        f4=("automountServiceAccountToken", "bool", False),
    ),
    ("rbac.authorization.k8s.io/v1", "Role"): _object(f2=("rules", POLICY_RULE, True)),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): _object(
        f2=("rules", POLICY_RULE, True),
        f3=("aggregationRule", {1: ("clusterRoleSelectors", LABEL_SELECTOR, True)}, False),
    ),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): _object(
        f2=("subjects", SUBJECT, True),
        f3=("roleRef", ROLE_REF, False),
    ),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): _object(
        f2=("subjects", SUBJECT, True),
        f3=("roleRef", ROLE_REF, False),
    ),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): _object(
        {
            1: ("resourceAttributes", RESOURCE_ATTRIBUTES, False),
            2: ("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES, False),
        }
    ),
    ("authorization.k8s.io/v1", "SubjectAccessReview"): _object(ACCESS_SPEC),
    ("authorization.k8s.io/v1", "LocalSubjectAccessReview"): _object(ACCESS_SPEC),
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): _object(
        {1: ("namespace", "string", False)}
    ),
    ("authentication.k8s.io/v1", "SelfSubjectReview"): _object(),
    ("authentication.k8s.io/v1", "TokenRequest"): _object(
        {
            1: ("audiences", "string", True),
            3: ("boundObjectRef", BOUND_OBJECT_REFERENCE, False),
            4: ("expirationSeconds", "int", False),
        }
    ),
}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise errors.bad_request("truncated protobuf varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    out = []
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value = data[pos : pos + length]
            pos += length
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise errors.bad_request(f"unsupported protobuf wire type {wire}")
        out.append((number, wire, value))
    return out


def _scalar(kind: Any, value: Any) -> Any:
    if isinstance(kind, dict):
        return decode_message(value, kind)
    if kind == "string":
        return bytes(value).decode()
    if kind == "bytes":
        return base64.b64encode(bytes(value)).decode()
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return value
    raise errors.internal(f"unknown protobuf field type {kind!r}")


def decode_message(data: bytes, schema: Schema) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, _, value in _fields(data):
        entry = schema.get(number)
        if entry is None:
            continue
        name, kind, repeated = entry
        if isinstance(kind, tuple) and kind[0] == "map":
            pair = {n: v for n, _, v in _fields(value)}
            key = bytes(pair.get(1, b"")).decode()
            obj.setdefault(name, {})[key] = _scalar(kind[1], pair.get(2, b""))
        elif repeated:
            obj.setdefault(name, []).append(_scalar(kind, value))
        else:
            decoded = _scalar(kind, value)
            # Go's JSON omits empty optional fields; gogo protobuf still writes them.
            if decoded not in ("", False) or kind == "int":
                obj[name] = decoded
    return obj


def decode(body: bytes) -> dict[str, Any]:
    """A JSON-shaped object from a `k8s\\x00`-framed protobuf body."""
    if not body.startswith(MAGIC):
        raise errors.bad_request("protobuf body without the k8s envelope")
    envelope = decode_message(body[len(MAGIC) :], UNKNOWN)
    type_meta = envelope.get("typeMeta") or {}
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    schema = KINDS.get((api_version, kind))
    if schema is None:
        raise errors.unsupported_media_type(f"{CONTENT_TYPE} ({api_version} {kind})")
    raw = base64.b64decode(envelope.get("raw", ""))
    obj = decode_message(raw, schema)
    obj["apiVersion"] = api_version
    obj["kind"] = kind
    return obj


# -- encoding, for the one document kubectl insists on reading as protobuf ---------------------

# What kube-openapi answers with ("@" would not parse as a media type in Go).
OPENAPI_V2_CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint((number << 3) | 2) + _encode_varint(len(payload)) + payload


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def openapi_v2_stub(title: str, version: str) -> bytes:
    """A gnostic `openapi_v2.Document` with only `swagger` and `info`.

    kubectl reads /openapi/v2 (protobuf only) just to validate kinds that /openapi/v3 lacks;
    those are absent from v2 as well, so an empty document gives the real outcome (kubectl
    goes on and the server answers that the kind does not exist).
    """
    info = _field(1, title.encode()) + _field(2, version.encode())
    return _field(1, b"2.0") + _field(2, info)
