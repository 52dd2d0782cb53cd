"""The page's HTTP server: static files, the live event stream, the actions and the access
review, as the user.

Reads and actions go through the CLI's `Kube` (the user's kubeconfig, context and
impersonation flags), in a worker thread since that client is synchronous. Across clusters
(`--contexts`, `--all-contexts`) each object the page gets names its cluster and every read
and action names the one it is for: the server sends it to that cluster's client, and refuses
one that names none rather than pick a cluster for an approval. An action is the
same API request its `kubectl lapse` command sends, so an admission webhook's refusal — a
requester approving their own request, say — comes back as the API's own sentence and the
page shows it as it is.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any, TypeVar

from aiohttp import web
from pydantic import ValidationError

from lapse.cli.actions import APPROVE, DENY, REVIEW, REVOKE, VERDICTS, review_value
from lapse.cli.audit import read_cluster_grants
from lapse.cli.client import Kube
from lapse.cli.errors import AlreadyExists, CliError
from lapse.cli.grants import breakglass_manifest, incident_name, request_manifest
from lapse.core.accessreview import build_access_review
from lapse.core.durations import DurationError, parse_duration
from lapse.core.kinds import ACCESS_POLICY, ACCESS_REQUEST, BREAK_GLASS, Kind
from lapse.core.models import AccessPolicy
from lapse.ui.accessreview import (
    FORMATS,
    NARROWING,
    BadQuery,
    parse_report_query,
    render_download,
    review_view,
)
from lapse.ui.clusters import Clusters, Member, Scope, user_view
from lapse.ui.feed import Change, Feed, Reach
from lapse.ui.guard import Gate, guarded, stamp_headers
from lapse.ui.views import grant_view, offers, parse_grant_body, stamp, story

T = TypeVar("T")
logger = logging.getLogger(__name__)

STATIC = {
    "": ("index.html", "text/html"),
    "app.js": ("app.js", "text/javascript"),
    "clusters.js": ("clusters.js", "text/javascript"),
    "app.css": ("app.css", "text/css"),
    "favicon.svg": ("favicon.svg", "image/svg+xml"),
}
KINDS = {ACCESS_REQUEST.kind: ACCESS_REQUEST, BREAK_GLASS.kind: BREAK_GLASS}
ACTIONS = {"approve": APPROVE, "deny": DENY, "revoke": REVOKE, "review": REVIEW}
# An idle stream still sends a comment now and then, so a proxy or the browser keeps it open
# and the page learns the server's clock (countdowns tick against it, not the laptop's).
HEARTBEAT_SECONDS = 10.0


def _static(name: str, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler for one of the page's files, shipped as package data."""
    body = resources.files("lapse.ui").joinpath("static", name).read_bytes()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type)

    return handler


class Refused(Exception):
    """The page sent something that cannot be a request (a missing field, a bad duration)."""


def _now() -> str:
    return stamp(datetime.now(UTC)) or ""


class Server:
    """The routes of one run of `kubectl lapse ui`: one cluster (`kube`, `scope`, `feed`), or
    the `clusters` of a page across contexts."""

    def __init__(
        self, kube: Kube, gate: Gate, scope: Scope, feed: Feed, clusters: Clusters | None = None
    ) -> None:
        self.gate = gate
        self.clusters = clusters or Clusters.single(kube, scope, feed)

    @classmethod
    def of(cls, gate: Gate, clusters: Clusters) -> Server:
        """The server of `clusters` (one, or several contexts)."""
        first = clusters.first()
        scope = first.scope or Scope(None, None, first.kube.namespace)
        return cls(first.kube, gate, scope, first.feed, clusters)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[guarded(self.gate)], client_max_size=64 * 1024)
        base = f"/{self.gate.token}/"
        for path, (name, content_type) in STATIC.items():
            app.router.add_get(base + path, _static(name, content_type))
        app.router.add_get(base + "api/stream", self.stream)
        app.router.add_get(base + "api/story", self.story)
        app.router.add_get(base + "api/offers", self.offers)
        app.router.add_get(base + "api/report", self.report)
        app.router.add_post(base + "api/request", self.request)
        app.router.add_post(base + "api/breakglass", self.breakglass)
        app.router.add_post(base + "api/act", self.act)
        return app

    async def _call(self, work: Callable[[], T]) -> T:
        return await asyncio.to_thread(work)

    def _member(self, name: Any) -> Member:
        member = self.clusters.find(_text(name))
        if member is not None:
            return member
        if not _text(name):
            raise Refused("name the cluster: this page spans several")
        shown = ", ".join(self.clusters.members)
        raise Refused(f"no cluster {name!r} on this page; it shows {shown}")

    def hello(self) -> dict[str, Any]:
        first = self.clusters.first().info()
        return {
            "me": user_view(self.clusters.me()),
            "namespace": first["namespace"],
            "defaultNamespace": first["defaultNamespace"],
            "server": first["server"],
            "now": _now(),
            "refused": first["refused"],
            "fleet": self.clusters.many,
            "clusters": [member.info() for member in self.clusters.members.values()],
        }

    def _view(self, change: Change | Reach) -> tuple[str, dict[str, Any]]:
        member = self.clusters.members[change.cluster]
        if isinstance(change, Reach):
            return "cluster", member.info()
        if change.gone:
            return "gone", {"uid": change.uid, "cluster": change.cluster}
        grant = parse_grant_body(change.body or {})
        if grant is None:
            return "gone", {"uid": change.uid, "cluster": change.cluster}
        me = member.scope.me if member.scope else None
        return "grant", {**grant_view(grant, me), "cluster": change.cluster}

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        stamp_headers(response)
        await response.prepare(request)
        queue: asyncio.Queue[Change | Reach | None] = asyncio.Queue()
        feeds = [member.feed for member in self.clusters.members.values()]
        for feed in feeds:
            feed.listeners.add(queue.put_nowait)

        async def send(event: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

        try:
            await send("hello", self.hello())
            for feed in feeds:
                for uid, body in list(feed.objects.items()):
                    kind = str(body.get("kind"))
                    await send(*self._view(Change(kind, uid, body, cluster=feed.cluster)))
            await send("ready", {"now": _now()})
            while True:
                try:
                    change = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    await send("clock", {"now": _now()})
                    continue
                if change is not None:
                    await send(*self._view(change))
        except ConnectionResetError:
            # The page closed its stream (a tab closed or reloaded): nothing is owed to it.
            logger.debug("An event stream ended: the page went away.")
        finally:
            for feed in feeds:
                feed.listeners.discard(queue.put_nowait)
        return response

    async def story(self, request: web.Request) -> web.StreamResponse:
        resource = KINDS.get(request.query.get("kind", ""))
        name = request.query.get("name", "")
        namespace = request.query.get("namespace") or None
        if resource is None or not name:
            return web.json_response({"error": "name a kind and a name"}, status=400)
        try:
            member = self._member(request.query.get("cluster"))
        except Refused as error:
            return web.json_response({"error": str(error)}, status=400)
        kube = member.kube
        try:
            body = await self._call(lambda: kube.get(resource, name, namespace))
        except CliError as error:
            return web.json_response({"error": error.message}, status=404)
        body.setdefault("kind", resource.kind)
        grant = parse_grant_body(body)
        if grant is None:
            return web.json_response({"error": f"{name} cannot be read"}, status=422)
        # Lapse posts the Events of a cluster-scoped break-glass in `default`.
        where = grant.metadata.namespace or "default"
        events = await self._call(lambda: kube.events(where, name, grant.metadata.uid))
        me = member.scope.me if member.scope else None
        return web.json_response(
            {
                "grant": {**grant_view(grant, me), "cluster": member.name},
                "timeline": story(grant, events),
                "eventsReadable": events is not None,
                "now": _now(),
            }
        )

    async def offers(self, request: web.Request) -> web.StreamResponse:
        try:
            member = self._member(request.query.get("cluster"))
        except Refused as error:
            return web.json_response({"error": str(error)}, status=400)
        kube = member.kube
        try:
            bodies = await self._call(lambda: kube.list(ACCESS_POLICY, None))
        except CliError as error:
            return web.json_response({"requests": [], "breakGlass": [], "refused": error.message})
        policies = []
        for body in bodies:
            try:
                policies.append(AccessPolicy.model_validate(body))
            except ValidationError:
                continue
        me = member.scope.me if member.scope else None
        return web.json_response({**offers(policies, me), "refused": None})

    async def report(self, request: web.Request) -> web.StreamResponse:
        """The access review of a period, as `kubectl lapse audit report` makes it from the
        cluster: the page's table (no `format`), or a download in the command's format."""
        now = datetime.now(UTC)
        try:
            query = parse_report_query(request.query, now=now)
            kube = self._member(request.query.get("cluster")).kube
        except (BadQuery, Refused) as error:
            return web.json_response({"error": str(error)}, status=400)
        namespace = query.filters.namespace
        try:
            found = await self._call(
                lambda: read_cluster_grants(kube, namespace, narrowing=NARROWING)
            )
        except CliError as error:
            return web.json_response({"error": error.message}, status=422)
        review = build_access_review(
            grants=found.grants,
            since=query.since,
            until=query.until,
            filters=query.filters,
            cluster=found.cluster,
        )
        sources = [found.source]
        if query.format is None:
            return web.json_response(review_view(review, warnings=found.warnings, sources=sources))
        media, extension = FORMATS[query.format]
        body = render_download(review, query.format, generated=now, sources=sources)
        # The name is built from dates and a fixed extension: nothing in it needs quoting.
        disposition = f'attachment; filename="{query.filename(extension)}"'
        return web.Response(
            text=body, headers={"Content-Type": media, "Content-Disposition": disposition}
        )

    async def _json(self, request: web.Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            raise Refused("the body is not JSON") from None
        if not isinstance(data, dict):
            raise Refused("the body is not a JSON object")
        return data

    async def _answer(self, work: Callable[[], dict[str, Any]]) -> web.StreamResponse:
        try:
            body = await self._call(work)
        except CliError as error:
            return web.json_response({"error": error.message}, status=422)
        meta = body.get("metadata") or {}
        return web.json_response(
            {"kind": body.get("kind"), "name": meta.get("name"), "namespace": meta.get("namespace")}
        )

    async def request(self, request: web.Request) -> web.StreamResponse:
        try:
            data = await self._json(request)
            manifest = request_manifest(
                _field(data, "role"),
                _choice(data, "roleKind", ("ClusterRole", "Role")),
                _field(data, "namespace"),
                _duration(data.get("duration"), required=False),
                _field(data, "reason"),
                _text(data.get("ticket")),
                None,
            )
            kube = self._member(data.get("cluster")).kube
        except Refused as error:
            return web.json_response({"error": str(error)}, status=400)
        return await self._answer(lambda: kube.create(ACCESS_REQUEST, manifest))

    async def breakglass(self, request: web.Request) -> web.StreamResponse:
        try:
            data = await self._json(request)
            raw = data.get("namespaces") or ""
            namespaces = [n.strip() for n in str(raw).split(",") if n.strip()]
            incident = _text(data.get("incident"))
            manifest = breakglass_manifest(
                _field(data, "role"),
                namespaces,
                _duration(data.get("duration"), required=True) or "",
                _field(data, "reason"),
                incident,
                None,
            )
            kube = self._member(data.get("cluster")).kube
        except Refused as error:
            return web.json_response({"error": str(error)}, status=400)
        slug = incident_name(incident)

        def create() -> dict[str, Any]:
            # As `kubectl lapse breakglass`: a second one for the incident gets a suffix.
            try:
                return kube.create(BREAK_GLASS, manifest)
            except AlreadyExists:
                if not slug:
                    raise
                taken = {**manifest, "metadata": {"generateName": f"{slug}-"}}
                return kube.create(BREAK_GLASS, taken)

        return await self._answer(create)

    async def act(self, request: web.Request) -> web.StreamResponse:
        try:
            data = await self._json(request)
            action = _choice(data, "action", tuple(ACTIONS))
            resource = KINDS[_choice(data, "kind", tuple(KINDS))]
            name = _field(data, "name")
            namespace = _text(data.get("namespace")) if resource.namespaced else None
            message = _text(data.get("message")) or ""
            value = _action_value(action, resource, data, message)
            kube = self._member(data.get("cluster")).kube
        except Refused as error:
            return web.json_response({"error": str(error)}, status=400)
        annotations = {ACTIONS[action]: value}
        return await self._answer(lambda: kube.annotate(resource, name, annotations, namespace))


def _action_value(action: str, resource: Kind, data: dict[str, Any], message: str) -> str:
    """The annotation's value, with the checks `kubectl lapse` makes before sending it."""
    if action in ("approve", "deny") and resource is not ACCESS_REQUEST:
        raise Refused("a break-glass is not approved or denied; review or revoke it")
    if action == "review":
        if resource is not BREAK_GLASS:
            raise Refused("only a break-glass is reviewed")
        verdict = _choice(data, "verdict", tuple(VERDICTS))
        if not message.strip():
            raise Refused("a review needs notes")
        return review_value(verdict, message)
    if action == "deny" and not message.strip():
        raise Refused("say why it is denied; the requester reads it")
    return message


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _field(data: dict[str, Any], key: str) -> str:
    text = _text(data.get(key))
    if text is None:
        raise Refused(f"{key} is required")
    return text


def _choice(data: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = _field(data, key).lower() if key in ("action", "verdict") else _field(data, key)
    if value not in allowed:
        raise Refused(f"{key} must be one of {', '.join(allowed)}")
    return value


def _duration(value: Any, *, required: bool) -> str | None:
    text = _text(value)
    if text is None:
        if required:
            raise Refused("duration is required")
        return None
    try:
        parse_duration(text)
    except DurationError:
        raise Refused(f"{text!r} is not a duration such as 30m, 2h or 1h30m") from None
    return text
