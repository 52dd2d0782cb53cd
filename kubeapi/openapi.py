"""OpenAPI documents (`/openapi/v2`, `/openapi/v3`) for what the local API serves.

kubectl reads them: `kubectl apply` sends `fieldValidation=Strict` only when the group-version's
v3 document lists that query parameter on the kind's PATCH operation (otherwise it validates
client-side), and `kubectl explain` renders the schemas found by their
`x-kubernetes-group-version-kind`. Custom kinds publish their CRD's structural schema; built-in
kinds get small hand-written schemas, enough for explain. Built-in PATCH operations do not
advertise strategic merge patch, so kubectl computes strategic merge patches from its compiled-in
types, exactly as it does for those kinds against a real cluster.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from kubeapi.resources import KUBERNETES_VERSION, ResourceInfo

Schema = dict[str, Any]

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
OBJECT_META = f"{META}.ObjectMeta"
LIST_META = f"{META}.ListMeta"


def _ref(name: str, prefix: str = "#/components/schemas/") -> Schema:
    return {"$ref": prefix + name}


def _s(description: str = "", **fields: Any) -> Schema:
    schema: Schema = {"type": "string"}
    if description:
        schema["description"] = description
    schema.update(fields)
    return schema


def _obj(
    description: str, properties: dict[str, Schema], required: list[str] | None = None
) -> Schema:
    schema: Schema = {"description": description, "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _map_of_strings(description: str) -> Schema:
    return {"description": description, "type": "object", "additionalProperties": _s(default="")}


def _list_of(items: Schema, description: str = "") -> Schema:
    schema: Schema = {"type": "array", "items": items}
    if description:
        schema["description"] = description
    return schema


API_VERSION = _s(
    "APIVersion defines the versioned schema of this representation of an object. Servers "
    "should convert recognized schemas to the latest internal value, and may reject "
    "unrecognized values. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"
)
KIND = _s(
    "Kind is a string value representing the REST resource this object represents. Servers may "
    "infer this from the endpoint the client submits requests to. Cannot be updated. In "
    "CamelCase. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)
METADATA_DESCRIPTION = (
    "Standard object's metadata. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
TIME = _s(format="date-time")

# Shared definitions, keyed by their upstream model names.
COMMON: dict[str, Schema] = {
    OBJECT_META: _obj(
        "ObjectMeta is metadata that all persisted resources must have, which includes all "
        "objects users must create.",
        {
            "name": _s(
                "Name must be unique within a namespace. Is required when creating resources, "
                "although some resources may allow a client to request the generation of an "
                "appropriate name automatically. Cannot be updated."
            ),
            "generateName": _s(
                "GenerateName is an optional prefix, used by the server, to generate a unique "
                "name ONLY IF the Name field has not been provided."
            ),
            "namespace": _s(
                "Namespace defines the space within which each name must be unique. An empty "
                'namespace is equivalent to the "default" namespace.'
            ),
            "uid": _s("UID is the unique in time and space value for this object."),
            "resourceVersion": _s(
                "An opaque value that represents the internal version of this object."
            ),
            "generation": {
                "description": "A sequence number representing a specific generation of the "
                "desired state. Populated by the system. Read-only.",
                "type": "integer",
                "format": "int64",
            },
            "creationTimestamp": {
                **TIME,
                "description": "CreationTimestamp is a timestamp representing the server time "
                "when this object was created.",
            },
            "deletionTimestamp": {
                **TIME,
                "description": "DeletionTimestamp is RFC 3339 date and time at which this "
                "resource will be deleted.",
            },
            "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
            "labels": _map_of_strings(
                "Map of string keys and values that can be used to organize and categorize "
                "(scope and select) objects."
            ),
            "annotations": _map_of_strings(
                "Annotations is an unstructured key value map stored with a resource that may "
                "be set by external tools to store and retrieve arbitrary metadata."
            ),
            "finalizers": {
                **_list_of(_s(default="")),
                "description": "Must be empty before the object is deleted from the registry.",
                "x-kubernetes-list-type": "set",
                "x-kubernetes-patch-strategy": "merge",
            },
            "ownerReferences": {
                **_list_of(_ref(f"{META}.OwnerReference")),
                "description": "List of objects depended by this object.",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["uid"],
                "x-kubernetes-patch-merge-key": "uid",
                "x-kubernetes-patch-strategy": "merge",
            },
            "managedFields": _list_of(
                {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "ManagedFields maps workflow-id and version to the set of fields that are "
                "managed by that workflow.",
            ),
        },
    ),
    f"{META}.OwnerReference": _obj(
        "OwnerReference contains enough information to let you identify an owning object.",
        {
            "apiVersion": _s("API version of the referent."),
            "kind": _s("Kind of the referent."),
            "name": _s("Name of the referent."),
            "uid": _s("UID of the referent."),
            "controller": {
                "type": "boolean",
                "description": "If true, this reference points to the managing controller.",
            },
            "blockOwnerDeletion": {"type": "boolean"},
        },
        ["apiVersion", "kind", "name", "uid"],
    ),
    LIST_META: _obj(
        "ListMeta describes metadata that synthetic resources must have.",
        {"resourceVersion": _s(), "continue": _s(), "remainingItemCount": {"type": "integer"}},
    ),
    f"{META}.Patch": {
        "description": "Patch is provided to give a concrete name and type to the Kubernetes "
        "PATCH request body.",
        "type": "object",
    },
    f"{META}.Status": _obj(
        "Status is a return value for calls that don't return other objects.",
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "status": _s(),
            "message": _s(),
            "reason": _s(),
            "code": {"type": "integer", "format": "int32"},
            "details": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    ),
}

RBAC = "io.k8s.api.rbac.v1"
_SUBJECT = _obj(
    "Subject contains a reference to the object or user identities a role binding applies to.",
    {
        "apiGroup": _s(
            'APIGroup holds the API group of the referenced subject. Defaults to "" '
            'for ServiceAccount subjects. Defaults to "rbac.authorization.k8s.io" '
            "for User and Group subjects."
        ),
        "kind": _s(
            "Kind of object being referenced. Values defined by this API group are "
            '"User", "Group", and "ServiceAccount".'
        ),
        "name": _s("Name of the object being referenced."),
        "namespace": _s("Namespace of the referenced object."),
    },
    ["kind", "name"],
)
_ROLE_REF = _obj(
    "RoleRef contains information that points to the role being used",
    {
        "apiGroup": _s("APIGroup is the group for the resource being referenced"),
        "kind": _s("Kind is the type of resource being referenced"),
        "name": _s("Name is the name of resource being referenced"),
    },
    ["apiGroup", "kind", "name"],
)
_POLICY_RULE = _obj(
    "PolicyRule holds information that describes a policy rule, but does not contain "
    "information about who the rule applies to or which namespace the rule applies to.",
    {
        "verbs": _list_of(
            _s(default=""),
            "Verbs is a list of Verbs that apply to ALL the "
            "ResourceKinds contained in this rule. '*' represents all verbs.",
        ),
        "apiGroups": _list_of(
            _s(default=""), "APIGroups is the name of the APIGroup that contains the resources."
        ),
        "resources": _list_of(
            _s(default=""),
            "Resources is a list of resources this rule applies to. '*' represents all resources.",
        ),
        "resourceNames": _list_of(
            _s(default=""),
            "ResourceNames is an optional white list of names that the rule applies to.",
        ),
        "nonResourceURLs": _list_of(
            _s(default=""),
            "NonResourceURLs is a set of partial urls that a user should have access to.",
        ),
    },
    ["verbs"],
)


def _kind_schema(
    description: str, properties: dict[str, Schema], required: list[str] | None = None
) -> Schema:
    return _obj(
        description,
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "allOf": [_ref(OBJECT_META)],
                "default": {},
                "description": METADATA_DESCRIPTION,
            },
            **properties,
        },
        required,
    )


_BINDING_PROPS = {
    "subjects": {
        **_list_of(_ref(f"{RBAC}.Subject")),
        "description": "Subjects holds references to the objects the role applies to.",
        "x-kubernetes-list-type": "atomic",
    },
    "roleRef": {
        "allOf": [_ref(f"{RBAC}.RoleRef")],
        "default": {},
        "description": "RoleRef can reference a Role in the current namespace or a "
        "ClusterRole in the global namespace. This field is immutable.",
    },
}
_RULES = {
    "rules": {
        **_list_of(_ref(f"{RBAC}.PolicyRule")),
        "description": "Rules holds all the PolicyRules for this Role",
        "x-kubernetes-list-type": "atomic",
    }
}
_EVENT_SOURCE = _obj(
    "EventSource contains information for an event.",
    {
        "component": _s("Component from which the event is generated."),
        "host": _s("Node name on which the event is generated."),
    },
)
_OBJECT_REFERENCE = _obj(
    "ObjectReference contains enough information to let you inspect or modify the referred object.",
    {
        k: _s(f"{k} of the referent.")
        for k in ("apiVersion", "kind", "name", "namespace", "uid", "resourceVersion", "fieldPath")
    },
)

# (group, version, kind) -> (model name, schema, extra definitions)
BUILTIN_SCHEMAS: dict[tuple[str, str, str], tuple[str, Schema, dict[str, Schema]]] = {
    ("", "v1", "Namespace"): (
        "io.k8s.api.core.v1.Namespace",
        _kind_schema(
            "Namespace provides a scope for Names. Use of multiple namespaces is optional.",
            {
                "spec": _obj(
                    "Spec defines the behavior of the Namespace.",
                    {
                        "finalizers": _list_of(
                            _s(default=""),
                            "Finalizers is an opaque "
                            "list of values that must be empty to "
                            "permanently remove object from storage.",
                        )
                    },
                ),
                "status": _obj(
                    "Status describes the current status of a Namespace.",
                    {
                        "phase": _s(
                            "Phase is the current lifecycle phase of the namespace.",
                            enum=["Active", "Terminating"],
                        ),
                        "conditions": _list_of(
                            {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                        ),
                    },
                ),
            },
        ),
        {},
    ),
    ("", "v1", "ConfigMap"): (
        "io.k8s.api.core.v1.ConfigMap",
        _kind_schema(
            "ConfigMap holds configuration data for pods to consume.",
            {
                "data": _map_of_strings("Data contains the configuration data."),
                "binaryData": {
                    "type": "object",
                    "additionalProperties": _s(format="byte"),
                    "description": "BinaryData contains the binary data.",
                },
                "immutable": {
                    "type": "boolean",
                    "description": "Immutable, if set to true, "
                    "ensures that data stored in the ConfigMap cannot be updated.",
                },
            },
        ),
        {},
    ),
    ("", "v1", "Secret"): (
        "io.k8s.api.core.v1.Secret",
        _kind_schema(
            "Secret holds secret data of a certain type. The total bytes of the values in the "
            "Data field must be less than MaxSecretSize bytes.",
            {
                "data": {
                    "type": "object",
                    "additionalProperties": _s(format="byte"),
                    "description": "Data contains the secret data.",
                },
                "stringData": _map_of_strings(
                    "stringData allows specifying non-binary secret data in string form."
                ),
                "type": _s("Used to facilitate programmatic handling of secret data."),
                "immutable": {"type": "boolean"},
            },
        ),
        {},
    ),
    ("", "v1", "ServiceAccount"): (
        "io.k8s.api.core.v1.ServiceAccount",
        _kind_schema(
            "ServiceAccount binds together: * a name, understood by users, and perhaps by "
            "peripheral systems, for an identity * a principal that can be authenticated and "
            "authorized * a set of secrets",
            {
                "secrets": _list_of(
                    _ref("io.k8s.api.core.v1.ObjectReference"),
                    "Secrets is a list of the secrets in the same namespace "
                    "that pods running using this ServiceAccount are allowed "
                    "to use.",
                ),
                "imagePullSecrets": _list_of({"type": "object", "properties": {"name": _s()}}),
                "automountServiceAccountToken": {"type": "boolean"},
            },
        ),
        {"io.k8s.api.core.v1.ObjectReference": _OBJECT_REFERENCE},
    ),
    ("", "v1", "Event"): (
        "io.k8s.api.core.v1.Event",
        _kind_schema(
            "Event is a report of an event somewhere in the cluster.",
            {
                "involvedObject": {
                    "allOf": [_ref("io.k8s.api.core.v1.ObjectReference")],
                    "default": {},
                    "description": "The object that this event is about.",
                },
                "reason": _s(
                    "This should be a short, machine understandable string that gives "
                    "the reason for the transition into the object's current status."
                ),
                "message": _s("A human-readable description of the status of this operation."),
                "type": _s(
                    "Type of this event (Normal, Warning), new types could be added in the future"
                ),
                "count": {
                    "type": "integer",
                    "format": "int32",
                    "description": "The number of times this event has occurred.",
                },
                "firstTimestamp": {
                    **TIME,
                    "description": "The time at which the event was first recorded.",
                },
                "lastTimestamp": {
                    **TIME,
                    "description": "The time at which the most recent "
                    "occurrence of this event was recorded.",
                },
                "eventTime": {
                    **_s(format="date-time"),
                    "description": "Time when this Event was first observed.",
                },
                "source": {"allOf": [_ref("io.k8s.api.core.v1.EventSource")], "default": {}},
                "action": _s(),
                "reportingComponent": _s(),
                "reportingInstance": _s(),
                "related": _ref("io.k8s.api.core.v1.ObjectReference"),
                "series": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
            ["metadata", "involvedObject"],
        ),
        {
            "io.k8s.api.core.v1.ObjectReference": _OBJECT_REFERENCE,
            "io.k8s.api.core.v1.EventSource": _EVENT_SOURCE,
        },
    ),
    ("coordination.k8s.io", "v1", "Lease"): (
        "io.k8s.api.coordination.v1.Lease",
        _kind_schema(
            "Lease defines a lease concept.",
            {
                "spec": _obj(
                    "LeaseSpec is a specification of a Lease.",
                    {
                        "holderIdentity": _s(
                            "holderIdentity contains the identity of the holder of a current lease."
                        ),
                        "leaseDurationSeconds": {"type": "integer", "format": "int32"},
                        "acquireTime": {**_s(format="date-time")},
                        "renewTime": {**_s(format="date-time")},
                        "leaseTransitions": {"type": "integer", "format": "int32"},
                    },
                ),
            },
        ),
        {},
    ),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding"): (
        f"{RBAC}.RoleBinding",
        _kind_schema(
            "RoleBinding references a role, but does not contain it. It can reference a Role "
            "in the same namespace or a ClusterRole in the global namespace.",
            _BINDING_PROPS,
            ["roleRef"],
        ),
        {f"{RBAC}.Subject": _SUBJECT, f"{RBAC}.RoleRef": _ROLE_REF},
    ),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding"): (
        f"{RBAC}.ClusterRoleBinding",
        _kind_schema(
            "ClusterRoleBinding references a ClusterRole, but not contain it. It can reference "
            "a ClusterRole in the global namespace, and adds who information via Subject.",
            _BINDING_PROPS,
            ["roleRef"],
        ),
        {f"{RBAC}.Subject": _SUBJECT, f"{RBAC}.RoleRef": _ROLE_REF},
    ),
    ("rbac.authorization.k8s.io", "v1", "Role"): (
        f"{RBAC}.Role",
        _kind_schema(
            "Role is a namespaced, logical grouping of PolicyRules that can be referenced as a "
            "unit by a RoleBinding.",
            _RULES,
        ),
        {f"{RBAC}.PolicyRule": _POLICY_RULE},
    ),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole"): (
        f"{RBAC}.ClusterRole",
        _kind_schema(
            "ClusterRole is a cluster level, logical grouping of PolicyRules that can be "
            "referenced as a unit by a RoleBinding or ClusterRoleBinding.",
            {
                **_RULES,
                "aggregationRule": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        ),
        {f"{RBAC}.PolicyRule": _POLICY_RULE},
    ),
}


def _reverse_group(group: str) -> str:
    return ".".join(reversed(group.split("."))) if group else "io.k8s.api.core"


def model_name(info: ResourceInfo) -> str:
    """The components/definitions key of a kind, named as the API server names it."""
    builtin = BUILTIN_SCHEMAS.get((info.group, info.version, info.kind))
    if builtin is not None:
        return builtin[0]
    if info.crd is not None:
        return f"{_reverse_group(info.group)}.{info.version}.{info.kind}"
    prefix = f"io.k8s.api.{info.group.split('.')[0]}" if info.group else "io.k8s.api.core"
    return f"{prefix}.{info.version}.{info.kind}"


def _gvk(info: ResourceInfo) -> dict[str, str]:
    return {"group": info.group, "version": info.version, "kind": info.kind}


def _crd_model(info: ResourceInfo) -> Schema:
    schema = copy.deepcopy(info.schema or {"type": "object"})
    props = schema.setdefault("properties", {})
    props["apiVersion"] = API_VERSION
    props["kind"] = KIND
    props["metadata"] = {"allOf": [_ref(OBJECT_META)], "description": METADATA_DESCRIPTION}
    schema.setdefault("type", "object")
    return schema


def _models(info: ResourceInfo) -> dict[str, Schema]:
    """The kind's own model (tagged with its GVK) and the definitions it refers to."""
    builtin = BUILTIN_SCHEMAS.get((info.group, info.version, info.kind))
    extra: dict[str, Schema] = {}
    if builtin is not None:
        model = copy.deepcopy(builtin[1])
        extra = copy.deepcopy(builtin[2])
    elif info.crd is not None or info.schema is not None:
        model = _crd_model(info)
    else:
        model = _kind_schema(
            f"{info.kind} is served by the local Kubernetes API without a published schema.", {}
        )
        model["x-kubernetes-preserve-unknown-fields"] = True
    model["x-kubernetes-group-version-kind"] = [_gvk(info)]
    list_model = _obj(
        f"{info.kind}List is a list of {info.kind}",
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "items": _list_of(_ref(model_name(info)), f"List of {info.plural}."),
            "metadata": {"allOf": [_ref(LIST_META)], "description": "Standard list metadata."},
        },
        ["items"],
    )
    list_model["x-kubernetes-group-version-kind"] = [{**_gvk(info), "kind": f"{info.kind}List"}]
    return {model_name(info): model, f"{model_name(info)}List": list_model, **extra}


# --- operations -------------------------------------------------------------------------------

_QUERY_DESCRIPTIONS = {
    "dryRun": "When present, indicates that modifications should not be persisted.",
    "fieldManager": "fieldManager is a name associated with the actor or entity that is making "
    "these changes.",
    "fieldValidation": "fieldValidation instructs the server on how to handle objects in the "
    "request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - "
    "Ignore: This will ignore any unknown fields that are silently dropped from the object, "
    "and will ignore all but the last duplicate field that the decoder encounters. - Warn: "
    "This will send a warning via the standard warning response header for each unknown field "
    "that is dropped from the object, and for each duplicate field that is encountered. - "
    "Strict: This will fail the request with a BadRequest error if any unknown fields would "
    "be dropped from the object, or if any duplicate fields are present.",
    "force": 'Force is going to "force" Apply requests.',
    "pretty": "If 'true', then the output is pretty printed.",
}


def _query(name: str, v3: bool, ptype: str = "string") -> Schema:
    param: Schema = {"name": name, "in": "query", "description": _QUERY_DESCRIPTIONS.get(name, "")}
    if v3:
        param["schema"] = {"type": ptype, "uniqueItems": True}
    else:
        param["type"] = ptype
        param["uniqueItems"] = True
    return param


def _path_param(name: str, v3: bool) -> Schema:
    param: Schema = {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"{name} of the resource",
    }
    if v3:
        param["schema"] = {"type": "string", "uniqueItems": True}
    else:
        param["type"] = "string"
        param["uniqueItems"] = True
    return param


def _op_id(verb: str, info: ResourceInfo, suffix: str = "") -> str:
    group = "".join(p.capitalize() for p in info.group.replace("-", ".").split(".")) or "Core"
    scope = "Namespaced" if info.namespaced and verb != "listForAllNamespaces" else ""
    return f"{verb}{group}{info.version.capitalize()}{scope}{info.kind}{suffix}"


def _patch_types(info: ResourceInfo) -> list[str]:
    types = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ]
    # Strategic merge patch of built-in kinds is left to kubectl's compiled-in types: the
    # schemas here are too small to carry every patch strategy.
    return types


def _operation(
    info: ResourceInfo,
    action: str,
    op_id: str,
    v3: bool,
    prefix: str,
    body: bool = False,
    params: tuple[str, ...] = (),
    patch: bool = False,
    list_response: bool = False,
) -> Schema:
    model = _ref(model_name(info) + ("List" if list_response else ""), prefix)
    op: Schema = {
        "description": f"{action} {info.kind}",
        "operationId": op_id,
        "tags": [f"{info.group or 'core'}_{info.version}"],
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(info),
        "parameters": [_query(p, v3, "boolean" if p == "force" else "string") for p in params],
    }
    if v3:
        op["responses"] = {
            "200": {
                "description": "OK",
                "content": {
                    "application/json": {"schema": model},
                    "application/yaml": {"schema": model},
                },
            }
        }
        if body:
            content_types = _patch_types(info) if patch else ["*/*"]
            body_schema = _ref(f"{META}.Patch", prefix) if patch else model
            op["requestBody"] = {
                "content": {t: {"schema": body_schema} for t in content_types},
                "required": True,
            }
    else:
        op["responses"] = {"200": {"description": "OK", "schema": model}}
        op["produces"] = ["application/json", "application/yaml"]
        if body:
            op["consumes"] = _patch_types(info) if patch else ["*/*"]
            body_schema = _ref(f"{META}.Patch", prefix) if patch else model
            op["parameters"].insert(
                0, {"name": "body", "in": "body", "required": True, "schema": body_schema}
            )
    return op


def _paths(info: ResourceInfo, v3: bool, prefix: str) -> dict[str, Schema]:
    root = f"/apis/{info.group}/{info.version}" if info.group else f"/api/{info.version}"
    base = (
        f"{root}/namespaces/{{namespace}}/{info.plural}"
        if info.namespaced
        else (f"{root}/{info.plural}")
    )
    writes = ("dryRun", "fieldManager", "fieldValidation")
    verbs = set(info.verbs)
    collection: Schema = {}
    item: Schema = {}
    if "list" in verbs:
        collection["get"] = _operation(
            info, "list", _op_id("list", info), v3, prefix, list_response=True
        )
    if "create" in verbs:
        collection["post"] = _operation(
            info, "post", _op_id("create", info), v3, prefix, body=True, params=writes
        )
    if "get" in verbs:
        item["get"] = _operation(info, "get", _op_id("read", info), v3, prefix)
    if "update" in verbs:
        item["put"] = _operation(
            info, "put", _op_id("replace", info), v3, prefix, body=True, params=writes
        )
    if "patch" in verbs:
        item["patch"] = _operation(
            info,
            "patch",
            _op_id("patch", info),
            v3,
            prefix,
            body=True,
            params=(*writes, "force"),
            patch=True,
        )
    if "delete" in verbs:
        item["delete"] = _operation(
            info, "delete", _op_id("delete", info), v3, prefix, params=("dryRun",)
        )
    scope = [_path_param("namespace", v3)] if info.namespaced else []
    paths: dict[str, Schema] = {}
    if collection:
        collection["parameters"] = [*scope, _query("pretty", v3)]
        paths[base] = collection
    if item:
        item["parameters"] = [_path_param("name", v3), *scope, _query("pretty", v3)]
        paths[f"{base}/{{name}}"] = item
    for sub in info.subresources:
        if sub != "status":
            continue
        status: Schema = {"parameters": [_path_param("name", v3), *scope, _query("pretty", v3)]}
        if "get" in verbs:
            status["get"] = _operation(info, "get", _op_id("read", info, "Status"), v3, prefix)
        if "update" in verbs:
            status["put"] = _operation(
                info, "put", _op_id("replace", info, "Status"), v3, prefix, body=True, params=writes
            )
        if "patch" in verbs:
            status["patch"] = _operation(
                info,
                "patch",
                _op_id("patch", info, "Status"),
                v3,
                prefix,
                body=True,
                params=(*writes, "force"),
                patch=True,
            )
        paths[f"{base}/{{name}}/status"] = status
    return paths


def _rewrite_refs(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        return {
            k: (
                new + v[len(old) :]
                if k == "$ref" and isinstance(v, str) and v.startswith(old)
                else _rewrite_refs(v, old, new)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rewrite_refs(v, old, new) for v in value]
    return value


def _info() -> Schema:
    return {"title": "Kubernetes", "version": KUBERNETES_VERSION}


def v3_document(resources: list[ResourceInfo], group: str, version: str) -> dict[str, Any] | None:
    """The `/openapi/v3/apis/<group>/<version>` (or `/openapi/v3/api/v1`) document."""
    served = [r for r in resources if r.group == group and r.version == version]
    if not served:
        return None
    paths: dict[str, Schema] = {}
    schemas: dict[str, Schema] = copy.deepcopy(COMMON)
    for info in served:
        paths.update(_paths(info, True, "#/components/schemas/"))
        schemas.update(_models(info))
    return {"openapi": "3.0.0", "info": _info(), "paths": paths, "components": {"schemas": schemas}}


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def v3_index(resources: list[ResourceInfo]) -> dict[str, Any]:
    """The `/openapi/v3` discovery document: one entry per group-version, with a content hash.

    The hash changes whenever the document does, so kubectl's cache of the document (keyed by
    the URL) never serves a stale schema after a CRD changes.
    """
    gvs = sorted({(r.group, r.version) for r in resources})
    paths: dict[str, Any] = {}
    for group, version in gvs:
        document = v3_document(resources, group, version)
        digest = (
            hashlib.sha512(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())
            .hexdigest()
            .upper()
        )
        path = _gv_path(group, version)
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}


def v2(resources: list[ResourceInfo]) -> dict[str, Any]:
    """The `/openapi/v2` Swagger 2.0 document of everything served."""
    prefix = "#/definitions/"
    paths: dict[str, Schema] = {}
    definitions: dict[str, Schema] = _rewrite_refs(
        copy.deepcopy(COMMON), "#/components/schemas/", prefix
    )
    for info in resources:
        paths.update(_paths(info, False, prefix))
        definitions.update(_rewrite_refs(_models(info), "#/components/schemas/", prefix))
    return {"swagger": "2.0", "info": _info(), "paths": paths, "definitions": definitions}
