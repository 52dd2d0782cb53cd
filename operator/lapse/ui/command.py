"""`kubectl lapse ui`: find the user's scope, start the server on loopback, print its URL.

The port is free (or chosen), the token new on every run; the URL is printed (and opened
when a graphical browser is there) and the server runs until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import webbrowser
from typing import Any

from aiohttp import web

from lapse.cli.client import Kube
from lapse.cli.errors import CliError, ExitCode
from lapse.cli.objects import Io
from lapse.core.kinds import ACCESS_REQUEST, BREAK_GLASS
from lapse.ui.feed import Feed
from lapse.ui.guard import Gate
from lapse.ui.server import Scope, Server


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


async def _serve(kube: Kube, io: Io, args: Any) -> None:
    scope = await asyncio.to_thread(_scope, kube, bool(kube.connection.namespace))
    sock = _bind(args.port)
    gate = Gate.fresh(sock.getsockname()[1])
    feed = Feed(kube, asyncio.get_running_loop())
    feed.follow(ACCESS_REQUEST, scope.namespace)
    feed.follow(BREAK_GLASS, None)
    runner = web.AppRunner(Server(kube, gate, scope, feed).app(), access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock, shutdown_timeout=1.0)
    await site.start()
    who = scope.me.username if scope.me else "you"
    where = f"namespace {scope.namespace}" if scope.namespace else "all namespaces"
    io.result(f"Lapse for {who} ({where}) at {gate.url()}")
    io.progress("Ctrl-C stops it. The URL holds this run's token: do not share it.")
    if args.open and _graphical():
        await asyncio.to_thread(webbrowser.open, gate.url())
    try:
        await asyncio.Event().wait()
    finally:
        feed.stop()
        await runner.cleanup()


def run_ui(kube: Kube, io: Io, args: Any) -> int:
    try:
        asyncio.run(_serve(kube, io, args))
    except KeyboardInterrupt:
        return ExitCode.OK
    return ExitCode.OK
