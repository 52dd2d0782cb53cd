"""Faults on demand, so Lapse's reliability suite can prove the operator survives a bad API.

A test turns faults on through a small control endpoint (`/_faults`, admin only) or through
`FaultsClient`: a share of requests fails with 500/503/429 (with `Retry-After`) or hangs until it
times out, every answer is delayed, open watches are cut, history is forgotten so that resuming
a watch gets 410 Gone, or the whole server goes dark for an outage and comes back. Filters aim
the faults at some requests only (say, the operator's RoleBinding writes).

`restart` is what kube-apiserver does right after it starts again: every open watch has ended
with the old process, and while its watch caches fill it answers lists and watches 429
"storage is (re)initializing" (Retry-After 1) for a few seconds, to everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import random
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from aiohttp import web

from . import errors

CONTROL_PATH = "/_faults"
ERROR_CODES = (429, 500, 502, 503, 504)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FaultTarget(Protocol):
    """What the store offers to faults: both act at once and return quickly."""

    def cut_watches(self) -> int:
        """Close every open watch stream; the number closed."""
        ...

    def forget_history(self) -> None:
        """Drop the kept history, so watches from an older resourceVersion get 410 Gone."""
        ...


@dataclass
class Match:
    """Which requests faults apply to; an empty list matches everything.

    `paths` are shell globs on the URL path (`*/rolebindings*`); `verbs` are Kubernetes verbs
    (get list watch create update patch delete deletecollection) or, in capitals, HTTP methods;
    `resources` are plurals; `namespaces` are namespaces; `user_agents` are globs on the
    User-Agent header (`kopf/*` aims at the operator, leaving kubectl alone).
    """

    paths: list[str] = field(default_factory=list)
    verbs: list[str] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    user_agents: list[str] = field(default_factory=list)


@dataclass
class Settings:
    error_rate: float = 0.0  # share of matching requests answered with an error
    error_codes: list[int] = field(default_factory=lambda: [500])
    retry_after_seconds: int = 1  # for 429 and 503
    latency_ms: float = 0.0
    jitter_ms: float = 0.0  # uniform extra delay on top of latency_ms
    timeout_rate: float = 0.0  # share of matching requests that hang
    timeout_seconds: float = 60.0  # then 504 Timeout, as the real server's request timeout
    outage: bool = False
    outage_mode: str = "hang"  # hang: wait for the end then serve; refuse: drop the connection
    outage_seconds: float | None = None  # ends the outage by itself
    seed: int | None = None
    match: Match = field(default_factory=Match)


def _settings_from(document: Mapping[str, Any], base: Settings) -> Settings:
    known = {f for f in Settings.__dataclass_fields__}
    unknown = set(document) - known
    if unknown:
        raise errors.bad_request(f"unknown fault settings: {sorted(unknown)}")
    merged = asdict(base)
    merged.update(document)
    match = merged.pop("match") or {}
    unknown_match = set(match) - set(Match.__dataclass_fields__)
    if unknown_match:
        raise errors.bad_request(f"unknown match filters: {sorted(unknown_match)}")
    try:
        settings = Settings(**merged, match=Match(**{k: list(v) for k, v in match.items()}))
        settings.error_codes = [int(c) for c in settings.error_codes]
        settings.error_rate = float(settings.error_rate)
        settings.timeout_rate = float(settings.timeout_rate)
    except (TypeError, ValueError) as exc:
        raise errors.bad_request(f"invalid fault settings: {exc}") from exc
    for code in settings.error_codes:
        if code not in ERROR_CODES:
            raise errors.bad_request(f"error code {code} is not one of {list(ERROR_CODES)}")
    for name in ("error_rate", "timeout_rate"):
        if not 0.0 <= getattr(settings, name) <= 1.0:
            raise errors.bad_request(f"{name} must be between 0 and 1")
    if settings.outage_mode not in ("hang", "refuse"):
        raise errors.bad_request('outage_mode must be "hang" or "refuse"')
    return settings


def request_verb(method: str, path: str, query: Mapping[str, str]) -> tuple[str, str, str]:
    """(verb, resource, namespace) of a REST request, as the API server's RequestInfo."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        rest = parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        rest = parts[3:]
    else:
        return method.lower(), "", ""
    watch = False
    if rest[:1] == ["watch"]:
        watch, rest = True, rest[1:]
    namespace = ""
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    elif rest[:1] == ["namespaces"] and len(rest) == 2:
        namespace = rest[1]
    resource = rest[0] if rest else ""
    named = len(rest) >= 2
    if watch or query.get("watch") in ("true", "1"):
        verb = "watch"
    else:
        verb = {
            "GET": "get" if named else "list",
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if named else "deletecollection",
        }.get(method.upper(), method.lower())
    return verb, resource, namespace


def _status_response(
    error: errors.ApiError, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=error.code,
        text=json.dumps(error.status()),
        content_type="application/json",
        headers=dict(headers or {}),
    )


def _injected_error(code: int, retry_after: int) -> web.Response:
    if code == 429:
        error = errors.too_many_requests()
        error.details = {"retryAfterSeconds": retry_after}
        return _status_response(error, {"Retry-After": str(retry_after)})
    if code == 503:
        error = errors.ApiError(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            {"retryAfterSeconds": retry_after},
        )
        return _status_response(error, {"Retry-After": str(retry_after)})
    if code == 504:
        return _status_response(_timeout_error())
    if code == 502:
        return web.Response(status=502, text="Bad Gateway", content_type="text/plain")
    return _status_response(errors.internal("injected fault"))


def _timeout_error() -> errors.ApiError:
    return errors.ApiError(
        504,
        "Timeout",
        "Timeout: request did not complete within the allotted timeout",
        {
            "causes": [{"reason": "UnexpectedServerResponse", "message": '{"metadata":{}}'}],
            "retryAfterSeconds": 0,
        },
    )


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _hold(request: web.Request, seconds: float | None, until: asyncio.Event | None) -> None:
    """Wait `seconds` (or for ever) or until `until` is set, but no longer than the client waits:
    aiohttp does not cancel a handler whose client went away, and a held handler would keep the
    server from shutting down."""
    deadline = None if seconds is None else time.monotonic() + seconds
    while not _gone(request):
        if until is not None and until.is_set():
            return
        left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
        if left <= 0:
            return
        if until is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), left)
        else:
            await asyncio.sleep(left)


class Faults:
    """Fault settings, the middleware that applies them and the control endpoint."""

    def __init__(
        self, target: FaultTarget, is_admin: Callable[[Mapping[str, str]], bool] | None = None
    ) -> None:
        self._target = target
        self._is_admin = is_admin or (lambda _headers: True)
        self.settings = Settings()
        self._random = random.Random()
        self._up = asyncio.Event()
        self._up.set()
        self._outage_started: float | None = None
        self._outage_timer: asyncio.TimerHandle | None = None
        self._initializing_until: float | None = None
        self.counters: dict[str, Any] = {}
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.counters = {
            "requests": 0,
            "matched": 0,
            "errors": {},
            "timeouts": 0,
            "delayed": 0,
            "outage_held": 0,
            "outage_refused": 0,
            "outages": 0,
            "watches_cut": 0,
            "history_forgotten": 0,
            "restarts": 0,
            "initializing": 0,
        }

    # state changes (also usable in-process)

    def configure(self, document: Mapping[str, Any]) -> None:
        """Merge settings into the current ones (`PUT /_faults`)."""
        settings = _settings_from(document, self.settings)
        if settings.seed is not None and settings.seed != self.settings.seed:
            self._random.seed(settings.seed)
        was_out = self.settings.outage
        self.settings = settings
        if settings.outage and not was_out:
            self._start_outage()
        elif not settings.outage and was_out:
            self._end_outage()
        elif settings.outage:
            self._schedule_outage_end()

    def reset(self) -> None:
        """No faults, counters at zero; an outage ends (`DELETE /_faults`)."""
        was_out = self.settings.outage
        self.settings = Settings()
        if was_out:
            self._end_outage()
        self._initializing_until = None
        self._reset_counters()

    def cut_watches(self) -> int:
        closed = self._target.cut_watches()
        self.counters["watches_cut"] += closed
        return closed

    def forget_history(self) -> None:
        self._target.forget_history()
        self.counters["history_forgotten"] += 1

    def restart(self, seconds: float) -> None:
        """As a restarted kube-apiserver: open watches end, and lists and watches answer 429
        "storage is (re)initializing" for `seconds`."""
        self.counters["restarts"] += 1
        self._initializing_until = time.monotonic() + seconds
        self.cut_watches()

    def _initializing(self, request: web.Request) -> web.Response | None:
        if self._initializing_until is None:
            return None
        if time.monotonic() >= self._initializing_until:
            self._initializing_until = None
            return None
        verb, _, _ = request_verb(request.method, request.path, request.query)
        if verb not in ("list", "watch"):
            return None
        self.counters["initializing"] += 1
        return _status_response(
            errors.too_many_requests("storage is (re)initializing"), {"Retry-After": "1"}
        )

    def _start_outage(self) -> None:
        self._up.clear()
        self._outage_started = time.monotonic()
        self.counters["outages"] += 1
        self.cut_watches()
        self._schedule_outage_end()

    def _schedule_outage_end(self) -> None:
        if self._outage_timer is not None:
            self._outage_timer.cancel()
            self._outage_timer = None
        if self.settings.outage_seconds is not None:
            started = self._outage_started or time.monotonic()
            remaining = max(0.0, started + self.settings.outage_seconds - time.monotonic())
            loop = asyncio.get_running_loop()
            self._outage_timer = loop.call_later(remaining, self._end_outage)

    def _end_outage(self) -> None:
        if self._outage_timer is not None:
            self._outage_timer.cancel()
            self._outage_timer = None
        self.settings.outage = False
        self._outage_started = None
        self._up.set()

    def state(self) -> dict[str, Any]:
        document: dict[str, Any] = {"settings": asdict(self.settings), "counters": self.counters}
        if self._outage_started is not None:
            document["outage_elapsed_seconds"] = round(time.monotonic() - self._outage_started, 3)
        return document

    # the middleware

    @property
    def middleware(self) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
        @web.middleware
        async def faults_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._handle(request, handler)

        return faults_middleware

    def _matches(self, request: web.Request) -> bool:
        match = self.settings.match
        if match.paths and not any(fnmatch.fnmatchcase(request.path, p) for p in match.paths):
            return False
        if match.user_agents:
            agent = request.headers.get("User-Agent", "")
            if not any(fnmatch.fnmatchcase(agent, p) for p in match.user_agents):
                return False
        if match.verbs or match.resources or match.namespaces:
            verb, resource, namespace = request_verb(request.method, request.path, request.query)
            if match.verbs and verb not in match.verbs and request.method not in match.verbs:
                return False
            if match.resources and resource not in match.resources:
                return False
            if match.namespaces and namespace not in match.namespaces:
                return False
        return True

    async def _handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == CONTROL_PATH or request.path.startswith(CONTROL_PATH + "/"):
            return await handler(request)
        self.counters["requests"] += 1
        initializing = self._initializing(request)
        if initializing is not None:
            return initializing
        if not self._matches(request):
            return await handler(request)
        self.counters["matched"] += 1
        settings = self.settings
        if settings.outage:
            if settings.outage_mode == "refuse":
                self.counters["outage_refused"] += 1
                if request.transport is not None:
                    request.transport.close()
                raise ConnectionResetError("outage: connection refused")
            self.counters["outage_held"] += 1
            await _hold(request, None, self._up)
            if _gone(request):
                return web.Response(status=503)
        if settings.latency_ms or settings.jitter_ms:
            self.counters["delayed"] += 1
            delay = settings.latency_ms + self._random.uniform(0, settings.jitter_ms)
            await asyncio.sleep(delay / 1000)
        roll = self._random.random()
        if roll < settings.timeout_rate:
            self.counters["timeouts"] += 1
            await _hold(request, settings.timeout_seconds, None)
            return _status_response(_timeout_error())
        if roll < settings.timeout_rate + settings.error_rate * (1 - settings.timeout_rate):
            code = self._random.choice(settings.error_codes)
            errors_by_code = self.counters["errors"]
            errors_by_code[str(code)] = errors_by_code.get(str(code), 0) + 1
            return _injected_error(code, settings.retry_after_seconds)
        return await handler(request)

    # the control endpoint

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(CONTROL_PATH, self._get)
        app.router.add_put(CONTROL_PATH, self._put)
        app.router.add_delete(CONTROL_PATH, self._delete)
        app.router.add_post(CONTROL_PATH + "/cut-watches", self._post_cut)
        app.router.add_post(CONTROL_PATH + "/forget-history", self._post_forget)
        app.router.add_post(CONTROL_PATH + "/restart", self._post_restart)

    def _refused(self, request: web.Request) -> web.Response | None:
        if self._is_admin(request.headers):
            return None
        return _status_response(
            errors.ApiError(
                403,
                "Forbidden",
                f'forbidden: User cannot {request.method.lower()} path "{request.path}"',
            )
        )

    def _json(self) -> web.Response:
        return web.json_response(self.state())

    async def _get(self, request: web.Request) -> web.Response:
        return self._refused(request) or self._json()

    async def _put(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            document = await request.json()
            if not isinstance(document, dict):
                raise errors.bad_request("fault settings must be a JSON object")
            self.configure(document)
        except ValueError:
            return _status_response(errors.bad_request("fault settings must be JSON"))
        except errors.ApiError as exc:
            return _status_response(exc)
        return self._json()

    async def _delete(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        self.reset()
        return self._json()

    async def _post_cut(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        closed = self.cut_watches()
        return web.json_response({"closed": closed, **self.state()})

    async def _post_restart(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            seconds = float((await request.json()).get("seconds", 3))
        except (ValueError, TypeError, AttributeError) as exc:
            raise errors.bad_request(f'restart takes {{"seconds": number}}: {exc}') from exc
        if not 0 <= seconds <= 600:
            raise errors.bad_request("restart seconds must be between 0 and 600")
        self.restart(seconds)
        return self._json()

    async def _post_forget(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        self.forget_history()
        return self._json()


class FaultsClient:
    """Blocking client of `/_faults` for tests (stdlib only).

    For an https server without `cafile` the certificate is not verified: the control
    endpoint is only ever on 127.0.0.1.
    """

    def __init__(
        self, base_url: str, token: str, cafile: str | None = None, timeout: float = 10
    ) -> None:
        self._url = base_url.rstrip("/") + CONTROL_PATH
        self._token = token
        self._timeout = timeout
        self._context: ssl.SSLContext | None = None
        if urllib.parse.urlsplit(base_url).scheme == "https":
            if cafile:
                self._context = ssl.create_default_context(cafile=cafile)
            else:
                self._context = ssl._create_unverified_context()

    def _call(self, method: str, suffix: str = "", body: Any = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self._url + suffix, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=self._timeout, context=self._context) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    def state(self) -> dict[str, Any]:
        return self._call("GET")

    def set(self, **settings: Any) -> dict[str, Any]:
        return self._call("PUT", body=settings)

    def reset(self) -> dict[str, Any]:
        return self._call("DELETE")

    def cut_watches(self) -> int:
        return int(self._call("POST", "/cut-watches")["closed"])

    def forget_history(self) -> dict[str, Any]:
        return self._call("POST", "/forget-history")

    def restart(self, seconds: float = 3.0) -> dict[str, Any]:
        """As a restarted kube-apiserver: watches end, lists and watches answer 429
        "storage is (re)initializing" for `seconds`."""
        return self._call("POST", "/restart", {"seconds": seconds})

    def outage(self, seconds: float | None = None, mode: str = "hang") -> dict[str, Any]:
        """Start an outage; it ends after `seconds`, or at `end_outage()`/`reset()`."""
        return self.set(outage=True, outage_seconds=seconds, outage_mode=mode)

    def end_outage(self) -> dict[str, Any]:
        return self.set(outage=False)
