"""Dynamic admission: calling mutating and validating webhooks as kube-apiserver does.

Lapse stamps requester and approver identities from the `userInfo` of AdmissionReview requests
(kopf's `@kopf.on.mutate` / `@kopf.on.validate` webhooks), so the local API server must really
send AdmissionReview v1 over HTTPS to the configured webhooks, apply their JSON patches, and
honour their matching rules, failure policies, timeouts and side effects exactly where a real
server would, including the words of its errors.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import ssl
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from celpy import celtypes

from . import cel, endpoints, errors, goerrors, patch
from .identity import UserInfo
from .selectors import label_selector_matches

GROUP = "admissionregistration.k8s.io"
REVIEW_VERSION = "admission.k8s.io/v1"
DEFAULT_TIMEOUT = 10
# Webhooks never see requests about the admission configurations themselves, so a broken
# webhook can always be removed.
EXEMPT_RESOURCES = {
    "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations",
    "validatingadmissionpolicies",
    "validatingadmissionpolicybindings",
    "mutatingadmissionpolicies",
    "mutatingadmissionpolicybindings",
}

Configurations = Callable[[], tuple[list[dict[str, Any]], list[dict[str, Any]]]]
NamespaceLabels = Callable[[str], "dict[str, str] | None"]


@dataclass
class AdmissionAttributes:
    """One write as admission sees it; the fields of an AdmissionReview `request`.

    `kind` is {group, version, kind}; `resource` is {group, version, resource}; `request_kind`
    and `request_resource` are the same for the version the client used (default: equal to
    `kind` and `resource`). `object` is None for DELETE, `old_object` None for CREATE. For a
    Namespace, `namespace` is the namespace's own name, as on a real server. Webhook warnings
    are appended to `warnings` (the server may return them as `Warning` headers).
    """

    kind: dict[str, str]
    resource: dict[str, str]
    operation: str  # CREATE UPDATE DELETE CONNECT
    user_info: UserInfo
    name: str = ""
    namespace: str = ""
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = None
    sub_resource: str = ""
    request_kind: dict[str, str] | None = None
    request_resource: dict[str, str] | None = None
    dry_run: bool = False
    options: dict[str, Any] | None = None
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    warnings: list[str] = field(default_factory=list)
    # Match conditions evaluated for this write, by (expression, version): several webhooks
    # of one product often share one, and each evaluation is a tree walk. Each result keeps
    # the objects it was evaluated on: a mutating webhook replaces the object, and a result
    # on the object it replaced is not reused.
    evaluated: dict[tuple[str, str | None], tuple[Any, Any, Any]] = field(
        default_factory=dict, repr=False, compare=False
    )


class _CallFailed(Exception):
    """A webhook could not be called or answered nonsense: failurePolicy decides."""


# -- matching -----------------------------------------------------------------------------


def _selector_empty(selector: Mapping[str, Any] | None) -> bool:
    return not selector or not (selector.get("matchLabels") or selector.get("matchExpressions"))


def _rule_matches(rule: Mapping[str, Any], req: AdmissionAttributes, version: str | None) -> bool:
    """One RuleWithOperations against the request; `version` None means the exact version."""
    resource = req.resource
    operations = rule.get("operations") or ()
    if "*" not in operations and req.operation not in operations:
        return False
    groups = rule.get("apiGroups") or ()
    if "*" not in groups and resource.get("group", "") not in groups:
        return False
    versions = rule.get("apiVersions") or ()
    if version is None and "*" not in versions and resource.get("version", "") not in versions:
        return False
    if version is not None and version not in versions:
        return False
    matched = False
    for entry in rule.get("resources") or ():
        res, _, sub = entry.partition("/")
        if (res == "*" or res == resource.get("resource")) and (
            sub == "*" or sub == req.sub_resource
        ):
            matched = True
            break
    if not matched:
        return False
    scope = rule.get("scope") or "*"
    is_namespace = resource.get("resource") == "namespaces" and not resource.get("group")
    if scope == "Namespaced":
        return not is_namespace and bool(req.namespace)
    if scope == "Cluster":
        return is_namespace or not req.namespace
    return True


def _matching_version(hook: Mapping[str, Any], req: AdmissionAttributes) -> str | bool | None:
    """False: no match; None: matches the request's version; a version: matches the same group
    and resource in that version (matchPolicy Equivalent)."""
    rules = hook.get("rules") or ()
    if any(_rule_matches(r, req, None) for r in rules):
        return None
    if (hook.get("matchPolicy") or "Equivalent") != "Equivalent":
        return False
    for rule in rules:
        for version in rule.get("apiVersions") or ():
            if version != "*" and _rule_matches(rule, req, version):
                return str(version)
    return False


def _labels(obj: Mapping[str, Any] | None) -> dict[str, str] | None:
    if obj is None:
        return None
    return dict((obj.get("metadata") or {}).get("labels") or {})


# -- the dispatcher -----------------------------------------------------------------------


class Admission:
    """Runs the mutating and validating webhooks the stored configurations name."""

    def __init__(
        self,
        configurations: Configurations,
        namespace_labels: NamespaceLabels,
        objects: endpoints.Objects | None = None,
    ) -> None:
        self._configurations = configurations
        self._namespace_labels = namespace_labels
        # Services and their endpoints, where `clientConfig.service` webhooks are found.
        self._objects = objects
        self._ssl: dict[tuple[str, bool], ssl.SSLContext] = {}
        # One session for every call, so connections to a webhook stay open between calls as
        # the real API server keeps them: a TLS handshake per admission was a fifth of the
        # server's CPU under load.
        self._session: aiohttp.ClientSession | None = None

    # public interface

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def mutate(self, req: AdmissionAttributes) -> dict[str, Any] | None:
        """The object after every matching mutating webhook (configurations in name order, the
        webhooks of each in order), with their JSON patches applied; `req.object` is updated
        too. A webhook with `reinvocationPolicy: IfNeeded` is called once more when a later one
        changed the object."""
        mutating, _ = self._configurations()
        hooks = self._hooks(mutating)
        # Each webhook with the object as it left it, to see whether a later one changed it.
        called: list[tuple[dict[str, Any], str | None, Any]] = []
        for hook in hooks:
            version = self._matches(hook, req)
            if version is False:
                continue
            await self._mutate_once(hook, req, version)
            called.append((hook, version, copy.deepcopy(req.object)))
        for hook, version, left in called:
            if hook.get("reinvocationPolicy") == "IfNeeded" and req.object != left:
                await self._mutate_once(hook, req, version)
        return req.object

    async def validate(self, req: AdmissionAttributes) -> None:
        """Every matching validating webhook, called in parallel; the first refusal (in
        configuration order) is raised."""
        _, validating = self._configurations()
        calls = []
        for hook in self._hooks(validating):
            version = self._matches(hook, req)
            if version is not False:
                calls.append(self._call_checked(hook, req, version, mutating=False))
        if not calls:
            return
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    # matching

    @staticmethod
    def _hooks(configurations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ordered = sorted(configurations, key=lambda c: (c.get("metadata") or {}).get("name", ""))
        return [hook for conf in ordered for hook in conf.get("webhooks") or ()]

    def _matches(self, hook: Mapping[str, Any], req: AdmissionAttributes) -> str | bool | None:
        if req.resource.get("group") == GROUP and req.resource.get("resource") in EXEMPT_RESOURCES:
            return False
        version = _matching_version(hook, req)
        if version is False:
            return False
        if not self._namespace_matches(hook.get("namespaceSelector"), req):
            return False
        selector = hook.get("objectSelector")
        if not _selector_empty(selector):
            new, old = _labels(req.object), _labels(req.old_object)
            if not (
                (new is not None and label_selector_matches(selector, new))
                or (old is not None and label_selector_matches(selector, old))
            ):
                return False
        if not self._conditions_match(hook, req, version):
            return False
        return version

    @staticmethod
    def _conditions_match(
        hook: Mapping[str, Any], req: AdmissionAttributes, version: str | None
    ) -> bool:
        """`matchConditions`, as kube-apiserver's matcher: any condition false skips the
        webhook; otherwise an error skips it under `failurePolicy: Ignore` and refuses the
        request (403) under `Fail`; all true calls it."""
        conditions = hook.get("matchConditions") or ()
        if not conditions:
            return True
        activation: dict[str, Any] | None = None
        failed: list[str] = []
        for condition in conditions:
            expression = str(condition.get("expression") or "")
            seen = req.evaluated.get((expression, version))
            if seen is not None and seen[0] is req.object and seen[1] is req.old_object:
                result = seen[2]
            else:
                if activation is None:
                    review = _review(req, version)["request"]
                    objects = {"object": review.pop("object"), "oldObject": review.pop("oldObject")}
                    activation = {k: cel.to_cel(v, None) for k, v in objects.items()}
                    activation["request"] = cel.to_cel(review, None)
                try:
                    result = cel.evaluate(expression, activation)
                except (cel.CompileError, cel.EvalError) as error:
                    result = error
                req.evaluated[(expression, version)] = (req.object, req.old_object, result)
            if isinstance(result, Exception):
                failed.append(f"expression '{expression}' resulted in error: {result}")
                continue
            if not isinstance(result, celtypes.BoolType):
                failed.append(f"expression '{expression}' did not evaluate to a bool")
            elif not result:
                return False
        if not failed:
            return True
        if (hook.get("failurePolicy") or "Fail") == "Ignore":
            return False
        raise errors.forbidden_object(
            str(req.resource.get("resource") or ""),
            str(req.resource.get("group") or ""),
            req.name,
            "; ".join(failed),
        )

    def _namespace_matches(
        self, selector: Mapping[str, Any] | None, req: AdmissionAttributes
    ) -> bool:
        is_namespace = req.resource.get("resource") == "namespaces" and not req.resource.get(
            "group"
        )
        namespace = req.namespace or (req.name if is_namespace else "")
        if not namespace and not is_namespace:
            # Cluster-scoped objects other than namespaces are never exempted.
            return True
        if _selector_empty(selector):
            return True
        if is_namespace and not req.sub_resource and req.operation in ("CREATE", "UPDATE"):
            labels = _labels(req.object) or {}
        else:
            found = self._namespace_labels(namespace)
            if found is None:
                raise errors.not_found("namespaces", "", namespace)
            labels = found
        return label_selector_matches(selector, labels)

    # calling

    async def _mutate_once(
        self, hook: dict[str, Any], req: AdmissionAttributes, version: str | None
    ) -> None:
        response = await self._call_checked(hook, req, version, mutating=True)
        if response is None or not response.get("patch"):
            return
        try:
            operations = json.loads(base64.b64decode(response["patch"]))
        except (binascii.Error, ValueError) as exc:
            self._fail(hook, f"failed to decode patch: {exc}")
            return
        try:
            patched = patch.json_patch(_in_version(req.object, version), operations)
        except errors.ApiError as exc:
            raise errors.internal(
                f"admission webhook {json.dumps(hook.get('name', ''))} returned an invalid "
                f"patch: {exc.message}"
            ) from exc
        if version is not None and isinstance(patched, dict) and req.object is not None:
            patched["apiVersion"] = req.object.get("apiVersion", patched.get("apiVersion"))
        req.object = patched

    async def _call_checked(
        self, hook: dict[str, Any], req: AdmissionAttributes, version: str | None, mutating: bool
    ) -> dict[str, Any] | None:
        """One webhook call with its side-effect, failure-policy and denial handling: the
        response when allowed, None when the failure policy ignored a failure."""
        name = hook.get("name", "")
        if req.dry_run and hook.get("sideEffects") not in ("None", "NoneOnDryRun"):
            raise errors.bad_request(
                f"admission webhook {json.dumps(name)} does not support dry run"
            )
        try:
            response = await self._call(hook, req, version, mutating)
        except _CallFailed as exc:
            if (hook.get("failurePolicy") or "Fail") == "Ignore":
                return None
            raise errors.internal(f"failed calling webhook {json.dumps(name)}: {exc}") from exc
        req.warnings.extend(str(w) for w in response.get("warnings") or ())
        if not response.get("allowed"):
            raise _denied(name, response.get("status") or {})
        return response

    def _fail(self, hook: Mapping[str, Any], why: str) -> None:
        if (hook.get("failurePolicy") or "Fail") != "Ignore":
            raise errors.internal(
                f"failed calling webhook {json.dumps(hook.get('name', ''))}: {why}"
            )

    async def _call(
        self, hook: Mapping[str, Any], req: AdmissionAttributes, version: str | None, mutating: bool
    ) -> dict[str, Any]:
        versions = hook.get("admissionReviewVersions") or ["v1"]
        if "v1" not in versions:
            raise _CallFailed(
                f"webhook does not accept v1 AdmissionReview (accepts {versions}); "
                "only v1 is sent by this server"
            )
        timeout = hook.get("timeoutSeconds") or DEFAULT_TIMEOUT
        client = hook.get("clientConfig") or {}
        if client.get("url"):
            target = _Target.of_url(str(client["url"]), timeout)
        elif client.get("service"):
            target = self._service_target(client["service"], timeout)
        else:
            raise _CallFailed("failed to call webhook: clientConfig has neither url nor service")
        body = _review(req, version)
        ca_bundle = client.get("caBundle") or ""
        context = self._ssl_context(ca_bundle) if target.secure else None
        try:
            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession()
            async with self._session.post(
                target.dialled,
                json=body,
                ssl=context if context is not None else False,
                server_hostname=target.server_name,
                headers={"Host": target.host_header} if target.host_header else None,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                text = await resp.text()
                status = resp.status
        except TimeoutError as exc:
            raise _CallFailed(
                f'failed to call webhook: Post "{target.shown}": context deadline exceeded'
            ) from exc
        except aiohttp.ClientError as exc:
            verify_only = self._ssl_context(ca_bundle, check_hostname=False)
            why = await goerrors.describe(exc, target.name, verify_only)
            raise _CallFailed(f'failed to call webhook: Post "{target.shown}": {why}') from exc
        except ssl.SSLError as exc:
            raise _CallFailed(f'failed to call webhook: Post "{target.shown}": tls: {exc}') from exc
        if status < 200 or status >= 300:
            raise _CallFailed(
                f"received invalid webhook response: the server responded with the status code "
                f"{status} but did not return more information"
            )
        try:
            review = json.loads(text)
        except ValueError as exc:
            raise _CallFailed(f"received invalid webhook response: {exc}") from exc
        return _check_response(review, body["request"]["uid"], mutating)

    def _service_target(self, service: Mapping[str, Any], timeout: int) -> _Target:
        """kube-apiserver's call of a Service (aggregator routing): to one of its ready
        endpoints, the URL, Host and certificate naming `<name>.<namespace>.svc`; never
        through DNS, which the API server's host does not have for cluster names."""
        name, namespace = str(service.get("name", "")), str(service.get("namespace", ""))
        port = int(service.get("port") or 443)
        path = str(service.get("path") or "/")
        server_name = f"{name}.{namespace}.svc"
        shown = f"https://{server_name}:{port}{path}?timeout={timeout}s"
        try:
            address, target_port = endpoints.resolve(self._objects, namespace, name, port)
        except endpoints.Unroutable as exc:
            raise _CallFailed(f'failed to call webhook: Post "{shown}": {exc}') from exc
        host = f"[{address}]" if ":" in address else address
        return _Target(
            shown=shown,
            dialled=f"https://{host}:{target_port}{path}?timeout={timeout}s",
            name=server_name,
            server_name=server_name,
            host_header=f"{server_name}:{port}",
        )

    def _ssl_context(self, ca_bundle: str, check_hostname: bool = True) -> ssl.SSLContext:
        key = (ca_bundle, check_hostname)
        context = self._ssl.get(key)
        if context is None:
            if ca_bundle:
                try:
                    pem = base64.b64decode(ca_bundle).decode()
                except (binascii.Error, UnicodeDecodeError) as exc:
                    raise _CallFailed(f"failed to call webhook: invalid caBundle: {exc}") from exc
                context = ssl.create_default_context(cadata=pem)
            else:
                context = ssl.create_default_context()
            context.check_hostname = check_hostname
            self._ssl[key] = context
        return context


@dataclass(frozen=True)
class _Target:
    """Where one webhook call goes. `shown` is the URL kube-apiserver prints, `dialled` what
    is posted to, `name` the name the serving certificate must carry; `server_name` and
    `host_header` override what `dialled` implies (a Service's endpoint is dialled by address
    but verified and addressed by the Service's name)."""

    shown: str
    dialled: str
    name: str
    server_name: str | None = None
    host_header: str | None = None

    @property
    def secure(self) -> bool:
        return self.dialled.startswith("https:")

    @staticmethod
    def of_url(url: str, timeout: int) -> _Target:
        # The API server resolves a URL's host with its own resolver, never cluster DNS.
        parsed = urllib.parse.urlsplit(url)
        query = f"{parsed.query}&timeout={timeout}s" if parsed.query else f"timeout={timeout}s"
        target = urllib.parse.urlunsplit(parsed._replace(query=query))
        return _Target(shown=target, dialled=target, name=parsed.hostname or "")


def _in_version(obj: dict[str, Any] | None, version: str | None) -> dict[str, Any] | None:
    """The object as the webhook's matched version sees it (a version rename: the local server
    serves every version of a resource from the same storage, as CRDs without conversion)."""
    if obj is None or version is None:
        return obj
    converted = copy.deepcopy(obj)
    group = str(converted.get("apiVersion", "")).rpartition("/")[0]
    converted["apiVersion"] = f"{group}/{version}" if group else version
    return converted


def _review(req: AdmissionAttributes, version: str | None) -> dict[str, Any]:
    kind, resource = dict(req.kind), dict(req.resource)
    if version is not None:
        kind["version"] = version
        resource["version"] = version
    request: dict[str, Any] = {
        "uid": req.uid,
        "kind": kind,
        "resource": resource,
        "requestKind": req.request_kind or dict(req.kind),
        "requestResource": req.request_resource or dict(req.resource),
        "name": req.name,
        "namespace": req.namespace,
        "operation": req.operation,
        "userInfo": req.user_info.to_review(),
        "object": _in_version(req.object, version),
        "oldObject": _in_version(req.old_object, version),
        "dryRun": req.dry_run,
        "options": req.options,
    }
    if req.sub_resource:
        request["subResource"] = req.sub_resource
        request["requestSubResource"] = req.sub_resource
    if not req.name:
        request.pop("name")
    if not req.namespace:
        request.pop("namespace")
    return {"apiVersion": REVIEW_VERSION, "kind": "AdmissionReview", "request": request}


def _check_response(review: Any, uid: str, mutating: bool) -> dict[str, Any]:
    if not isinstance(review, dict):
        raise _CallFailed("received invalid webhook response: not an AdmissionReview object")
    if review.get("apiVersion") != REVIEW_VERSION or review.get("kind") != "AdmissionReview":
        raise _CallFailed(
            f"received invalid webhook response: expected webhook response of "
            f"{REVIEW_VERSION}, Kind=AdmissionReview, got {review.get('apiVersion')}, "
            f"Kind={review.get('kind')}"
        )
    response = review.get("response")
    if not isinstance(response, dict):
        raise _CallFailed("received invalid webhook response: response is nil")
    if response.get("uid") != uid:
        raise _CallFailed(
            f"received invalid webhook response: expected response.uid={json.dumps(uid)}, "
            f"got {json.dumps(response.get('uid', ''))}"
        )
    has_patch, has_type = bool(response.get("patch")), bool(response.get("patchType"))
    if has_patch and not has_type:
        raise _CallFailed(
            "received invalid webhook response: webhook returned response.patch but not "
            "response.patchType"
        )
    if has_type and not has_patch:
        raise _CallFailed(
            "received invalid webhook response: webhook returned response.patchType but not "
            "response.patch"
        )
    if has_type and response.get("patchType") != "JSONPatch":
        raise _CallFailed(
            "received invalid webhook response: webhook returned invalid "
            f"response.patchType of {json.dumps(response.get('patchType'))}"
        )
    if has_patch and not mutating:
        raise _CallFailed(
            "received invalid webhook response: validating webhook may not return response.patch"
        )
    return response


def _denied(name: str, status: Mapping[str, Any]) -> errors.ApiError:
    """`webhookerrors.ToStatusErr`: the webhook's status, its message prefixed."""
    code = status.get("code") or 400
    if code < 400:
        code = 400
    denied_by = f"admission webhook {json.dumps(name)} denied the request"
    if status.get("message"):
        message = f"{denied_by}: {status['message']}"
    elif status.get("reason"):
        message = f"{denied_by}: {status['reason']}"
    else:
        message = f"{denied_by} without explanation"
    return errors.ApiError(
        int(code), str(status.get("reason") or ""), message, dict(status.get("details") or {})
    )
