"""TokenRequest: `POST .../serviceaccounts/NAME/token`, as kube-apiserver's token REST does it.

The request is defaulted (`expirationSeconds` 3600) before mutating admission, then checked in
the real server's order: the body's name and namespace against the URL, the ServiceAccount
(404), the audiences defaulted to the API server's, static validation (422, naming no object),
validating admission (the server runs it between `check` and `issue`), then the bound object:
a Pod, Secret or Node of the core group that must exist, run as the same ServiceAccount (a
Pod) and carry the uid given. The answer is the request with `status.token` and
`status.expirationTimestamp`.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from . import errors
from .objects import now
from .store import Store
from .tokens import (
    API_AUDIENCES,
    EXTENDED_SECONDS,
    NODES,
    PODS,
    SECRETS,
    SERVICE_ACCOUNTS,
    WARN_ONLY_SECONDS,
    Issuer,
    Ref,
)

GROUP = "authentication.k8s.io"
KIND = "TokenRequest"
DEFAULT_SECONDS = 3600
# ValidateTokenRequest: at least ten minutes, at most 2^32 seconds.
MIN_SECONDS = 600
MAX_SECONDS = 1 << 32
BOUND_KINDS = {"Pod": ("pods", PODS), "Secret": ("secrets", SECRETS), "Node": ("nodes", NODES)}


def initial(namespace: str, name: str, body: Any) -> dict[str, Any]:
    """The TokenRequest as decoding leaves it for admission: `expirationSeconds` defaulted."""
    if body is not None and not isinstance(body, dict):
        raise errors.bad_request("the body of the request must be a JSON object")
    review = copy.deepcopy(body or {})
    review["apiVersion"] = f"{GROUP}/v1"
    review["kind"] = KIND
    review.setdefault("metadata", {})
    spec = review.get("spec")
    if not isinstance(spec, dict):
        spec = review["spec"] = {}
    if spec.get("expirationSeconds") is None:
        spec["expirationSeconds"] = DEFAULT_SECONDS
    review.pop("status", None)
    return review


def _invalid(name: str, field: str, message: str) -> errors.ApiError:
    return errors.invalid(KIND, GROUP, name, [errors.Cause(field, message)])


class TokenRequests:
    def __init__(self, store: Store, issuer: Issuer) -> None:
        self.store = store
        self.issuer = issuer

    def check(
        self, namespace: str, name: str, review: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the completed request, its ServiceAccount), or the error the token REST gives
        before validating admission."""
        meta = review.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            raise _invalid(
                name,
                "metadata.name",
                f'Invalid value: "{meta["name"]}": must match the service account name if '
                "specified",
            )
        if meta.get("namespace") and meta["namespace"] != namespace:
            raise _invalid(
                name,
                "metadata.namespace",
                f'Invalid value: "{meta["namespace"]}": must match the service account '
                "namespace if specified",
            )
        account = self.store.get(SERVICE_ACCOUNTS, namespace, name)
        if account is None:
            raise errors.not_found("serviceaccounts", "", name)
        spec = review["spec"]
        if not spec.get("audiences"):
            spec["audiences"] = list(API_AUDIENCES)
        review["metadata"] = {
            "name": name,
            "namespace": namespace,
            # What a real server answers: the ServiceAccount's uid, the request's own time.
            "uid": account["metadata"]["uid"],
            "creationTimestamp": now(),
        }
        seconds = spec.get("expirationSeconds")
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            raise errors.bad_request("spec.expirationSeconds must be an integer")
        if seconds < MIN_SECONDS:
            raise _invalid(
                "",
                "spec.expirationSeconds",
                f"Invalid value: {seconds}: may not specify a duration less than 10 minutes",
            )
        if seconds > MAX_SECONDS:
            raise _invalid(
                "",
                "spec.expirationSeconds",
                f"Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds",
            )
        return review, account

    def issue(self, review: dict[str, Any], account: dict[str, Any]) -> dict[str, Any]:
        """The answer: the bound object checked, the token signed."""
        namespace, name = account["metadata"]["namespace"], account["metadata"]["name"]
        spec = review["spec"]
        ref = spec.get("boundObjectRef")
        bound: dict[str, Ref] = {}
        if ref:
            bound = self._bound(namespace, name, ref)
        seconds = int(spec["expirationSeconds"])
        review["spec"] = {
            "audiences": list(spec["audiences"]),
            "expirationSeconds": seconds,
            "boundObjectRef": (
                {k: ref[k] for k in ("kind", "apiVersion", "name", "uid") if ref.get(k)}
                if ref
                else None
            ),
        }
        lifetime, warn_after = seconds, 0
        if (
            "pod" in bound
            and seconds == WARN_ONLY_SECONDS
            and set(spec["audiences"]) <= set(API_AUDIENCES)
        ):
            lifetime, warn_after = EXTENDED_SECONDS, seconds
        issued = self.issuer.now()
        token = self.issuer.bound_token(
            account,
            list(spec["audiences"]),
            lifetime,
            issued=issued,
            pod=bound.get("pod"),
            secret=bound.get("secret"),
            node=bound.get("node"),
            warn_after=warn_after,
        )
        expires = datetime.fromtimestamp(int(issued) + seconds, UTC)
        review["status"] = {
            "token": token,
            "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return review

    def _bound(self, namespace: str, account: str, ref: dict[str, Any]) -> dict[str, Ref]:
        api_version = str(ref.get("apiVersion") or "")
        group, _, version = api_version.rpartition("/")
        kind = str(ref.get("kind") or "")
        ref_name = str(ref.get("name") or "")
        if group or kind not in BOUND_KINDS:
            raise errors.bad_request(
                f"cannot bind token to object of type {group}/{version}, Kind={kind}"
            )
        plural, key = BOUND_KINDS[kind]
        scope = "" if kind == "Node" else namespace
        obj = self.store.get(key, scope, ref_name)
        if obj is None:
            raise errors.not_found(plural, "", ref_name)
        found: dict[str, Ref] = {kind.lower(): Ref(ref_name, obj["metadata"]["uid"])}
        if kind == "Pod":
            pod_spec = obj.get("spec") or {}
            if pod_spec.get("serviceAccountName") != account:
                raise errors.bad_request(
                    f'cannot bind token for serviceaccount "{account}" to pod running with '
                    "different serviceaccount name."
                )
            if pod_spec.get("nodeName"):
                # A pod on a node: the token names the node (no Node objects are served, so
                # it has no uid here).
                node = self.store.get(NODES, "", pod_spec["nodeName"])
                uid = node["metadata"]["uid"] if node is not None else ""
                found["node"] = Ref(pod_spec["nodeName"], uid)
        if ref.get("uid") and ref["uid"] != obj["metadata"]["uid"]:
            raise errors.ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind} "{ref_name}": the UID in the bound '
                f"object reference ({ref['uid']}) does not match the UID in record. The object "
                "might have been deleted and then recreated",
                {"name": ref_name, "kind": kind},
            )
        return found
