"""The webhook configurations of service mode: what the API server is told to call, and how.

In url mode kopf writes them from every process it runs in, and empties them when that process
stops — right for one operator in a terminal, wrong for replicas behind a Service: each would
write its own CA, and a rolling restart would switch admission off while a replica stops. In
service mode one writer (the leader, through `lapse.certificates`) writes them whole from what
is built here: kopf's own rules for the handlers registered with it, each calling the Service.
They are never emptied by a stopping replica; uninstalling Lapse deletes them with the rest.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Mapping
from typing import Any

import kopf
from kopf._core.engines import admission as kopf_admission
from kopf._core.intents.registries import get_default_registry

from lapse.config import Settings
from lapse.core.admission import INERT_UPDATE_HOOKS, build_relevant_update_condition

KINDS = {
    "mutating": "MutatingWebhookConfiguration",
    "validating": "ValidatingWebhookConfiguration",
}
RULE_FIELDS = ("apiGroups", "apiVersions", "resources", "operations", "scope")
# cert-manager's cainjector fills caBundle from the Certificate this annotation names.
INJECT_CA_ANNOTATION = "cert-manager.io/inject-ca-from"


_build_kopf_webhooks = kopf_admission.build_webhooks
# The UPDATE webhooks are called only for an update they judge (see
# build_relevant_update_condition): kopf's own patches of every grant never reach them.
UPDATE_CONDITIONS = [{"name": "judged-update", "expression": build_relevant_update_condition()}]
# The foothold webhooks judge what grantees make; each binding Lapse makes went through them.
FOOTHOLD_HOOK_PREFIX = "footholds-"
# Who Lapse is to the API server (lapse.kube's whoami), set once at start-up; empty: unknown,
# and then every write of Lapse's own reaches the foothold webhooks as before.
_own_username = ""


def compute_match_conditions(hook: str, own_username: str) -> list[dict[str, str]] | None:
    """The match conditions of one of Lapse's webhooks (its handler id), if any."""
    if hook in INERT_UPDATE_HOOKS:
        return copy.deepcopy(UPDATE_CONDITIONS)
    if hook.startswith(FOOTHOLD_HOOK_PREFIX) and own_username:
        # A JSON string is a CEL string literal.
        not_lapse = f"request.userInfo.username != {json.dumps(own_username)}"
        return [{"name": "not-lapse", "expression": not_lapse}]
    return None


def build_webhooks(*args: Any, name_suffix: str, **kwargs: Any) -> list[dict[str, Any]]:
    """kopf's webhooks for its handlers, with Lapse's match conditions, which kopf cannot
    express."""
    webhooks: list[dict[str, Any]] = _build_kopf_webhooks(*args, name_suffix=name_suffix, **kwargs)
    for hook in webhooks:
        name = str(hook["name"]).removesuffix(f".{name_suffix}")
        conditions = compute_match_conditions(name, _own_username)
        if conditions is not None:
            hook["matchConditions"] = conditions
    return webhooks


def use_in_kopf(own_username: str) -> None:
    """In url mode kopf writes the configurations itself, from its own module's builder: it
    builds them with Lapse's, so both modes write the same webhooks. `own_username`: who
    Lapse is to the API server, whose writes the foothold webhooks need not see."""
    global _own_username
    _own_username = own_username
    kopf_admission.build_webhooks = build_webhooks


def _resources(handlers: list[Any]) -> list[kopf.Resource]:
    """The resources the handlers name. Lapse's handlers all name group, version and plural,
    so no discovery is needed (kopf's own manager asks the cluster)."""
    found: dict[tuple[str, str, str], kopf.Resource] = {}
    for handler in handlers:
        selector = handler.selector
        if selector is None or selector.group is None or selector.version is None:
            continue
        plural = selector.plural or selector.any_name
        if plural:
            key = (selector.group, selector.version, plural)
            found[key] = kopf.Resource(group=key[0], version=key[1], plural=key[2])
    return list(found.values())


def build_webhook_entries(settings: Settings, reason: str, ca_bundle: bytes | None) -> list[Any]:
    """The `webhooks` of one configuration kind ("mutating" or "validating") for the handlers
    registered with kopf, calling the Service; without `ca_bundle` none is set (a CA injector
    owns it)."""
    handlers = [
        h for h in get_default_registry()._webhooks.get_all_handlers() if h.reason.value == reason
    ]
    client: dict[str, Any] = {
        "service": {
            "namespace": settings.namespace,
            "name": settings.webhook_service,
            "port": settings.webhook_service_port,
        }
    }
    if ca_bundle is not None:
        client["caBundle"] = base64.b64encode(ca_bundle).decode("ascii")
    return build_webhooks(
        handlers,
        resources=_resources(handlers),
        name_suffix=settings.webhook_configuration,
        client_config=client,
    )


def compute_configuration(
    settings: Settings,
    reason: str,
    live: Mapping[str, Any] | None,
    ca_bundle: bytes | None,
) -> dict[str, Any] | None:
    """The configuration as it should be, from the live object (its metadata and, when a CA
    injector owns caBundle, the bundle it set), or None when the live one is that already."""
    wanted = build_webhook_entries(settings, reason, ca_bundle)
    if ca_bundle is None and live is not None:
        injected = {
            hook.get("name"): (hook.get("clientConfig") or {}).get("caBundle")
            for hook in live.get("webhooks") or []
        }
        for hook in wanted:
            if injected.get(hook["name"]):
                hook["clientConfig"]["caBundle"] = injected[hook["name"]]
    body: dict[str, Any] = copy.deepcopy(dict(live)) if live else {}
    body.setdefault("apiVersion", "admissionregistration.k8s.io/v1")
    body.setdefault("kind", KINDS[reason])
    metadata = body.setdefault("metadata", {})
    metadata.setdefault("name", settings.webhook_configuration)
    labels = metadata.setdefault("labels", {}) or {}
    metadata["labels"] = labels
    labels.setdefault("app.kubernetes.io/name", "lapse")
    if live is not None and _same(live.get("webhooks") or [], wanted):
        return None
    body["webhooks"] = wanted
    return body


def _same(live: list[Any], wanted: list[Any]) -> bool:
    """Whether the live webhooks say what `wanted` says; fields the API server fills in with
    defaults (namespaceSelector, reinvocationPolicy, ...) are not ours to compare."""
    if len(live) != len(wanted):
        return False
    for have, want in zip(live, wanted, strict=True):
        for key, value in want.items():
            if value is None:
                continue
            if key == "rules":
                rules = [{k: r.get(k) for k in RULE_FIELDS} for r in have.get("rules") or []]
                if rules != value:
                    return False
            elif have.get(key) != value:
                return False
    return True
