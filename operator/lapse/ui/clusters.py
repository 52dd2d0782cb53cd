"""The clusters one page shows: one, as `kubectl lapse ui` always did, or a fleet of contexts.

Each cluster keeps its own Lapse, and the page never blends them: every cluster has its own
client (its kubeconfig context, with the user's identity flags), its own feed and its own
scope — who the user is there and which namespaces they may list. Every object the page gets
names its cluster, and every action names the cluster it goes to; the server routes by that
name and never guesses. A cluster that does not answer when the page starts is asked again
until it does: the page starts with the clusters that answer and adds the others as they come.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lapse.cli.client import Kube
from lapse.cli.errors import CliError
from lapse.cli.fleet import unreachable_error
from lapse.core.kinds import ACCESS_REQUEST, BREAK_GLASS
from lapse.core.models import UserInfo
from lapse.ui.feed import CONNECTING, RETRY_SECONDS, UNREACHABLE_MAX_SECONDS, Feed

# What the start-up probe is called among the feed's askers (beside the kinds it follows).
PROBE = "start"


@dataclass(frozen=True)
class Scope:
    """Where the page looks: the user's identity and the namespace of its requests
    (None: every namespace, when the user may list them there)."""

    me: UserInfo | None
    namespace: str | None
    default_namespace: str


def probe_scope(kube: Kube, explicit_namespace: bool) -> Scope:
    """The user's scope in one cluster of a fleet, as `kubectl lapse ui` finds it for one:
    every namespace when requests may be listed there, else the namespace of `-n` or of the
    context. Raises CliError when the cluster does not answer, so it is asked again later
    rather than shown with a scope guessed while it was away."""
    namespace = kube.namespace if explicit_namespace else None
    try:
        kube.collection(ACCESS_REQUEST, namespace)
    except CliError as error:
        if unreachable_error(error):
            raise
        namespace = kube.namespace
    return Scope(me=kube.whoami(), namespace=namespace, default_namespace=kube.namespace)


def user_view(me: UserInfo | None) -> dict[str, Any] | None:
    return {"username": me.username, "groups": me.groups} if me else None


@dataclass
class Member:
    """One cluster of the page: its name (the kubeconfig context; empty for the one cluster
    of a plain `kubectl lapse ui`), its client, its feed and, once it answered, its scope."""

    name: str
    kube: Kube
    feed: Feed
    scope: Scope | None = None
    # Set once the cluster answered or failed to, for the first time.
    settled: threading.Event = field(default_factory=threading.Event)

    def follow(self, scope: Scope) -> None:
        self.scope = scope
        self.feed.follow(ACCESS_REQUEST, scope.namespace)
        self.feed.follow(BREAK_GLASS, None)
        self.settled.set()

    def start(self, explicit_namespace: bool) -> None:
        """Find the scope in a thread, asking again while the cluster does not answer."""
        threading.Thread(
            target=self._probe, args=(explicit_namespace,), name=f"probe-{self.name}", daemon=True
        ).start()

    def _probe(self, explicit_namespace: bool) -> None:
        delay = RETRY_SECONDS
        while not self.feed.stopped:
            try:
                # The feed's client: the probe lists as much as the feed does.
                scope = probe_scope(self.feed.kube, explicit_namespace)
            except CliError as error:
                self.feed.lost(PROBE, error.message)
                self.settled.set()
                self.feed.wait(delay)
                delay = min(delay * 2, UNREACHABLE_MAX_SECONDS)
                continue
            # The scope is set before the feed says the cluster answered: the page's news
            # of it then carries who the user is there.
            self.scope = scope
            self.feed.reached(PROBE)
            self.follow(scope)
            return

    def info(self) -> dict[str, Any]:
        """The cluster as the page's chips, banners and forms need it."""
        scope, feed = self.scope, self.feed
        state = feed.state if scope is not None or feed.unreachable else CONNECTING
        return {
            "name": self.name,
            "state": state,
            "scoped": scope is not None,
            "why": feed.why,
            "me": user_view(scope.me) if scope else None,
            "namespace": scope.namespace if scope else None,
            "defaultNamespace": scope.default_namespace if scope else self.kube.namespace,
            "server": self.kube.server,
            "refused": dict(feed.refused),
        }


class Clusters:
    """The page's clusters in the order given; `many` when the page spans contexts (the page
    then names each object's cluster and asks which cluster a form is for)."""

    def __init__(self, members: Iterable[Member], *, many: bool) -> None:
        self.members: dict[str, Member] = {m.name: m for m in members}
        self.many = many

    @classmethod
    def single(cls, kube: Kube, scope: Scope, feed: Feed) -> Clusters:
        member = Member("", kube, feed, scope)
        member.settled.set()
        return cls([member], many=False)

    def first(self) -> Member:
        return next(iter(self.members.values()))

    def find(self, name: str | None) -> Member | None:
        """The cluster a request names. Without a name only a one-cluster page has an answer:
        across clusters an action must say where it goes."""
        if not name:
            return None if self.many else self.first()
        return self.members.get(name)

    def me(self) -> UserInfo | None:
        """Who the user is, for the header: the first cluster that said."""
        for member in self.members.values():
            if member.scope is not None and member.scope.me is not None:
                return member.scope.me
        return None

    def stop(self) -> None:
        for member in self.members.values():
            member.feed.stop()

    async def settled(self, seconds: float) -> None:
        """Until every cluster answered or failed once, or `seconds` passed."""

        def wait() -> None:
            ends = time.monotonic() + seconds
            for member in self.members.values():
                member.settled.wait(max(0.0, ends - time.monotonic()))

        await asyncio.to_thread(wait)
