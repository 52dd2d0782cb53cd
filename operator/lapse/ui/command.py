"""`kubectl lapse ui`: find the user's scope, start the server on loopback, print its URL.

The port is free (or chosen), the token new on every run; the URL is printed (and opened
when a graphical browser is there) and the server runs until Ctrl-C.

With `--contexts` or `--all-contexts` the page spans those kubeconfig contexts: one client per
context (the user's identity flags kept), each cluster found and followed on its own, and the
URL printed once every cluster answered or `--cluster-timeout` passed — a cluster away at start
joins the page when it answers.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import webbrowser
from dataclasses import replace
from typing import Any

from aiohttp import web

from lapse.cli.client import Connection, Kube
from lapse.cli.errors import CliError, ExitCode
from lapse.cli.fleet import DEFAULT_CLUSTER_TIMEOUT, resolve_contexts
from lapse.cli.objects import Io
from lapse.core.kinds import ACCESS_REQUEST, BREAK_GLASS
from lapse.ui.clusters import Clusters, Member, Scope
from lapse.ui.feed import Feed
from lapse.ui.guard import Gate
from lapse.ui.server import Server


def _scope(kube: Kube, explicit_namespace: bool) -> Scope:
    """All namespaces when the user may list requests there (approvers often may), else the
    namespace of `-n` or of the kubeconfig's context."""
    me = kube.whoami()
    namespace: str | None = kube.namespace
    if not explicit_namespace:
        try:
            kube.collection(ACCESS_REQUEST, None)
            namespace = None
        except CliError:
            pass
    return Scope(me=me, namespace=namespace, default_namespace=kube.namespace)


def _graphical() -> bool:
    """A browser would open in a window, not take over this terminal (a text browser)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as error:
        sock.close()
        raise CliError(f"cannot listen on 127.0.0.1:{port}: {error.strerror}") from None
    return sock


def _contexts(kube: Kube, args: Any) -> list[str] | None:
    """The contexts the page spans, or None for the one cluster of a plain `kubectl lapse ui`."""
    named = getattr(args, "contexts", None)
    every = bool(getattr(args, "all_contexts", False))
    if not named and not every:
        return None
    return resolve_contexts(kube.connection.kubeconfig, named=named, all_contexts=every)


async def _one(kube: Kube) -> tuple[Clusters, str]:
    scope = await asyncio.to_thread(_scope, kube, bool(kube.connection.namespace))
    feed = Feed(kube, asyncio.get_running_loop())
    feed.follow(ACCESS_REQUEST, scope.namespace)
    feed.follow(BREAK_GLASS, None)
    who = scope.me.username if scope.me else "you"
    where = f"namespace {scope.namespace}" if scope.namespace else "all namespaces"
    return Clusters.single(kube, scope, feed), f"Lapse for {who} ({where})"


# How long the feed of a cluster in a fleet waits for a whole list: the client's default.
LIST_SECONDS = Connection().request_timeout


async def _many(kube: Kube, contexts: list[str], cluster_timeout: float) -> tuple[Clusters, str]:
    loop = asyncio.get_running_loop()
    members = []
    for context in contexts:
        # Each cluster's requests give up after --cluster-timeout: one that hangs shows as
        # unreachable instead of holding a click. Its feed's whole lists may take longer on a
        # big cluster that answers well; a cluster gone away refuses or cuts at once anyway.
        connection = replace(kube.connection, context=context, request_timeout=cluster_timeout)
        lists = replace(connection, request_timeout=max(cluster_timeout, LIST_SECONDS))
        members.append(Member(context, Kube(connection), Feed(Kube(lists), loop, cluster=context)))
    clusters = Clusters(members, many=True)
    explicit = bool(kube.connection.namespace)
    for member in members:
        member.start(explicit)
    await clusters.settled(cluster_timeout + 1.0)
    me = clusters.me()
    who = me.username if me else "you"
    return clusters, f"Lapse for {who} across {', '.join(contexts)}"


async def _serve(kube: Kube, io: Io, args: Any) -> None:
    contexts = _contexts(kube, args)
    timeout = float(getattr(args, "cluster_timeout", None) or DEFAULT_CLUSTER_TIMEOUT)
    clusters, hello = await (_one(kube) if contexts is None else _many(kube, contexts, timeout))
    try:
        sock = _bind(args.port)
    except CliError:
        clusters.stop()
        raise
    gate = Gate.fresh(sock.getsockname()[1])
    runner = web.AppRunner(Server.of(gate, clusters).app(), access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock, shutdown_timeout=1.0)
    await site.start()
    io.result(f"{hello} at {gate.url()}")
    for member in clusters.members.values():
        if member.scope is None:
            why = member.feed.why or "no answer yet"
            io.progress(f"{member.name}: unreachable ({why}); the page shows it when it answers.")
    io.progress("Ctrl-C stops it. The URL holds this run's token: do not share it.")
    if args.open and _graphical():
        await asyncio.to_thread(webbrowser.open, gate.url())
    try:
        await asyncio.Event().wait()
    finally:
        clusters.stop()
        await runner.cleanup()


def run_ui(kube: Kube, io: Io, args: Any) -> int:
    try:
        asyncio.run(_serve(kube, io, args))
    except KeyboardInterrupt:
        return ExitCode.OK
    return ExitCode.OK
