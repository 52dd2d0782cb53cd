"""The controllers a real cluster runs that the local API must imitate: garbage collection,
namespace deletion, CRD instance cleanup, each namespace's `default` ServiceAccount and its
`kube-root-ca.crt` ConfigMap.

Like kube-controller-manager they react to watch events, after the write that caused them has
been answered: an owner's deletion is visible at once and its dependents follow a moment later.
Owners are found by uid, so a cluster-scoped owner of namespaced dependents works as in
Kubernetes.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from .objects import CRD_CLEANUP, CRD_GROUP, FOREGROUND, ORPHAN, Objects
from .resources import ResourceInfo
from .store import Event, ResKey
from .workqueue import QueuedController

log = logging.getLogger(__name__)
NAMESPACES: ResKey = ("", "namespaces")
CRDS: ResKey = (CRD_GROUP, "customresourcedefinitions")
SERVICE_ACCOUNTS: ResKey = ("", "serviceaccounts")
CONFIGMAPS: ResKey = ("", "configmaps")
# kube-controller-manager's root-ca-cert-publisher puts the cluster's CA into every namespace
# under this name, and puts it back when it is deleted: no namespace is ever empty.
ROOT_CA = "kube-root-ca.crt"
ROOT_CA_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
    "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
    "guaranteed across distributions of Kubernetes clusters."
)


class Controllers(QueuedController):
    def __init__(self, objects: Objects, *, root_ca: str = "") -> None:
        super().__init__(objects)
        # The CA bundle published as kube-root-ca.crt; none over plain HTTP.
        self.root_ca = root_ca

    # Runs inside the writer's call: only queue work, never write from here.
    def _on_event(self, event: Event) -> None:
        meta = event.obj["metadata"]
        if event.type == "DELETED":
            self._queue.put_nowait(("owner-gone", meta["uid"]))
            if event.namespace:
                ns = self.store.get(NAMESPACES, "", event.namespace)
                if ns is not None and ns["metadata"].get("deletionTimestamp"):
                    self._queue.put_nowait(("namespace-emptied", event.namespace))
            if event.key != CRDS and event.key[0]:
                self._queue.put_nowait(("crd-instance-gone", event.key))
            for ref in meta.get("ownerReferences") or ():
                self._queue.put_nowait(("dependent-gone", ref.get("uid")))
            if event.key == CONFIGMAPS and meta["name"] == ROOT_CA:
                self._queue.put_nowait(("root-ca-gone", event.namespace))
            return
        if event.type == "ADDED" and event.key == NAMESPACES:
            self._queue.put_nowait(("namespace-added", meta["name"]))
        if meta.get("ownerReferences"):
            old_refs = (event.old or {}).get("metadata", {}).get("ownerReferences")
            if old_refs != meta["ownerReferences"]:
                self._queue.put_nowait(("check-owners", (event.key, event.namespace, meta["name"])))
        if meta.get("deletionTimestamp"):
            finalizers = meta.get("finalizers") or ()
            if FOREGROUND in finalizers:
                self._queue.put_nowait(("foreground", meta["uid"]))
            if ORPHAN in finalizers:
                self._queue.put_nowait(("orphan", meta["uid"]))
            if event.key == NAMESPACES:
                self._queue.put_nowait(("namespace", meta["name"]))
            if event.key == CRDS and CRD_CLEANUP in finalizers:
                self._queue.put_nowait(("crd", meta["name"]))

    # -- helpers ----------------------------------------------------------------------------

    def _info(self, key: ResKey) -> ResourceInfo | None:
        for info in self.objects.registry.all():
            if (info.group, info.plural) == key:
                return info
        return None

    def _delete(self, key: ResKey, obj: dict[str, Any], policy: str = "Background") -> None:
        info = self._info(key)
        if info is not None:
            current = self.store.get(
                key, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
            )
            if current is not None and current["metadata"]["uid"] == obj["metadata"]["uid"]:
                self.objects.delete(info, current, {"propagationPolicy": policy})

    def _owner_alive(self, ref: dict[str, Any], dependent_ns: str) -> bool:
        if not dependent_ns:
            # A cluster-scoped dependent naming a namespaced kind has an unresolvable owner
            # reference: Kubernetes never collects it.
            group = str(ref.get("apiVersion", "")).rpartition("/")[0]
            kind = self.objects.registry.by_kind(group, str(ref.get("kind", "")))
            if kind is not None and kind.namespaced:
                return True
        found = self.store.by_uid(ref.get("uid", ""))
        if found is None:
            return False
        _, owner = found
        owner_ns = owner["metadata"].get("namespace", "")
        # A namespaced owner must share the dependent's namespace; a cluster-scoped one may own
        # anything.
        return not owner_ns or owner_ns == dependent_ns

    def _collect(self, key: ResKey, obj: dict[str, Any]) -> None:
        """Delete a dependent whose owners are all gone, or drop the refs to the gone ones."""
        meta = obj["metadata"]
        refs = meta.get("ownerReferences") or []
        if not refs:
            return
        ns = meta.get("namespace", "")
        alive = [r for r in refs if self._owner_alive(r, ns)]
        if not alive:
            self._delete(key, obj)
        elif len(alive) != len(refs):
            self._set_refs(key, obj, alive)

    def _set_refs(self, key: ResKey, obj: dict[str, Any], refs: list[dict[str, Any]]) -> None:
        info = self._info(key)
        if info is None:
            return
        new = copy.deepcopy(obj)
        if refs:
            new["metadata"]["ownerReferences"] = refs
        else:
            new["metadata"].pop("ownerReferences", None)
        self.objects.update(info, obj, new, dry_run=False)

    # -- work items -------------------------------------------------------------------------

    def _owner_gone(self, uid: str) -> None:
        for key, dependent in self.store.dependents(uid):
            self._collect(key, dependent)

    def _check_owners(self, where: tuple[ResKey, str, str]) -> None:
        obj = self.store.get(*where)
        if obj is not None:
            self._collect(where[0], obj)

    def _dependent_gone(self, uid: str) -> None:
        found = self.store.by_uid(uid)
        if found is not None and FOREGROUND in (found[1]["metadata"].get("finalizers") or ()):
            self._foreground(uid)

    def _foreground(self, uid: str) -> None:
        found = self.store.by_uid(uid)
        if found is None:
            return
        key, owner = found
        if FOREGROUND not in (owner["metadata"].get("finalizers") or ()):
            return
        blocking = 0
        for dep_key, dependent in self.store.dependents(uid):
            refs = [
                r for r in dependent["metadata"].get("ownerReferences") or () if r.get("uid") == uid
            ]
            if any(r.get("blockOwnerDeletion") for r in refs):
                blocking += 1
            if not dependent["metadata"].get("deletionTimestamp"):
                has_own = bool(self.store.dependents(dependent["metadata"]["uid"]))
                self._delete(dep_key, dependent, "Foreground" if has_own else "Background")
        if blocking == 0:
            info = self._info(key)
            if info is not None:
                self.objects.remove_finalizer(info, owner, FOREGROUND)

    def _orphan(self, uid: str) -> None:
        found = self.store.by_uid(uid)
        if found is None:
            return
        key, owner = found
        if ORPHAN not in (owner["metadata"].get("finalizers") or ()):
            return
        for dep_key, dependent in self.store.dependents(uid):
            refs = [
                r for r in dependent["metadata"].get("ownerReferences") or () if r.get("uid") != uid
            ]
            self._set_refs(dep_key, dependent, refs)
        info = self._info(key)
        if info is not None:
            self.objects.remove_finalizer(info, owner, ORPHAN)

    def _namespace_added(self, name: str) -> None:
        """Every namespace gets a `default` ServiceAccount, as the serviceaccount controller
        gives it."""
        ns = self.store.get(NAMESPACES, "", name)
        if ns is None or ns["metadata"].get("deletionTimestamp"):
            return
        if self.store.get(SERVICE_ACCOUNTS, name, "default") is None:
            info = self._info(SERVICE_ACCOUNTS)
            assert info is not None
            account = self.objects.prepare_create(info, {"metadata": {"name": "default"}}, name)
            self.objects.create(info, account, dry_run=False)
        self._root_ca_gone(name)

    def _root_ca_gone(self, name: str) -> None:
        """Publish the cluster's CA in namespace `name`, unless it is there or going away."""
        ns = self.store.get(NAMESPACES, "", name)
        if not self.root_ca or ns is None or ns["metadata"].get("deletionTimestamp"):
            return
        if self.store.get(CONFIGMAPS, name, ROOT_CA) is not None:
            return
        info = self._info(CONFIGMAPS)
        assert info is not None
        body = {
            "metadata": {
                "name": ROOT_CA,
                "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION},
            },
            "data": {"ca.crt": self.root_ca},
        }
        self.objects.create(info, self.objects.prepare_create(info, body, name), dry_run=False)

    def _namespace(self, name: str) -> None:
        """A namespace is being deleted: delete what it holds, then finish if nothing is left."""
        ns = self.store.get(NAMESPACES, "", name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        for key in self.store.namespaced_keys(name):
            for obj in list(self.store.iter(key, name)):
                if not obj["metadata"].get("deletionTimestamp"):
                    self._delete(key, obj)
        self._namespace_emptied(name)

    def _namespace_emptied(self, name: str) -> None:
        """Something left a terminating namespace: remove the namespace once it is empty.

        Nothing new can be created in it, so there is no need to sweep it again."""
        ns = self.store.get(NAMESPACES, "", name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        if self.store.namespaced_keys(name):
            return  # finalizers still hold some content; its DELETED events bring us back
        info = self._info(NAMESPACES)
        assert info is not None
        spec_finalizers = (ns.get("spec") or {}).get("finalizers") or []
        if "kubernetes" in spec_finalizers:
            new = copy.deepcopy(ns)
            new["spec"]["finalizers"] = [f for f in spec_finalizers if f != "kubernetes"]
            ns = self.objects.update(info, ns, new, dry_run=False)
        if not (ns.get("spec") or {}).get("finalizers") and not ns["metadata"].get("finalizers"):
            self.store.remove(NAMESPACES, "", name)

    def _crd(self, name: str, sweep: bool = True) -> None:
        """A CRD is being deleted: delete its objects, then let it go once none is left."""
        crd = self.store.get(CRDS, "", name)
        if crd is None or not crd["metadata"].get("deletionTimestamp"):
            return
        spec = crd.get("spec") or {}
        key = (spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
        if sweep:
            for obj in list(self.store.iter(key)):
                if not obj["metadata"].get("deletionTimestamp"):
                    self._delete(key, obj)
        if self.store.count(key) == 0:
            info = self._info(CRDS)
            assert info is not None
            self.objects.remove_finalizer(info, crd, CRD_CLEANUP)

    def _crd_instance_gone(self, key: ResKey) -> None:
        for crd in list(self.store.iter(CRDS)):
            spec = crd.get("spec") or {}
            if (spec.get("group"), (spec.get("names") or {}).get("plural")) == key:
                if crd["metadata"].get("deletionTimestamp"):
                    self._crd(crd["metadata"]["name"], sweep=False)
                return
