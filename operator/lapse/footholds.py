"""The footholds a grantee made: recorded on the grant while it runs, settled when it ends.

The foothold webhook (`lapse.handlers.handle_footholds`) calls `record` before the API server
creates the object, so a grant's status lists everything that could outlive it even if the
operator restarts. The grant machinery calls `settle` once the grant's bindings are gone: each
foothold is removed (with a UID precondition, so an object someone else made under the same
name is never touched) or left in place and reported, as the grant's policy said when it was
made. Only this module writes `status.footholds`, and always under a resourceVersion test, so
two replicas answering the webhook at once never lose a record. A connection into a pod whose
ServiceAccount can do more than the grant, under `strongerPods: EndPods`, is settled by
deleting that pod: the token read through the connection is bound to it and stops
authenticating once it is gone.
"""

from __future__ import annotations

import logging
from typing import Any

from lapse import metrics
from lapse.core.footholds import compute_object_path, compute_settle_message, describe_foothold
from lapse.core.grants import GrantKey
from lapse.core.models import Foothold, FootholdAction, GrantStatus, RoleRef
from lapse.core.owners import parse_role, parse_status
from lapse.kube import ApiError, ConflictError, KubeApi, NotFoundError, RefusedError
from lapse.reporting import Reporter

logger = logging.getLogger(__name__)
ATTEMPTS = 8
END_POD_GRACE_SECONDS = 1


class FootholdNotRecorded(Exception):
    """The grant could not be updated: the webhook refuses the write rather than lose track."""


class Footholds:
    def __init__(self, kube: KubeApi, reporter: Reporter) -> None:
        self.kube = kube
        self.reporter = reporter

    async def _update(
        self, key: GrantKey, change: Any
    ) -> tuple[dict[str, Any], list[Foothold]] | None:
        """Apply `change(footholds) -> footholds` to the grant's status, retrying on a
        concurrent write; the grant's body and the new list, or None if the grant is gone."""
        for _ in range(ATTEMPTS):
            body = await self.kube.get_owner(key)
            if body is None:
                return None
            status = parse_status(key.kind, body)
            footholds = change(list(status.footholds or []))
            operations = [
                {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": body["metadata"]["resourceVersion"],
                },
                {
                    "op": "add",
                    "path": "/status/footholds",
                    "value": [f.to_wire() for f in footholds],
                },
            ]
            try:
                await self.kube.json_patch_status(key, operations)
            except (ConflictError, RefusedError):
                continue
            return body, footholds
        raise FootholdNotRecorded(f"{key.describe()} kept changing; try again in a moment")

    async def read_pod(self, namespace: str, name: str) -> tuple[dict[str, Any] | None, str]:
        """The pod a connection goes into, as the API server holds it, or None and why not."""
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        try:
            pod = await self.kube.get_path(path)
        except ApiError as error:
            return None, f"reading it failed: {error}"
        return pod, "" if pod is not None else "it does not exist"

    async def record(self, key: GrantKey, foothold: Foothold) -> None:
        """Add `foothold` to the grant's record; FootholdNotRecorded if that cannot be done.
        A connection into a pod names the account whose token it could read, and is recorded
        once however often it is made."""
        if foothold.connect and foothold.namespace and not foothold.service_account:
            try:
                pod = await self.kube.get_path(compute_object_path(foothold))
            except ApiError as error:
                # The record matters more than its detail: keep it, without the account.
                logger.warning("Could not read %s: %s", describe_foothold(foothold), error)
                pod = None
            if pod is not None:
                spec = pod.get("spec") or {}
                account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
                foothold = foothold.model_copy(update={"service_account": account})

        def add(held: list[Foothold]) -> list[Foothold]:
            # A connection, or a change, to the same object again: recorded once.
            # A pod of the same name made again is another pod, with a token of its own.
            def same(f: Foothold) -> tuple[object, ...]:
                return (
                    f.resource, f.namespace, f.name, f.uid, f.connect, f.changed,
                    f.service_account, f.action,
                )  # fmt: skip

            if (foothold.connect or foothold.changed) and any(
                same(f) == same(foothold) for f in held
            ):
                return held
            return [*held, foothold]

        try:
            done = await self._update(key, add)
        except ApiError as error:
            raise FootholdNotRecorded(str(error)) from error
        if done is None:
            raise FootholdNotRecorded(f"{key.describe()} is gone")
        body, held = done
        if foothold not in held:
            return  # the same connection again: recorded once, said once
        metrics.footholds_total.labels(resource=foothold.resource, action="recorded").inc()
        if foothold.connect and foothold.action == FootholdAction.REMOVE:
            message = (
                f"{describe_foothold(foothold)} under this grant; the pod will be ended when the "
                "grant ends, and the token bound to it with it."
            )
        elif foothold.connect or foothold.changed:
            message = f"{describe_foothold(foothold)} under this grant; reported at its end."
        else:
            message = (
                f"{describe_foothold(foothold)} was made under this grant; at its end it will "
                f"be {'removed' if foothold.action == FootholdAction.REMOVE else 'reported'}."
            )
        await self.reporter.event(key, "Warning", "FootholdRecorded", message)
        self.reporter.audit(
            "foothold",
            key,
            parse_status(key.kind, body),
            parse_role(body),
            "FootholdRecorded",
            message,
            footholdKind=foothold.kind,
            footholdName=foothold.name,
            footholdNamespace=foothold.namespace,
        )

    async def adopt(self, key: GrantKey, uid: str, username: str) -> None:
        """`username` changed an object the grantee made: it is theirs too now, so the grant's
        end reports it instead of removing it."""

        def mark(held: list[Foothold]) -> list[Foothold]:
            return [
                f.model_copy(update={"adopted_by": username})
                if f.uid == uid and not f.adopted_by
                else f
                for f in held
            ]

        try:
            done = await self._update(key, mark)
        except (ApiError, FootholdNotRecorded) as error:
            logger.warning("Could not note that %s changed %s: %s", username, uid, error)
            return
        if done is None:
            return
        _, held = done
        for foothold in held:
            if foothold.uid == uid and foothold.adopted_by == username:
                message = f"{describe_foothold(foothold)}: it will be reported, not removed."
                await self.reporter.event(key, "Normal", "FootholdAdopted", message)

    async def refused(self, key: GrantKey, resource: str, message: str) -> None:
        """Account for a refused attempt: the Event, the audit line and the metric."""
        body = await self.kube.get_owner(key)
        metrics.footholds_total.labels(resource=resource, action="refused").inc()
        await self.reporter.event(key, "Warning", "FootholdRefused", message)
        if body is not None:
            self.reporter.audit(
                "foothold-refused",
                key,
                parse_status(key.kind, body),
                parse_role(body),
                "FootholdRefused",
                message,
            )

    async def settle(
        self, key: GrantKey, role: RoleRef | None, status: GrantStatus | None = None
    ) -> None:
        """At a grant's end: remove or report each foothold not settled yet. `status` is the
        owner read after its bindings went, if the caller has it: the webhook records a
        foothold before it allows the create, so every one made with the access is in it."""
        if status is None:
            body = await self.kube.get_owner(key)
            if body is None:
                return
            status = parse_status(key.kind, body)
        footholds = list(status.footholds or [])
        if all(f.outcome is not None for f in footholds):
            return
        # exec and attach into one pod are two records, one pod to end.
        ended: dict[str, str] = {}
        settled = [
            f
            if f.outcome is not None
            else f.model_copy(update={"outcome": await self._one(f, ended)})
            for f in footholds
        ]
        fresh = [s for s, f in zip(settled, footholds, strict=True) if f.outcome is None]
        try:
            await self._update(key, lambda held: [*settled, *held[len(settled) :]])
        except (ApiError, FootholdNotRecorded) as error:
            # The Event and the audit line below still say what became of each one.
            logger.warning("Could not record the footholds of %s: %s", key.describe(), error)
        message, remains = compute_settle_message(fresh)
        reason = "FootholdsRemain" if remains else "FootholdsRemoved"
        await self.reporter.event(key, "Warning" if remains else "Normal", reason, message)
        self.reporter.audit("footholds", key, status, role, reason, message)

    async def _one(self, foothold: Foothold, ended: dict[str, str]) -> str:
        if foothold.connect and foothold.uid and foothold.uid in ended:
            return ended[foothold.uid]
        if foothold.action != FootholdAction.REMOVE or foothold.adopted_by:
            metrics.footholds_total.labels(resource=foothold.resource, action="reported").inc()
            return "Reported"
        if not foothold.uid:
            # Without the UID the object cannot be told from one made later by someone else.
            metrics.footholds_total.labels(resource=foothold.resource, action="reported").inc()
            return "Kept"
        # A pod ended for its token: the token works until the pod object is gone, so the pod
        # gets a second to stop, not the half minute (or more) its spec may ask for.
        grace = END_POD_GRACE_SECONDS if foothold.connect else None
        try:
            await self.kube.delete_object(
                compute_object_path(foothold), uid=foothold.uid, grace_seconds=grace
            )
        except NotFoundError:
            return "Gone"
        except ConflictError:
            return "Changed"
        except ApiError as error:
            logger.warning("Could not remove %s: %s", describe_foothold(foothold), error)
            metrics.footholds_total.labels(resource=foothold.resource, action="kept").inc()
            return "Kept"
        if foothold.connect:
            metrics.footholds_total.labels(resource=foothold.resource, action="ended").inc()
            ended[foothold.uid] = "Ended"
            return "Ended"
        metrics.footholds_total.labels(resource=foothold.resource, action="removed").inc()
        return "Removed"
