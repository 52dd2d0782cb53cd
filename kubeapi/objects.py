"""Object lifecycle: what the API server's generic registry does around every store write.

Creation fills in metadata (name from generateName, uid, timestamps, generation), updates
carry immutable fields over and enforce optimistic concurrency, status and spec writes ignore
each other, finalizers and deletionTimestamp decide when a delete really removes an object.
Authentication, authorization and admission happen before these calls, in the HTTP layer.
"""

from __future__ import annotations

import base64
import copy
import random
import uuid
from datetime import UTC, datetime
from typing import Any

from . import errors, events, validation
from .builtins import GENERATION
from .registry import Registry
from .resources import ResourceInfo
from .store import ResKey, Store

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
CRD_CLEANUP = "customresourcecleanup.apiextensions.k8s.io"
CRD_GROUP = "apiextensions.k8s.io"
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_of(info: ResourceInfo) -> ResKey:
    if info.group == events.GROUP and info.plural == "events":
        return ("", "events")  # one store for both shapes of Event
    return (info.group, info.plural)


def is_events_v1(info: ResourceInfo) -> bool:
    return info.group == events.GROUP and info.plural == "events"


class Objects:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry

    # -- reads ------------------------------------------------------------------------------

    def get(self, info: ResourceInfo, namespace: str, name: str) -> dict[str, Any]:
        obj = self.store.get(key_of(info), namespace, name)
        if obj is None:
            raise errors.not_found(info.plural, info.group, name)
        return obj

    def present(self, info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as the asked version shows it (custom kinds are stored once)."""
        if is_events_v1(info):
            return events.to_events_v1(obj)
        if obj.get("apiVersion") != info.group_version:
            return {**obj, "apiVersion": info.group_version}
        return obj

    # -- create -----------------------------------------------------------------------------

    def prepare_create(self, info: ResourceInfo, body: Any, namespace: str) -> dict[str, Any]:
        """A new object with server-set metadata, not yet stored nor validated by schema."""
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        obj = copy.deepcopy(body)
        api_version = obj.setdefault("apiVersion", info.group_version)
        if api_version != info.group_version:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({info.group_version})"
            )
        if obj.setdefault("kind", info.kind) != info.kind:
            raise errors.bad_request(
                f"the kind in the data ({obj['kind']}) does not match the expected kind "
                f"({info.kind})"
            )
        if is_events_v1(info):
            obj = events.to_core(obj)
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if info.namespaced:
            given = meta.get("namespace")
            if given and given != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise errors.invalid(
                    info.kind,
                    info.group,
                    "",
                    [
                        errors.Cause(
                            "metadata.name",
                            "Required value: name or generateName is required",
                            "FieldValueRequired",
                        )
                    ],
                )
            validation.check_name(info, prefix + "x", generated=True)
            meta["name"] = prefix + "".join(random.choices(_ALPHABET, k=5))
        validation.check_name(info, meta["name"])
        for field in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        if info.crd is not None or key_of(info) in GENERATION:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if info.group == "" and info.plural == "secrets":
            fold_string_data(obj)
            obj.setdefault("type", "Opaque")
        if info.group == "" and info.plural == "namespaces":
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
        if info.group == CRD_GROUP and info.plural == "customresourcedefinitions":
            meta["finalizers"] = [*(meta.get("finalizers") or []), CRD_CLEANUP]
            obj["status"] = crd_status(obj)
        return obj

    def check_namespace(self, info: ResourceInfo, namespace: str, name: str) -> None:
        if not info.namespaced:
            return
        ns = self.store.get(("", "namespaces"), "", namespace)
        if ns is None:
            raise errors.not_found("namespaces", "", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise errors.ApiError(
                403,
                "Forbidden",
                f'{info.plural}{"." + info.group if info.group else ""} "{name}" is forbidden: '
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
                {
                    "name": name,
                    "group": info.group,
                    "kind": info.plural,
                    "causes": [
                        {
                            "reason": "NamespaceTerminating",
                            "message": f"namespace {namespace} is being terminated",
                            "field": "metadata.namespace",
                        }
                    ],
                },
            )

    def create(self, info: ResourceInfo, obj: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        self.check_namespace(info, ns, meta["name"])
        prefix = meta.get("generateName")
        # A generated name that is taken is generated again, as the API server retries.
        for _ in range(8):
            if not prefix or self.store.get(key_of(info), ns, meta["name"]) is None:
                break
            meta["name"] = prefix + "".join(random.choices(_ALPHABET, k=5))
        existing = self.store.get(key_of(info), ns, meta["name"])
        if existing is not None:
            error = errors.already_exists(info.plural, info.group, meta["name"])
            # A name held by finalizers is taken until they are gone, and the answer says so.
            if existing["metadata"].get("deletionTimestamp"):
                error.message = f"object is being deleted: {error.message}"
            raise error
        if dry_run:
            return obj
        return self.store.put(key_of(info), obj)

    # -- update -----------------------------------------------------------------------------

    def prepare_update(
        self,
        info: ResourceInfo,
        old: dict[str, Any],
        body: Any,
        subresource: str,
        name: str,
    ) -> dict[str, Any]:
        """The would-be new object: immutable fields from old, the right half of spec/status."""
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        new = events.to_core(body) if is_events_v1(info) else copy.deepcopy(body)
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        if meta.get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({name})"
            )
        old_meta = old["metadata"]
        if info.namespaced and meta.get("namespace", old_meta.get("namespace")) != old_meta.get(
            "namespace"
        ):
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        rv = meta.get("resourceVersion")
        if rv and rv != old_meta["resourceVersion"]:
            raise errors.stale(info.plural, info.group, name)
        if subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
            return new
        if subresource == "finalize":
            finalizers = (new.get("spec") or {}).get("finalizers")
            new = copy.deepcopy(old)
            new.setdefault("spec", {})["finalizers"] = finalizers or []
            return new
        new["apiVersion"] = old.get("apiVersion", info.group_version)
        new["kind"] = old.get("kind", info.kind)
        meta["name"] = name
        for field in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "generation",
        ):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        meta.pop("managedFields", None)
        if "status" in info.subresources:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        if info.group == "" and info.plural == "secrets":
            fold_string_data(new)
            new.setdefault("type", old.get("type", "Opaque"))
        if info.group == "" and info.plural == "namespaces":
            new["spec"] = copy.deepcopy(old.get("spec", {}))
            new["status"] = copy.deepcopy(old.get("status", {}))
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        if info.group == CRD_GROUP and info.plural == "customresourcedefinitions":
            new["status"] = crd_status(new)
        return new

    def check_finalizers(
        self, info: ResourceInfo, old: dict[str, Any], new: dict[str, Any]
    ) -> None:
        if not old["metadata"].get("deletionTimestamp"):
            return
        before = set(old["metadata"].get("finalizers") or ())
        added = [f for f in new["metadata"].get("finalizers") or () if f not in before]
        if added:
            listed = ", ".join(f'"{f}"' for f in added)
            raise errors.invalid(
                info.kind,
                info.group,
                old["metadata"]["name"],
                [
                    errors.Cause(
                        "metadata.finalizers",
                        "Forbidden: no new finalizers can be added "
                        f"if the object is being deleted, found new finalizers "
                        f"[]string{{{listed}}}",
                        "FieldValueForbidden",
                    )
                ],
            )

    def update(
        self,
        info: ResourceInfo,
        old: dict[str, Any],
        new: dict[str, Any],
        dry_run: bool,
    ) -> dict[str, Any]:
        self.check_finalizers(info, old, new)
        meta = new["metadata"]
        if "generation" in old["metadata"] and _spec_changed(info, old, new):
            meta["generation"] = old["metadata"]["generation"] + 1
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return old  # a no-op write changes nothing, not even the resourceVersion
        if dry_run:
            return new
        meta_ns = meta.get("namespace", "")
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and not (info.group == "" and info.plural == "namespaces")
        ):
            return self.store.remove(key_of(info), meta_ns, meta["name"], final=new) or new
        return self.store.put(key_of(info), new)

    # -- delete -----------------------------------------------------------------------------

    def delete(
        self,
        info: ResourceInfo,
        obj: dict[str, Any],
        options: dict[str, Any],
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Delete or mark for deletion; returns (object, removed now)."""
        meta = obj["metadata"]
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise errors.conflict(
                info.plural,
                info.group,
                meta["name"],
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                f"{meta['uid']}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise errors.conflict(
                info.plural,
                info.group,
                meta["name"],
                f"Precondition failed: ResourceVersion in precondition: "
                f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                f"{meta['resourceVersion']}",
            )
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise errors.invalid(
                "DeleteOptions",
                "",
                "",
                [
                    errors.Cause(
                        "propagationPolicy",
                        f'Unsupported value: "{policy}": supported '
                        'values: "Foreground", "Background", "Orphan", "nil"',
                        "FieldValueNotSupported",
                    )
                ],
            )
        finalizers = list(meta.get("finalizers") or ())
        is_namespace = info.group == "" and info.plural == "namespaces"
        if is_namespace and meta["name"] in ("default", "kube-system", "kube-public"):
            raise errors.ApiError(
                403,
                "Forbidden",
                f'namespaces "{meta["name"]}" is forbidden: this namespace may not be deleted',
                {"name": meta["name"], "kind": "namespaces"},
            )
        if meta.get("deletionTimestamp"):
            extra = {"Foreground": FOREGROUND, "Orphan": ORPHAN}.get(policy or "")
            if extra and extra not in finalizers and not dry_run:
                new = copy.deepcopy(obj)
                others = [f for f in finalizers if f not in (FOREGROUND, ORPHAN)]
                new["metadata"]["finalizers"] = [*others, extra]
                return self.store.put(key_of(info), new), False
            return obj, False
        if policy == "Foreground":
            finalizers = [f for f in finalizers if f != ORPHAN] + [FOREGROUND]
        elif policy == "Orphan":
            finalizers = [f for f in finalizers if f != FOREGROUND] + [ORPHAN]
        if finalizers or is_namespace:
            new = copy.deepcopy(obj)
            new["metadata"]["deletionTimestamp"] = now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if finalizers:
                new["metadata"]["finalizers"] = list(dict.fromkeys(finalizers))
            if is_namespace:
                new["status"] = {**(new.get("status") or {}), "phase": "Terminating"}
            if dry_run:
                return new, False
            return self.store.put(key_of(info), new), False
        if dry_run:
            return obj, True
        gone = self.store.remove(key_of(info), meta.get("namespace", ""), meta["name"])
        return gone or obj, True

    def remove_finalizer(self, info: ResourceInfo, obj: dict[str, Any], finalizer: str) -> None:
        """Drop one finalizer as a controller would; the object goes if it was the last."""
        new = copy.deepcopy(obj)
        new["metadata"]["finalizers"] = [
            f for f in obj["metadata"].get("finalizers") or () if f != finalizer
        ]
        if not new["metadata"]["finalizers"]:
            del new["metadata"]["finalizers"]
        self.update(info, obj, new, dry_run=False)


def fold_string_data(secret: dict[str, Any]) -> None:
    """A Secret's write-only `stringData` lands base64-encoded in `data`, as on a real server."""
    string_data = secret.pop("stringData", None)
    if string_data:
        data = dict(secret.get("data") or {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        secret["data"] = data


def _spec_changed(info: ResourceInfo, old: dict[str, Any], new: dict[str, Any]) -> bool:
    if info.crd is not None:
        skip = {"metadata", "status"} if "status" in info.subresources else {"metadata"}
        keys = (set(old) | set(new)) - skip
        return any(old.get(k) != new.get(k) for k in keys)
    return old.get("spec") != new.get("spec")


def crd_status(crd: dict[str, Any]) -> dict[str, Any]:
    """What the apiextensions controllers would report for an acceptable CRD."""
    spec = crd.get("spec") or {}
    names = dict(spec.get("names") or {})
    names.setdefault("singular", str(names.get("kind", "")).lower())
    names.setdefault("listKind", f"{names.get('kind', '')}List")
    old_status = crd.get("status") or {}
    stamp = now()
    previous = {c.get("type"): c for c in old_status.get("conditions") or ()}

    def condition(kind: str, reason: str, message: str) -> dict[str, Any]:
        before = previous.get(kind)
        when = before.get("lastTransitionTime", stamp) if before else stamp
        return {
            "type": kind,
            "status": "True",
            "lastTransitionTime": when,
            "reason": reason,
            "message": message,
        }

    stored = list(old_status.get("storedVersions") or ())
    for version in spec.get("versions") or ():
        if version.get("storage") and version.get("name") not in stored:
            stored.append(version.get("name"))
    return {
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition(
                "Established", "InitialNamesAccepted", "the initial names have been accepted"
            ),
        ],
        "acceptedNames": names,
        "storedVersions": stored,
    }
