"""Who is calling: bearer-token authentication and impersonation, as kube-apiserver does them.

Lapse's tests act as alice, bob or the operator's service account either with their own tokens
(the API server's static token file, or service account tokens: see tokens.py) or, like
`kubectl --as alice --as-group devs`, through impersonation headers that the authorizer must
allow, in the constrained modes of KEP-5284 or the legacy `impersonate` verb. Both yield the
`UserInfo` that RBAC judges and that admission webhooks receive as `userInfo`.
"""

from __future__ import annotations

import csv
import json
import re
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import errors, rbac
from .identity import Attributes, UserInfo

ANONYMOUS = "system:anonymous"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
SA_PREFIX = "system:serviceaccount:"
SA_GROUP = "system:serviceaccounts"

IMPERSONATE_USER = "Impersonate-User"
IMPERSONATE_GROUP = "Impersonate-Group"
IMPERSONATE_UID = "Impersonate-Uid"
IMPERSONATE_EXTRA = "impersonate-extra-"
NODE_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
MASTERS = "system:masters"
AUTH_GROUP = "authentication.k8s.io"
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
# The constrained modes in the order the API server tries them; "" is legacy impersonation.
MODES = ("associated-node", "arbitrary-node", "serviceaccount", "user-info", "")
# From this many groups or extra values on, a constrained mode first asks for all at once.
MANY_CHECKS = 4

Authorize = Callable[[UserInfo, Attributes], tuple[bool, str]]


def _with_authenticated(user: UserInfo) -> UserInfo:
    if AUTHENTICATED in user.groups:
        return user
    return UserInfo(user.username, (*user.groups, AUTHENTICATED), user.uid, user.extra)


class Authenticator:
    """Bearer tokens to users, like `--token-auth-file`, then whatever `fallbacks` (service
    account tokens) make of a token the file does not hold; anonymous access for no token."""

    def __init__(
        self,
        tokens: dict[str, UserInfo] | None = None,
        fallbacks: list[Callable[[str], UserInfo | None]] | None = None,
    ) -> None:
        self._tokens: dict[str, UserInfo] = {}
        self.fallbacks = list(fallbacks or ())
        for token, user in (tokens or {}).items():
            self.add(token, user)

    @classmethod
    def from_token_file(cls, path: str | Path) -> Authenticator:
        """Read the static token CSV: `token,user,uid,"group1,group2"` (groups optional)."""
        auth = cls()
        with open(path, newline="") as handle:
            for lineno, record in enumerate(csv.reader(handle), start=1):
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue
                if len(record) < 3:
                    raise ValueError(f"{path}:{lineno}: need at least 3 columns: token,user,uid")
                groups = ()
                if len(record) >= 4:
                    groups = tuple(g.strip() for g in record[3].split(",") if g.strip())
                auth.add(record[0].strip(), UserInfo(record[1].strip(), groups, record[2].strip()))
        return auth

    def add(self, token: str, user: UserInfo) -> None:
        self._tokens[token] = user

    def authenticate(self, headers: Mapping[str, str]) -> UserInfo:
        """The caller of one request: its bearer token's user (plus `system:authenticated`),
        `system:anonymous` without a token, 401 for a token nobody holds."""
        token = _bearer_token(headers)
        if token is None:
            return UserInfo(ANONYMOUS, (UNAUTHENTICATED,))
        user = self._tokens.get(token)
        for fallback in self.fallbacks:
            if user is not None:
                break
            user = fallback(token)
        if user is None:
            raise errors.unauthorized()
        return _with_authenticated(user)


def _bearer_token(headers: Mapping[str, str]) -> str | None:
    value = _get(headers, "Authorization")
    if not value:
        return None
    parts = value.strip().split(" ")
    if len(parts) < 2 or parts[0].lower() != "bearer":
        return None
    token = parts[1].strip()
    return token or None


def _get(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                return candidate
    return value


def _get_all(headers: Mapping[str, str], name: str) -> list[str]:
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall(name, []))
    lowered = name.lower()
    found: list[str] = []
    for key, value in headers.items():
        if key.lower() == lowered:
            found.extend(value if isinstance(value, list | tuple) else [value])
    return found


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _is_label(name: str) -> bool:
    return len(name) <= 63 and _DNS_LABEL.fullmatch(name) is not None


def _is_subdomain(name: str) -> bool:
    return len(name) <= 253 and _DNS_SUBDOMAIN.fullmatch(name) is not None


def split_service_account(username: str) -> tuple[str, str] | None:
    """(namespace, name) of `system:serviceaccount:NS:NAME` with valid names, else None."""
    if not username.startswith(SA_PREFIX):
        return None
    parts = username[len(SA_PREFIX) :].split(":")
    if len(parts) != 2 or not _is_label(parts[0]) or not _is_subdomain(parts[1]):
        return None
    return parts[0], parts[1]


def node_name(username: str) -> str | None:
    """The node of `system:node:NAME` (a valid node name), else None."""
    if not username.startswith(NODE_PREFIX):
        return None
    name = username[len(NODE_PREFIX) :]
    return name if _is_subdomain(name) else None


def _extra_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """(key, value) of every `Impersonate-Extra-KEY` header, in header order."""
    seen: list[tuple[str, str]] = []
    for key, value in headers.items():
        if key.lower().startswith(IMPERSONATE_EXTRA):
            extra_key = urllib.parse.unquote(key[len(IMPERSONATE_EXTRA) :].lower())
            values: Any = value
            for item in values if isinstance(values, list | tuple) else [values]:
                seen.append((extra_key, item))
    return seen


@dataclass(frozen=True)
class Wanted:
    """Who the impersonation headers ask for, as given (`processImpersonationHeaders`)."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def only_username(self) -> bool:
        return not (self.uid or self.groups or self.extra)


def _go_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _go_default_info(wanted: Wanted) -> str:
    """`%#v` of the `*user.DefaultInfo` the API server prints in its 400."""
    groups = (
        "[]string{" + ", ".join(_go_string(g) for g in wanted.groups) + "}"
        if wanted.groups
        else "[]string(nil)"
    )
    extra = (
        "map[string][]string{"
        + ", ".join(
            f"{_go_string(k)}:[]string{{{', '.join(_go_string(v) for v in values)}}}"
            for k, values in sorted(wanted.extra)
        )
        + "}"
        if wanted.extra
        else "map[string][]string(nil)"
    )
    return (
        f"&user.DefaultInfo{{Name:{_go_string(wanted.name)}, UID:{_go_string(wanted.uid)}, "
        f"Groups:{groups}, Extra:{extra}}}"
    )


def wanted_user(headers: Mapping[str, str]) -> Wanted | None:
    """The impersonation a request asks for, None for none; 400 for groups, a uid or extra
    without a user."""
    extra: dict[str, list[str]] = {}
    for key, value in _extra_headers(headers):
        extra.setdefault(key, []).append(value)
    wanted = Wanted(
        _get(headers, IMPERSONATE_USER) or "",
        _get(headers, IMPERSONATE_UID) or "",
        tuple(_get_all(headers, IMPERSONATE_GROUP)),
        tuple((k, tuple(v)) for k, v in extra.items()),
    )
    if not wanted.name:
        if wanted.uid or wanted.groups or wanted.extra:
            raise errors.bad_request(
                f"requested {_go_default_info(wanted)} without impersonating a user name"
            )
        return None
    return wanted


class ModeMemory:
    """The impersonation mode that last let each impersonator through, tried first next time
    (the API server's mode index cache: an LRU of 10,000 usernames). It decides which refusal
    a request that every mode refuses gets: the first mode tried gives its words."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._last: OrderedDict[str, int] = OrderedDict()

    def get(self, username: str) -> int | None:
        index = self._last.get(username)
        if index is not None:
            self._last.move_to_end(username)
        return index

    def set(self, username: str, index: int) -> None:
        self._last[username] = index
        self._last.move_to_end(username)
        while len(self._last) > self._size:
            self._last.popitem(last=False)


def impersonate(
    user: UserInfo,
    headers: Mapping[str, str],
    authorize: Authorize,
    request: Attributes | None = None,
    memory: ModeMemory | None = None,
) -> UserInfo:
    """The user a request acts as after its `Impersonate-*` headers, as kube-apiserver v1.36's
    `WithConstrainedImpersonation` decides it; without impersonation headers the caller.

    The modes are tried in the API server's order (the one that last let this caller through
    first): `associated-node` (a service account impersonating the node its pod runs on),
    `arbitrary-node`, `serviceaccount` (a node or service account asked for by username
    alone), `user-info` (anyone else), each needing `impersonate-on:<mode>:<verb>` on what
    `request` asks for and `impersonate:<mode>` on the user (group `authentication.k8s.io`);
    then the legacy `impersonate` verb. The first refusal met is the answer when no mode lets
    the caller through. `request` defaults to a GET of `/`, for callers that have none."""
    wanted = wanted_user(headers)
    if wanted is None:
        return user
    target = request or Attributes("get", path="/", resource_request=False)
    last = memory.get(user.username) if memory is not None else None
    order = ([last] if last is not None else []) + [i for i in range(len(MODES)) if i != last]
    first_error: errors.ApiError | None = None
    for index in order:
        try:
            acting = _try_mode(MODES[index], user, wanted, target, authorize)
        except errors.ApiError as exc:
            first_error = first_error or exc
            continue
        if acting is None:
            continue
        if memory is not None:
            memory.set(user.username, index)
        return acting
    raise first_error or errors.internal("all impersonation modes failed")


def _mode_applies(mode: str, user: UserInfo, wanted: Wanted) -> bool:
    node = node_name(wanted.name)
    account = split_service_account(wanted.name)
    if mode == "associated-node":
        extra = dict(user.extra).get(NODE_NAME_EXTRA, ())
        return (
            wanted.only_username
            and node is not None
            and split_service_account(user.username) is not None
            and len(extra) == 1
            and extra[0] == node
        )
    if mode == "arbitrary-node":
        return wanted.only_username and node is not None
    if mode == "serviceaccount":
        return wanted.only_username and account is not None
    if mode == "user-info":
        return node is None and account is None
    return True  # legacy impersonation


def _try_mode(
    mode: str, user: UserInfo, wanted: Wanted, request: Attributes, authorize: Authorize
) -> UserInfo | None:
    """The impersonated user if `mode` lets the caller through, None if it does not apply,
    403 if it applies and refuses."""
    if not _mode_applies(mode, user, wanted):
        return None
    if mode:
        _check(user, replace(request, verb=f"impersonate-on:{mode}:{request.verb}"), authorize)
    constrained = bool(mode)
    verb = f"impersonate:{mode}" if constrained else "impersonate"
    # Users and groups are `authentication.k8s.io` resources for the constrained modes,
    # core ones for the legacy verb; uids and userextras always belong to the former.
    group = AUTH_GROUP if constrained else ""
    groups = list(wanted.groups)
    attrs = Attributes(verb, "users", group, "", "", wanted.name)
    node = node_name(wanted.name) if constrained else None
    if node is not None:
        attrs = replace(attrs, resource="nodes", name="*" if mode == "associated-node" else node)
        if wanted.groups:
            why = f"when impersonating a node, cannot impersonate groups {_go_list(groups)}"
            raise _refusal(user, attrs, why)
        groups = [NODES_GROUP]
    account = split_service_account(wanted.name)
    if account is not None:
        attrs = replace(attrs, resource="serviceaccounts", namespace=account[0], name=account[1])
        if constrained and wanted.groups:
            raise _refusal(
                user,
                attrs,
                f"when impersonating a service account, cannot impersonate groups "
                f"{_go_list(groups)}",
            )
        if not wanted.groups:
            groups = [SA_GROUP, f"{SA_GROUP}:{account[0]}"]
    _check(user, attrs, authorize)
    if wanted.uid:
        _check(user, Attributes(verb, "uids", AUTH_GROUP, "", "", wanted.uid), authorize)
    if wanted.groups:
        _check_groups(user, verb, group, constrained, wanted.groups, authorize)
    if wanted.extra:
        _check_extra(user, verb, constrained, wanted.extra, authorize)
    if wanted.name == ANONYMOUS:
        if UNAUTHENTICATED not in groups:
            groups.append(UNAUTHENTICATED)
    elif UNAUTHENTICATED not in groups and AUTHENTICATED not in groups:
        groups.append(AUTHENTICATED)
    return UserInfo(wanted.name, tuple(groups), wanted.uid, tuple(sorted(wanted.extra)))


def _check_groups(
    user: UserInfo,
    verb: str,
    group: str,
    constrained: bool,
    groups: tuple[str, ...],
    authorize: Authorize,
) -> None:
    base = Attributes(verb, "groups", group)
    if constrained:
        if "" in groups:
            raise _refusal(user, base, "impersonating the empty string group is not allowed")
        if MASTERS in groups:
            raise _refusal(
                user,
                replace(base, name=MASTERS),
                "impersonating the system:masters group is not allowed",
            )
        if len(groups) >= MANY_CHECKS and authorize(user, replace(base, name="*"))[0]:
            return
    for name in groups:
        _check(user, replace(base, name=name), authorize)


def _extra_problem(extra: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    for key, values in extra:
        if not key:
            return "impersonating the empty string key in extra is not allowed"
        domain, _, path = key.partition("/")
        if not path or not _is_subdomain(domain):
            return (
                "impersonating an invalid key in extra is not allowed: extra.key: Invalid "
                f'value: {_go_string(key)}: must be a domain-prefixed path (such as "acme.io/foo")'
            )
        if key != key.lower():
            return f"impersonating a non-lowercase key in extra is not allowed: {_go_string(key)}"
        if not values:
            return "impersonating empty values in extra is not allowed"
        if "" in values:
            return "impersonating the empty string value in extra is not allowed"
    return ""


def _check_extra(
    user: UserInfo,
    verb: str,
    constrained: bool,
    extra: tuple[tuple[str, tuple[str, ...]], ...],
    authorize: Authorize,
) -> None:
    base = Attributes(verb, "userextras", AUTH_GROUP)
    if constrained:
        problem = _extra_problem(extra)
        if problem:
            raise _refusal(user, base, problem)
        large = len(extra) >= MANY_CHECKS or sum(len(v) for _, v in extra) >= MANY_CHECKS
        if large and authorize(user, replace(base, subresource="*", name="*"))[0]:
            return
    for key, values in extra:
        for value in values:
            _check(user, replace(base, subresource=key, name=value), authorize)


def _go_list(items: list[str]) -> str:
    """`%q` of a Go string slice."""
    return "[" + " ".join(_go_string(i) for i in items) + "]"


def _refusal(user: UserInfo, attrs: Attributes, reason: str) -> errors.ApiError:
    return rbac.forbidden(user, attrs, reason)


def _check(user: UserInfo, attrs: Attributes, authorize: Authorize) -> None:
    allowed, reason = authorize(user, attrs)
    if not allowed:
        raise rbac.forbidden(user, attrs, reason)
