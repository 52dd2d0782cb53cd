"""kube-controller-manager's tokens controller, for legacy service account token Secrets.

A Secret of type `kubernetes.io/service-account-token` names its ServiceAccount in the
`kubernetes.io/service-account.name` annotation (validation refuses one without it). The
controller:

- fills in what is missing: `data.token` (a legacy token, see tokens.py; a token already there
  is kept), `data.ca.crt` (the cluster's CA, replaced when it differs), `data.namespace`, and the
  `kubernetes.io/service-account.uid` annotation;
- deletes the Secret when its ServiceAccount does not exist or has another uid than the
  annotation names, and every token Secret of a ServiceAccount that is deleted.

The API server marks a legacy token's Secret with `kubernetes.io/legacy-token-last-used: DATE`
(UTC, at most one write a day) when the token authenticates; `used` queues that write here.

Like the other controllers (gc.py) it reacts to store events after the write that caused them,
and its writes pass neither admission nor authorization.
"""

from __future__ import annotations

import base64
import copy
import logging
from datetime import UTC, datetime
from typing import Any

from .objects import Objects
from .resources import ResourceInfo
from .store import Event
from .tokens import SECRETS, SERVICE_ACCOUNTS, Issuer, LegacyUse
from .workqueue import QueuedController

log = logging.getLogger(__name__)

TOKEN_TYPE = "kubernetes.io/service-account-token"
NAME_ANNOTATION = "kubernetes.io/service-account.name"
UID_ANNOTATION = "kubernetes.io/service-account.uid"
LAST_USED_LABEL = "kubernetes.io/legacy-token-last-used"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class TokensController(QueuedController):
    name = "tokens controller"

    def __init__(self, objects: Objects, issuer: Issuer, root_ca: str = "") -> None:
        super().__init__(objects)
        self.issuer = issuer
        self.root_ca = root_ca

    def used(self, use: LegacyUse) -> None:
        """A legacy token of this Secret authenticated a request just now."""
        self._queue.put_nowait(("used", use))

    # Runs inside the writer's call: only queue work, never write from here.
    def _on_event(self, event: Event) -> None:
        meta = event.obj["metadata"]
        if event.key == SERVICE_ACCOUNTS and event.type == "DELETED":
            self._queue.put_nowait(("account-gone", (event.namespace, meta["name"], meta["uid"])))
        elif (
            event.key == SECRETS
            and event.type != "DELETED"
            and event.obj.get("type") == TOKEN_TYPE
            and not meta.get("deletionTimestamp")
        ):
            self._queue.put_nowait(("secret", (event.namespace, meta["name"])))

    def _handle(self, kind: str, arg: Any) -> None:
        getattr(self, "_" + kind.replace("-", "_"))(*_args(arg))

    def _info(self, plural: str) -> ResourceInfo:
        info = self.objects.registry.lookup("", "v1", plural)
        assert info is not None
        return info

    def _delete(self, secret: dict[str, Any]) -> None:
        self.objects.delete(self._info("secrets"), secret, {"propagationPolicy": "Background"})

    def _secret(self, namespace: str, name: str) -> None:
        secret = self.store.get(SECRETS, namespace, name)
        if secret is None or secret.get("type") != TOKEN_TYPE:
            return
        meta = secret["metadata"]
        if meta.get("deletionTimestamp"):
            return
        annotations = meta.get("annotations") or {}
        account = self.store.get(SERVICE_ACCOUNTS, namespace, annotations.get(NAME_ANNOTATION, ""))
        wanted_uid = annotations.get(UID_ANNOTATION)
        if account is None or (wanted_uid and wanted_uid != account["metadata"]["uid"]):
            self._delete(secret)
            return
        data = dict(secret.get("data") or {})
        if self.root_ca:
            data["ca.crt"] = _b64(self.root_ca)
        if not data.get("namespace"):
            data["namespace"] = _b64(namespace)
        if not data.get("token"):
            data["token"] = _b64(self.issuer.legacy_token(account, name))
        new = copy.deepcopy(secret)
        new["data"] = data
        new["metadata"]["annotations"] = {
            **annotations,
            NAME_ANNOTATION: account["metadata"]["name"],
            UID_ANNOTATION: account["metadata"]["uid"],
        }
        if new != secret:
            self.objects.update(self._info("secrets"), secret, new, dry_run=False)

    def _account_gone(self, namespace: str, name: str, uid: str) -> None:
        for secret in list(self.store.iter(SECRETS, namespace)):
            annotations = secret["metadata"].get("annotations") or {}
            if (
                secret.get("type") == TOKEN_TYPE
                and annotations.get(NAME_ANNOTATION) == name
                and annotations.get(UID_ANNOTATION, uid) == uid
                and not secret["metadata"].get("deletionTimestamp")
            ):
                self._delete(secret)

    def _used(self, use: LegacyUse) -> None:
        secret = self.store.get(SECRETS, use.namespace, use.secret)
        if secret is None:
            return
        today = datetime.now(UTC).strftime("%Y-%m-%d")
        labels = secret["metadata"].get("labels") or {}
        if labels.get(LAST_USED_LABEL) == today:
            return
        new = copy.deepcopy(secret)
        new["metadata"]["labels"] = {**labels, LAST_USED_LABEL: today}
        self.objects.update(self._info("secrets"), secret, new, dry_run=False)


def _args(arg: Any) -> tuple[Any, ...]:
    return arg if isinstance(arg, tuple) else (arg,)
