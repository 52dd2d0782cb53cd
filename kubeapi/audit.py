"""Auditing: an audit policy and the batching webhook backend, as kube-apiserver has them.

`--audit-policy-file` is an `audit.k8s.io/v1` Policy: the first rule that matches a request
(users, userGroups, verbs, resources with groups and resourceNames, namespaces,
nonResourceURLs) gives its level; none matching means `None`. Requests at `Metadata` or
above become one `ResponseComplete` event each (the only stage sent here; `omitStages` is read
and `RequestReceived` is never sent), with the fields a real server writes at that level:
auditID, requestURI, verb, user, impersonatedUser, sourceIPs, userAgent, objectRef,
responseStatus, requestReceivedTimestamp, stageTimestamp and the authorization annotations.
Request and response bodies are never recorded (`Request` and `RequestResponse` are written as
`Metadata`).

`--audit-webhook-config-file` is a kubeconfig whose cluster's `server` is the URL to POST to
(its `certificate-authority`/`-data` or `insecure-skip-tls-verify`) and whose user has the
`token` (or a client certificate) to present. Events go out as an `EventList`, in batches of
at most `--audit-webhook-batch-max-size` after at most `--audit-webhook-batch-max-wait`; the
buffer holds `--audit-webhook-batch-buffer-size` events and drops what does not fit, so an
audit backend that is slow or away never holds up a request. A batch that fails is tried
five times in all, waiting `--audit-webhook-initial-backoff` and then half as long again each
time, then dropped.

`--audit-log-path` writes the same events to a file, one JSON object a line, as
kube-apiserver's log backend does (blocking: none is dropped). Both may be given.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import json
import logging
import ssl
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import aiohttp
import yaml

from .identity import UserInfo

log = logging.getLogger(__name__)

LEVELS = ("None", "Metadata", "Request", "RequestResponse")
# Batches being sent at once; past it, new batches are dropped rather than queued.
MAX_SENDING = 4
# As kube-apiserver's webhook client retries (DefaultRetryBackoffWithInitialDelay): five
# tries, the wait growing by half each time from the initial backoff.
RETRY_STEPS = 5
RETRY_FACTOR = 1.5


def micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Request:
    """What the policy judges and the event records of one request."""

    user: UserInfo
    impersonated: UserInfo | None
    verb: str
    path: str
    resource: str = ""
    subresource: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    name: str = ""
    resource_request: bool = True


def _matches(patterns: list[str], value: str) -> bool:
    return any(p == "*" or p == value or fnmatch.fnmatchcase(value, p) for p in patterns)


@dataclass(frozen=True)
class Rule:
    level: str
    users: list[str] = field(default_factory=list)
    user_groups: list[str] = field(default_factory=list)
    verbs: list[str] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    non_resource_urls: list[str] = field(default_factory=list)

    def matches(self, request: Request) -> bool:
        # The policy judges the authenticated user, before impersonation (as WithAudit runs
        # before WithImpersonation in kube-apiserver's handler chain).
        user = request.user
        if self.users and user.username not in self.users:
            return False
        if self.user_groups and not set(self.user_groups) & set(user.groups):
            return False
        if self.verbs and request.verb not in self.verbs:
            return False
        if not request.resource_request:
            if self.resources or self.namespaces:
                return False
            if self.non_resource_urls:
                return any(
                    request.path == u or (u.endswith("*") and request.path.startswith(u[:-1]))
                    for u in self.non_resource_urls
                )
            return True
        if self.non_resource_urls:
            return False
        if self.namespaces and request.namespace not in self.namespaces:
            return False
        if self.resources:
            full = (
                f"{request.resource}/{request.subresource}"
                if request.subresource
                else request.resource
            )
            return any(self._resource_matches(kinds, request, full) for kinds in self.resources)
        return True

    @staticmethod
    def _resource_matches(kinds: Mapping[str, Any], request: Request, full: str) -> bool:
        if str(kinds.get("group") or "") != request.api_group:
            return False
        names = [str(n) for n in kinds.get("resourceNames") or ()]
        if names and request.name not in names:
            return False
        patterns = [str(r) for r in kinds.get("resources") or ()]
        if not patterns:
            return True
        for pattern in patterns:
            if pattern in ("*", full):
                return True
            if pattern.startswith("*/") and request.subresource == pattern[2:]:
                return True
            if pattern.endswith("/*") and request.resource == pattern[:-2]:
                return True
        return False


@dataclass(frozen=True)
class Policy:
    rules: list[Rule]
    omit_stages: frozenset[str] = frozenset()

    @classmethod
    def load(cls, path: Path) -> Policy:
        document = yaml.safe_load(path.read_text()) or {}
        if document.get("kind") != "Policy":
            raise ValueError(f"{path}: not an audit.k8s.io Policy")
        rules = []
        for raw in document.get("rules") or ():
            level = str(raw.get("level") or "")
            if level not in LEVELS:
                raise ValueError(f"{path}: unknown audit level {level!r}")
            rules.append(
                Rule(
                    level=level,
                    users=list(raw.get("users") or ()),
                    user_groups=list(raw.get("userGroups") or ()),
                    verbs=list(raw.get("verbs") or ()),
                    resources=list(raw.get("resources") or ()),
                    namespaces=list(raw.get("namespaces") or ()),
                    non_resource_urls=list(raw.get("nonResourceURLs") or ()),
                )
            )
        return cls(rules, frozenset(document.get("omitStages") or ()))

    def level(self, request: Request) -> str:
        for rule in self.rules:
            if rule.matches(request):
                return rule.level
        return "None"


def _user(user: UserInfo) -> dict[str, Any]:
    info: dict[str, Any] = {"username": user.username}
    if user.uid:
        info["uid"] = user.uid
    info["groups"] = list(user.groups)
    if user.extra:
        info["extra"] = {k: list(v) for k, v in user.extra}
    return info


def build_event(
    request: Request,
    *,
    level: str,
    uri: str,
    source_ip: str,
    user_agent: str,
    received: datetime,
    completed: datetime,
    code: int,
    failure: Mapping[str, Any] | None,
    allowed: bool,
) -> dict[str, Any]:
    """One event as a real server writes it at `Metadata` (in an EventList's items: no kind
    or apiVersion of its own)."""
    event: dict[str, Any] = {
        "level": "Metadata" if level != "None" else level,
        "auditID": str(uuid.uuid4()),
        "stage": "ResponseComplete",
        "requestURI": uri,
        "verb": request.verb,
        "user": _user(request.user),
    }
    if request.impersonated is not None:
        event["impersonatedUser"] = _user(request.impersonated)
    event["sourceIPs"] = [source_ip] if source_ip else []
    if user_agent:
        event["userAgent"] = user_agent
    if request.resource_request and request.resource:
        ref: dict[str, Any] = {"resource": request.resource}
        if request.namespace:
            ref["namespace"] = request.namespace
        if request.name:
            ref["name"] = request.name
        if request.api_group:
            ref["apiGroup"] = request.api_group
        if request.api_version:
            ref["apiVersion"] = request.api_version
        if request.subresource:
            ref["subresource"] = request.subresource
        event["objectRef"] = ref
    status: dict[str, Any] = {"metadata": {}}
    if failure:
        status["status"] = "Failure"
        for key in ("message", "reason", "details"):
            if failure.get(key):
                status[key] = failure[key]
    status["code"] = code
    event["responseStatus"] = status
    event["requestReceivedTimestamp"] = micro_time(received)
    event["stageTimestamp"] = micro_time(completed)
    event["annotations"] = {
        "authorization.k8s.io/decision": "allow" if allowed else "forbid",
        "authorization.k8s.io/reason": "",
    }
    return event


@dataclass(frozen=True)
class WebhookTarget:
    """Where the webhook backend sends, read from its kubeconfig-format file."""

    url: str
    ssl_context: ssl.SSLContext | bool
    headers: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> WebhookTarget:
        config = yaml.safe_load(path.read_text()) or {}
        contexts = {c["name"]: c["context"] for c in config.get("contexts") or ()}
        clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or ()}
        users = {u["name"]: u.get("user") or {} for u in config.get("users") or ()}
        context = contexts.get(config.get("current-context") or "") or next(
            iter(contexts.values()), {"cluster": next(iter(clusters), ""), "user": ""}
        )
        cluster = clusters[context["cluster"]]
        user = users.get(context.get("user") or "", {})
        base = path.parent
        context_ssl: ssl.SSLContext | bool
        if cluster.get("insecure-skip-tls-verify"):
            context_ssl = False
        else:
            context_ssl = ssl.create_default_context()
            if cluster.get("certificate-authority-data"):
                pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
                context_ssl.load_verify_locations(cadata=pem)
            elif cluster.get("certificate-authority"):
                context_ssl.load_verify_locations(
                    cafile=str(base / cluster["certificate-authority"])
                )
            cert, key = user.get("client-certificate"), user.get("client-key")
            if cert and key:
                context_ssl.load_cert_chain(str(base / cert), str(base / key))
            elif user.get("client-certificate-data") and user.get("client-key-data"):
                directory = Path(tempfile.mkdtemp(prefix="kubeapi-audit-"))
                (directory / "tls.crt").write_bytes(
                    base64.b64decode(user["client-certificate-data"])
                )
                (directory / "tls.key").write_bytes(base64.b64decode(user["client-key-data"]))
                context_ssl.load_cert_chain(str(directory / "tls.crt"), str(directory / "tls.key"))
        headers = {"Content-Type": "application/json"}
        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = (base / user["tokenFile"]).read_text().strip()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return cls(str(cluster["server"]), context_ssl, headers)


class WebhookBackend:
    """Batches events and POSTs them; never blocks the request that made one."""

    def __init__(
        self,
        target: WebhookTarget,
        *,
        max_size: int = 400,
        max_wait: float = 30.0,
        buffer_size: int = 10_000,
        initial_backoff: float = 10.0,
    ) -> None:
        self.target = target
        self.max_size = max_size
        self.max_wait = max_wait
        self.initial_backoff = initial_backoff
        self.buffer: asyncio.Queue[dict[str, Any]] = asyncio.Queue(buffer_size)
        self.dropped = 0
        self.sent = 0
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def process(self, event: dict[str, Any]) -> None:
        try:
            self.buffer.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kubeapi-audit-webhook")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._sending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.buffer.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.buffer.get(), remaining))
                except TimeoutError:
                    break
            # Sending runs beside the batching, so a slow receiver never stops the buffer
            # from taking (or, when full, dropping) events; a receiver that keeps several
            # batches waiting loses the next ones.
            if len(self._sending) >= MAX_SENDING:
                self.dropped += len(batch)
                continue
            task = asyncio.create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = {
            "kind": "EventList",
            "apiVersion": "audit.k8s.io/v1",
            "metadata": {},
            "items": batch,
        }
        delay = self.initial_backoff
        for attempt in range(RETRY_STEPS):
            try:
                async with self._session.post(
                    self.target.url,
                    json=body,
                    headers=self.target.headers,
                    ssl=self.target.ssl_context,
                    timeout=aiohttp.ClientTimeout(total=30),
                ) as response:
                    if response.status < 300:
                        self.sent += len(batch)
                        return
                    log.warning("audit webhook answered %s", response.status)
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                log.warning("audit webhook failed: %s", error)
            if attempt < RETRY_STEPS - 1:
                await asyncio.sleep(delay)
                delay *= RETRY_FACTOR
        self.dropped += len(batch)


class Backend(Protocol):
    """Where events go: the webhook, the log file, or both."""

    def process(self, event: dict[str, Any]) -> None: ...
    def start(self) -> None: ...
    async def stop(self) -> None: ...


class LogBackend:
    """Events appended to a file as JSON lines, written as they happen (a reader counting
    requests sees every one once the request is answered)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def process(self, event: dict[str, Any]) -> None:
        if self._file is not None:
            # Each line is a whole Event, as kube-apiserver's log backend writes it (a
            # webhook batch's items carry neither field).
            line = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", **event}
            self._file.write(json.dumps(line, separators=(",", ":")) + "\n")

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", buffering=1, encoding="utf-8")

    async def stop(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Backends:
    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = list(backends)

    def process(self, event: dict[str, Any]) -> None:
        for backend in self.backends:
            backend.process(event)

    def start(self) -> None:
        for backend in self.backends:
            backend.start()

    async def stop(self) -> None:
        for backend in self.backends:
            await backend.stop()
