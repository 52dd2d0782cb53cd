"""The Kubernetes API as the user's kubectl sees it: same kubeconfig, context, namespace, identity.

A plugin that talked to another cluster, or as another user, than the `kubectl` it runs under
would be a trap; so `--kubeconfig`, `--context`, `-n`, `--as` and `--as-group` mean here what they
mean to kubectl, and every API failure becomes one sentence (`CliError`) instead of a traceback.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import kubernetes.client
import kubernetes.config
import urllib3
from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from kubernetes.client.rest import RESTClientObject
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import KUBE_CONFIG_DEFAULT_LOCATION, KubeConfigMerger

from lapse.cli.errors import AlreadyExists, CliError, ExitCode, NotFound
from lapse.core.kinds import GROUP, VERSION, Kind
from lapse.core.models import UserInfo

MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Connection:
    """kubectl's connection flags, as the user gave them."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    as_user: str | None = None
    as_groups: tuple[str, ...] = ()
    request_timeout: float = 30.0


class _ImpersonatingRESTClient(RESTClientObject):
    """Sends `Impersonate-Group` once per group.

    The client's default headers are a plain dict, which can hold a header only once; the API
    server reads each repeated `Impersonate-Group` header as one group, and a comma-joined value
    as a single group with a comma in its name.
    """

    def __init__(self, configuration: Any, user: str, groups: Sequence[str]) -> None:
        super().__init__(configuration)
        self._user = user
        self._groups = tuple(groups)

    def request(self, method: str, url: str, headers: Any = None, *args: Any, **kwargs: Any) -> Any:
        combined = urllib3.HTTPHeaderDict(dict(headers or {}))
        combined["Impersonate-User"] = self._user
        for group in self._groups:
            combined.add("Impersonate-Group", group)
        return super().request(method, url, combined, *args, **kwargs)  # type: ignore[no-untyped-call]


def _status_message(error: ApiException) -> str:
    """The API's own sentence from a Status body, verbatim (admission refusals included)."""
    try:
        status = json.loads(error.body or "")
    except (TypeError, ValueError):
        status = None
    if isinstance(status, dict) and status.get("message"):
        return str(status["message"])
    reason = (error.reason or "").strip()
    return f"the Kubernetes API answered {error.status} {reason}".rstrip()


def kubeconfig_contexts(path: str | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The kubeconfig's contexts (`$KUBECONFIG`'s files merged, as kubectl does) and the
    current one, or None when it names none: a kubeconfig made for `--context` alone is
    valid (the client library's own listing refuses it)."""
    merged = KubeConfigMerger(path or KUBE_CONFIG_DEFAULT_LOCATION)  # type: ignore[no-untyped-call]
    if merged.config is None:
        raise ConfigException("no configuration found")
    config = merged.config.value
    # Entries merged from several files come wrapped (ConfigNode); a single file's are dicts.
    entries = [getattr(c, "value", c) for c in config.get("contexts") or []]
    contexts = [dict(c) for c in entries if isinstance(c, dict)]
    current = config.get("current-context")
    active = next((c for c in contexts if c.get("name") == current), None)
    return contexts, active


class Kube:
    """The few API calls `kubectl lapse` makes, with errors turned into `CliError`."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        path = connection.kubeconfig or None
        try:
            contexts, active = kubeconfig_contexts(path)
            if connection.context is None and active is None:
                raise CliError(
                    "the kubeconfig names no current context: pass --context (or "
                    "--contexts/--all-contexts)",
                    ExitCode.USAGE,
                )
            self.api = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=path, context=connection.context, persist_config=False
            )
        except ConfigException as error:
            raise CliError(f"cannot load kubeconfig: {error}") from None
        except OSError as error:
            raise CliError(f"cannot read kubeconfig: {error}") from None
        chosen = active
        if connection.context:
            chosen = next((c for c in contexts if c.get("name") == connection.context), active)
        from_context = ((chosen or {}).get("context") or {}).get("namespace")
        self.namespace: str = connection.namespace or from_context or "default"
        # The kubeconfig's name for the cluster: what an access review says its rows are of.
        self.cluster: str | None = ((chosen or {}).get("context") or {}).get("cluster")
        if connection.as_groups and not connection.as_user:
            raise CliError(
                "--as-group needs --as: the API server impersonates a user, not groups",
                ExitCode.USAGE,
            )
        # As kubectl (client-go) does: a read refused with Retry-After (API priority and
        # fairness, or a restarted API server whose storage is still initializing) goes
        # again after that wait, up to ten times.
        self.api.configuration.client_go_retries = True
        if connection.as_user:
            self.api.rest_client = _ImpersonatingRESTClient(
                self.api.configuration, connection.as_user, connection.as_groups
            )
        # Any: the generated client types every custom object as `object`; these are dicts.
        self.custom: Any = kubernetes.client.CustomObjectsApi(self.api)

    @property
    def server(self) -> str:
        return str(self.api.configuration.host)

    def _fail(self, error: Exception, resource: Kind, name: str | None, ns: str | None) -> NoReturn:
        if isinstance(error, ApiException):
            if error.status == 404 and name is not None:
                raise NotFound(resource.describe(name, ns, "not found")) from None
            if error.status == 409 and name is not None:
                raise AlreadyExists(_status_message(error)) from None
            if error.status == 404:
                raise CliError(
                    f"the server does not serve {resource.plural}.{GROUP}/{VERSION}; "
                    "is Lapse installed in this cluster?"
                ) from None
            raise CliError(_status_message(error)) from None
        if isinstance(error, urllib3.exceptions.HTTPError):
            cause = getattr(error, "reason", None) or error
            raise CliError(f"cannot reach the Kubernetes API at {self.server}: {cause}") from None
        raise error

    def get(self, resource: Kind, name: str, namespace: str | None = None) -> dict[str, Any]:
        ns = namespace or self.namespace
        try:
            if resource.namespaced:
                found = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, ns, resource.plural, name,
                    _request_timeout=self.connection.request_timeout,
                )  # fmt: skip
            else:
                found = self.custom.get_cluster_custom_object(
                    GROUP, VERSION, resource.plural, name,
                    _request_timeout=self.connection.request_timeout,
                )  # fmt: skip
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            self._fail(error, resource, name, ns)
        return dict(found)

    def get_optional(self, resource: Kind, name: str) -> dict[str, Any] | None:
        """The object, or None when it is missing or the user may not read it."""
        try:
            return self.get(resource, name)
        except CliError:
            return None

    def list(self, resource: Kind, namespace: str | None) -> list[dict[str, Any]]:
        """Objects of one kind; `namespace=None` lists across all namespaces."""
        try:
            if resource.namespaced and namespace is not None:
                found = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, resource.plural,
                    _request_timeout=self.connection.request_timeout,
                )  # fmt: skip
            else:
                found = self.custom.list_cluster_custom_object(
                    GROUP, VERSION, resource.plural,
                    _request_timeout=self.connection.request_timeout,
                )  # fmt: skip
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            self._fail(error, resource, None, namespace)
        return [dict(item) for item in found.get("items") or []]

    def create(self, resource: Kind, body: dict[str, Any]) -> dict[str, Any]:
        metadata = body.get("metadata") or {}
        name = metadata.get("name") or f"{metadata.get('generateName', '')}…"
        ns = metadata.get("namespace") or self.namespace
        try:
            if resource.namespaced:
                created = self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, ns, resource.plural, body,
                    _request_timeout=self.connection.request_timeout,
                )  # fmt: skip
            else:
                created = self.custom.create_cluster_custom_object(
                    GROUP, VERSION, resource.plural, body,
                    _request_timeout=self.connection.request_timeout,
                )  # fmt: skip
        except ApiException as error:
            if error.status == 404:
                # The namespace (or the resource type) is missing; the API's sentence says which.
                raise CliError(_status_message(error)) from None
            self._fail(error, resource, name, ns)
        except urllib3.exceptions.HTTPError as error:
            self._fail(error, resource, name, ns)
        return dict(created)

    def annotate(
        self, resource: Kind, name: str, annotations: dict[str, str], namespace: str | None
    ) -> dict[str, Any]:
        """A JSON merge patch on metadata.annotations, as `kubectl annotate --overwrite` sends."""
        ns = namespace or self.namespace
        patch = {"metadata": {"annotations": annotations}}
        try:
            if resource.namespaced:
                patched = self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, ns, resource.plural, name, patch,
                    _content_type=MERGE_PATCH,
                    _request_timeout=self.connection.request_timeout,
                )  # fmt: skip
            else:
                patched = self.custom.patch_cluster_custom_object(
                    GROUP, VERSION, resource.plural, name, patch,
                    _content_type=MERGE_PATCH,
                    _request_timeout=self.connection.request_timeout,
                )  # fmt: skip
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            self._fail(error, resource, name, ns)
        return dict(patched)

    def watch(
        self,
        resource: Kind,
        name: str,
        namespace: str | None,
        resource_version: str | None,
        timeout: float,
    ) -> Iterator[dict[str, Any]]:
        """Each new version of one object until `timeout` seconds pass or the object is deleted.

        A watch, not polling: the answer arrives the moment Lapse writes it.
        """
        ns = namespace or self.namespace
        selector = f"metadata.name={name}"
        seconds = max(1, int(timeout + 0.999))
        kwargs: dict[str, Any] = {
            "field_selector": selector,
            "timeout_seconds": seconds,
            "_request_timeout": seconds + 10,
        }
        if resource_version:
            kwargs["resource_version"] = resource_version
        if resource.namespaced:
            args: tuple[Any, ...] = (GROUP, VERSION, ns, resource.plural)
            func = self.custom.list_namespaced_custom_object
        else:
            args = (GROUP, VERSION, resource.plural)
            func = self.custom.list_cluster_custom_object
        watcher = watch.Watch()  # type: ignore[no-untyped-call]
        try:
            for event in watcher.stream(func, *args, **kwargs):  # type: ignore[no-untyped-call]
                kind = event.get("type")
                body = event.get("raw_object") or event.get("object")
                if kind == "ERROR":
                    # Usually 410 Gone: the version is too old; the caller re-reads and resumes.
                    return
                if kind == "DELETED":
                    raise CliError(resource.describe(name, ns, "was deleted while waiting"))
                if isinstance(body, dict):
                    yield dict(body)
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            self._fail(error, resource, name, ns)
        finally:
            watcher.stop()  # type: ignore[no-untyped-call]

    # What `kubectl lapse ui` reads beyond the commands above: who the user is, whole
    # collections with their resourceVersion and their changes, and a grant's Events.

    def whoami(self) -> UserInfo | None:
        """The identity the API server gives these credentials (a SelfSubjectReview), or None
        when the server does not say; impersonation flags are honoured like any request."""
        review: Any = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        api = kubernetes.client.AuthenticationV1Api(self.api)
        try:
            answer = api.create_self_subject_review(
                review, _request_timeout=self.connection.request_timeout
            )
        except (ApiException, urllib3.exceptions.HTTPError):
            return None
        info = getattr(getattr(answer, "status", None), "user_info", None)
        if info is None or not info.username:
            return None
        return UserInfo(username=info.username, groups=list(info.groups or ()))

    def collection(
        self, resource: Kind, namespace: str | None
    ) -> tuple[builtins.list[dict[str, Any]], str | None]:
        """Every object of one kind (in `namespace`, or everywhere) and the list's
        resourceVersion, from which a watch resumes without missing a change."""
        try:
            if resource.namespaced and namespace is not None:
                found = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, resource.plural,
                    _request_timeout=self.connection.request_timeout,
                )  # fmt: skip
            else:
                found = self.custom.list_cluster_custom_object(
                    GROUP, VERSION, resource.plural,
                    _request_timeout=self.connection.request_timeout,
                )  # fmt: skip
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            self._fail(error, resource, None, namespace)
        version = (found.get("metadata") or {}).get("resourceVersion")
        return [dict(item) for item in found.get("items") or []], version

    def changes(
        self, resource: Kind, namespace: str | None, resource_version: str | None, timeout: int
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(ADDED|MODIFIED|DELETED, object) for one kind until the server ends the watch;
        returns early on a watch ERROR (a version too old), so the caller lists again."""
        kwargs: dict[str, Any] = {
            "timeout_seconds": timeout,
            "_request_timeout": timeout + 10,
            "allow_watch_bookmarks": False,
        }
        if resource_version:
            kwargs["resource_version"] = resource_version
        if resource.namespaced and namespace is not None:
            args: tuple[Any, ...] = (GROUP, VERSION, namespace, resource.plural)
            func = self.custom.list_namespaced_custom_object
        else:
            args = (GROUP, VERSION, resource.plural)
            func = self.custom.list_cluster_custom_object
        watcher = watch.Watch()  # type: ignore[no-untyped-call]
        try:
            for event in watcher.stream(func, *args, **kwargs):  # type: ignore[no-untyped-call]
                kind = str(event.get("type"))
                body = event.get("raw_object") or event.get("object")
                if kind == "ERROR":
                    return
                if isinstance(body, dict):
                    yield kind, dict(body)
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            self._fail(error, resource, None, namespace)
        finally:
            watcher.stop()  # type: ignore[no-untyped-call]

    def events(
        self, namespace: str, name: str, uid: str | None
    ) -> builtins.list[dict[str, Any]] | None:
        """The Events about one object, or None when the user may not read Events there."""
        core = kubernetes.client.CoreV1Api(self.api)
        selector = f"involvedObject.name={name}"
        try:
            found = core.list_namespaced_event(
                namespace, field_selector=selector,
                _request_timeout=self.connection.request_timeout,
            )  # fmt: skip
        except (ApiException, urllib3.exceptions.HTTPError):
            return None
        plain = self.api.sanitize_for_serialization(found)
        items = [dict(item) for item in plain.get("items") or []]
        if uid:
            items = [e for e in items if (e.get("involvedObject") or {}).get("uid") in (uid, None)]
        return items

    def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's `data` (base64 values), for a user allowed to read it; a refusal says
        which Secret and why, in one sentence."""
        core = kubernetes.client.CoreV1Api(self.api)
        try:
            found = core.read_namespaced_secret(
                name, namespace, _request_timeout=self.connection.request_timeout
            )
        except ApiException as error:
            if error.status == 404:
                raise NotFound(f'secret "{name}" not found in namespace "{namespace}"') from None
            if error.status in (401, 403):
                raise CliError(
                    f'you may not read secret "{name}" in namespace "{namespace}": '
                    f"{_status_message(error)}"
                ) from None
            raise CliError(_status_message(error)) from None
        except urllib3.exceptions.HTTPError as error:
            cause = getattr(error, "reason", None) or error
            raise CliError(f"cannot reach the Kubernetes API at {self.server}: {cause}") from None
        return {str(k): str(v) for k, v in (found.data or {}).items()}
