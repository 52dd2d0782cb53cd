"""Server-side printing: `meta.k8s.io/v1` Tables, as `kubectl get` asks for them.

kubectl prints whatever columns the server sends (`Accept: ...;as=Table`), so `kubectl get
accessrequests` shows Lapse's `additionalPrinterColumns` only if the local API builds the Table
the way apiextensions-apiserver does: Name first, then the declared columns evaluated with
JSONPath (first match only, typed cells, `date` cells as the age since then, rendered
server-side as apiextensions does), or
Name and Age for CRDs that declare none. Built-in kinds get the columns of the real server's
printers (RoleBinding's ROLE, Namespace's STATUS, Event's LAST SEEN ... MESSAGE).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubeapi import jsonpath
from kubeapi.resources import ResourceInfo

Column = dict[str, Any]
Row = Callable[[dict[str, Any]], list[Any]]

NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although "
    "some resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
CREATED_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was "
    "created. It is not guaranteed to be set in happens-before order across separate "
    "operations. Clients may not set this value. It is represented in RFC3339 form and is in "
    "UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)


def _column(
    name: str, ctype: str = "string", fmt: str = "", description: str = "", priority: int = 0
) -> Column:
    return {
        "name": name,
        "type": ctype,
        "format": fmt,
        "description": description,
        "priority": priority,
    }


NAME_COLUMN = _column("Name", "string", "name", NAME_DESCRIPTION)


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: the AGE kubectl shows."""
    if int(seconds) < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    total = int(seconds)
    if total < 120:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        rest = total % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = total // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None


def since(value: Any) -> str:
    """translateTimestampSince: a timestamp as the age kubectl prints."""
    moment = _parse_time(value)
    if moment is None:
        return "<unknown>"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return human_duration((datetime.now(UTC) - moment).total_seconds())


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _age(obj: dict[str, Any]) -> str:
    return since(_meta(obj).get("creationTimestamp"))


AGE_COLUMN = _column("Age", "string", "", CREATED_DESCRIPTION)


# --- built-in kinds ---------------------------------------------------------------------------


def _subjects(obj: dict[str, Any], kind: str) -> str:
    names = []
    for subject in obj.get("subjects") or []:
        if subject.get("kind") != kind:
            continue
        if kind == "ServiceAccount":
            names.append(f"{subject.get('namespace', '')}/{subject.get('name', '')}")
        else:
            names.append(str(subject.get("name", "")))
    return ", ".join(names)


def _binding_row(obj: dict[str, Any]) -> list[Any]:
    ref = obj.get("roleRef") or {}
    return [
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        _age(obj),
        _subjects(obj, "User"),
        _subjects(obj, "Group"),
        _subjects(obj, "ServiceAccount"),
    ]


_BINDING_COLUMNS = [
    _column("Role", description="RoleRef is the reference to the role."),
    AGE_COLUMN,
    _column("Users", description="Users in the binding.", priority=1),
    _column("Groups", description="Groups in the binding.", priority=1),
    _column("ServiceAccounts", description="ServiceAccounts in the binding.", priority=1),
]


def _event_row(obj: dict[str, Any]) -> list[Any]:
    involved = obj.get("involvedObject") or obj.get("regarding") or {}
    last = (
        obj.get("lastTimestamp")
        or (obj.get("series") or {}).get("lastObservedTime")
        or obj.get("eventTime")
        or _meta(obj).get("creationTimestamp")
    )
    first = obj.get("firstTimestamp") or obj.get("eventTime") or last
    source = obj.get("source") or {}
    return [
        since(last),
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        involved.get("fieldPath", ""),
        source.get("component")
        or obj.get("reportingComponent")
        or obj.get("reportingController", ""),
        obj.get("message") or obj.get("note", ""),
        since(first),
        obj.get("count") or (obj.get("series") or {}).get("count") or 1,
        _meta(obj).get("name", ""),
    ]


_EVENT_COLUMNS = [
    _column("Last Seen"),
    _column("Type"),
    _column("Reason"),
    _column("Object"),
    _column("Subobject", priority=1),
    _column("Source", priority=1),
    _column("Message"),
    _column("First Seen", priority=1),
    _column("Count", "integer", priority=1),
    _column("Name", priority=1),
]


def _count(value: Any) -> int:
    return len(value) if isinstance(value, dict | list) else 0


def _webhooks_row(obj: dict[str, Any]) -> list[Any]:
    return [_count(obj.get("webhooks")), _age(obj)]


def _pod_row(obj: dict[str, Any]) -> list[Any]:
    containers = (obj.get("spec") or {}).get("containers") or []
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    return [
        f"{ready}/{len(containers)}",
        (obj.get("status") or {}).get("phase", "Pending"),
        restarts,
        _age(obj),
    ]


def _service_row(obj: dict[str, Any]) -> list[Any]:
    spec = obj.get("spec") or {}
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
    return [
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP", "<none>"),
        "<none>",
        ports or "<none>",
        _age(obj),
    ]


def _deployment_row(obj: dict[str, Any]) -> list[Any]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return [
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        _age(obj),
    ]


# (group, plural) -> (columns after Name, cells after Name)
BUILTIN_PRINTERS: dict[tuple[str, str], tuple[list[Column], Row]] = {
    ("", "namespaces"): (
        [_column("Status", description="The status of the namespace"), AGE_COLUMN],
        lambda o: [(o.get("status") or {}).get("phase", "Active"), _age(o)],
    ),
    ("", "configmaps"): (
        [_column("Data", "integer"), AGE_COLUMN],
        lambda o: [_count(o.get("data")) + _count(o.get("binaryData")), _age(o)],
    ),
    ("", "secrets"): (
        [_column("Type"), _column("Data", "integer"), AGE_COLUMN],
        lambda o: [o.get("type", "Opaque"), _count(o.get("data")), _age(o)],
    ),
    ("", "serviceaccounts"): (
        [_column("Secrets", "integer"), AGE_COLUMN],
        lambda o: [_count(o.get("secrets")), _age(o)],
    ),
    ("", "events"): (_EVENT_COLUMNS, _event_row),
    ("events.k8s.io", "events"): (_EVENT_COLUMNS, _event_row),
    ("", "pods"): (
        [
            _column("Ready"),
            _column("Status"),
            _column("Restarts", "string"),
            AGE_COLUMN,
        ],
        _pod_row,
    ),
    ("", "services"): (
        [
            _column("Type"),
            _column("Cluster-IP"),
            _column("External-IP"),
            _column("Port(s)"),
            AGE_COLUMN,
        ],
        _service_row,
    ),
    ("", "endpoints"): ([_column("Endpoints"), AGE_COLUMN], lambda o: ["<none>", _age(o)]),
    ("apps", "deployments"): (
        [
            _column("Ready"),
            _column("Up-to-date", "integer"),
            _column("Available", "integer"),
            AGE_COLUMN,
        ],
        _deployment_row,
    ),
    ("coordination.k8s.io", "leases"): (
        [_column("Holder"), AGE_COLUMN],
        lambda o: [(o.get("spec") or {}).get("holderIdentity", ""), _age(o)],
    ),
    ("rbac.authorization.k8s.io", "rolebindings"): (_BINDING_COLUMNS, _binding_row),
    ("rbac.authorization.k8s.io", "clusterrolebindings"): (_BINDING_COLUMNS, _binding_row),
    ("rbac.authorization.k8s.io", "roles"): (
        [_column("Created At", "date", description=CREATED_DESCRIPTION)],
        lambda o: [_meta(o).get("creationTimestamp")],
    ),
    ("rbac.authorization.k8s.io", "clusterroles"): (
        [_column("Created At", "date", description=CREATED_DESCRIPTION)],
        lambda o: [_meta(o).get("creationTimestamp")],
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions"): (
        [_column("Created At", "date", description=CREATED_DESCRIPTION)],
        lambda o: [_meta(o).get("creationTimestamp")],
    ),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"): (
        [_column("Webhooks", "integer"), AGE_COLUMN],
        _webhooks_row,
    ),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"): (
        [_column("Webhooks", "integer"), AGE_COLUMN],
        _webhooks_row,
    ),
}


# --- custom resources -------------------------------------------------------------------------

DEFAULT_CRD_COLUMNS: tuple[dict[str, Any], ...] = (
    {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
        "description": CREATED_DESCRIPTION,
    },
)


def _cell(ctype: str, value: Any) -> Any:
    """apiextensions' cellForJSONValue: a JSON value as the column's type, or None."""
    if value is None:
        return None
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if ctype == "integer" and is_number:
        return int(value)
    if ctype == "number" and is_number:
        return float(value)
    if ctype == "boolean" and isinstance(value, bool):
        return value
    if ctype == "string":
        return jsonpath.to_text(value)
    if ctype == "date" and isinstance(value, str):
        # apiextensions renders dates server-side (metatable.ConvertToHumanReadableDateType):
        # kubectl prints the cell as it comes.
        return "<invalid>" if _parse_time(value) is None else since(value)
    return None


def _crd_columns(info: ResourceInfo) -> tuple[list[Column], Row]:
    declared = info.printer_columns or DEFAULT_CRD_COLUMNS
    columns = [
        _column(
            str(c.get("name", "")),
            str(c.get("type", "string")),
            str(c.get("format", "")),
            str(c.get("description", "")),
            int(c.get("priority", 0) or 0),
        )
        for c in declared
    ]

    def row(obj: dict[str, Any]) -> list[Any]:
        cells: list[Any] = []
        for column in declared:
            try:
                found = jsonpath.find(str(column.get("jsonPath", "")), obj)
            except jsonpath.JSONPathError:
                found = []
            cells.append(_cell(str(column.get("type", "string")), found[0]) if found else None)
        return cells

    return columns, row


def _printer(info: ResourceInfo) -> tuple[list[Column], Row]:
    if info.crd is not None or info.printer_columns:
        return _crd_columns(info)
    builtin = BUILTIN_PRINTERS.get((info.group, info.plural))
    if builtin is not None:
        return builtin
    return [AGE_COLUMN], lambda o: [_age(o)]


def _partial(info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": _meta(obj),
    }


def to_table(
    info: ResourceInfo, objects: list[dict[str, Any]], include_object: str = "Metadata"
) -> dict[str, Any]:
    """The `Table` the API server answers to `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.

    `include_object` is the `includeObject` query parameter: "Metadata" (default, rows carry
    PartialObjectMetadata), "Object" (the full object) or "None".
    """
    columns, cells = _printer(info)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [_meta(obj).get("name", ""), *cells(obj)]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = _partial(info, obj)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [NAME_COLUMN, *columns],
        "rows": rows,
    }
