"""The handlers' view of the operator: its `Services`, and `leading` for those that write.

kopf hands every handler the same `memo`; `services_of` is the one typed way in. A webhook
called before start-up finished answers 503 (the API server retries); a handler that writes
waits until this replica leads, then runs on the object as it is then, since what a standby
saw may be long out of date.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import kopf

from lapse.core.models import AccessPolicy
from lapse.policies import WEBHOOK_WAIT_SECONDS
from lapse.services import Services

T = TypeVar("T")
STARTING = "Lapse is starting; try again in a moment."


def services_of(memo: Any) -> Services:
    """The operator's services; an admission refusal (503) while they are being built."""
    services = getattr(memo, "services", None)
    if not isinstance(services, Services):
        raise kopf.AdmissionError(STARTING, code=503)
    return services


async def policies_in(memo: Any, *, webhook: bool = False) -> list[AccessPolicy]:
    """Every readable AccessPolicy (lapse.policies), once the first listing is in; a webhook
    waits only a few seconds for it, then answers from what there is (which grants nothing)."""
    wait = WEBHOOK_WAIT_SECONDS if webhook else None
    return await services_of(memo).policies.current(wait=wait)


def object_path(resource: Any, body: Any) -> str:
    """The API path of `body`, an object of the kopf `resource`."""
    metadata = body.get("metadata") or {}
    base = f"/apis/{resource.group}/{resource.version}" if resource.group else "/api/v1"
    namespace = metadata.get("namespace")
    if namespace:
        base += f"/namespaces/{namespace}"
    return f"{base}/{resource.plural}/{metadata.get('name')}"


def leading(handler: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T | None]]:
    """Run a kopf handler that writes only while this replica leads.

    On a standby the handler waits; once this replica leads it runs on the object as it is
    then (re-read), or not at all if the object is gone meanwhile.
    """

    @functools.wraps(handler)
    async def wrapper(**kwargs: Any) -> T | None:
        services = services_of(kwargs["memo"])
        leadership = services.leadership
        if not leadership.leading:
            await leadership.ready.wait()
            if "body" in kwargs and "resource" in kwargs:
                fresh = await services.kube.get_path(
                    object_path(kwargs["resource"], kwargs["body"])
                )
                if fresh is None:
                    return None
                kwargs["body"] = fresh
                for field in ("spec", "status"):
                    if field in kwargs:
                        kwargs[field] = fresh.get(field) or {}
                if "meta" in kwargs:
                    kwargs["meta"] = fresh.get("metadata") or {}
        return await handler(**kwargs)

    return wrapper
