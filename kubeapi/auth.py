"""Who is calling: bearer-token authentication and impersonation, as kube-apiserver does them.

Lapse's tests act as alice, bob or the operator's service account either with their own tokens
(the API server's static token file) or, like `kubectl --as alice --as-group devs`, through
impersonation headers that the authorizer must allow. Both yield the `UserInfo` that RBAC judges
and that admission webhooks receive as `userInfo`.
"""

from __future__ import annotations

import csv
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import errors
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

Authorize = Callable[[UserInfo, Attributes], tuple[bool, str]]


def _with_authenticated(user: UserInfo) -> UserInfo:
    if AUTHENTICATED in user.groups:
        return user
    return UserInfo(user.username, (*user.groups, AUTHENTICATED), user.uid, user.extra)


class Authenticator:
    """Bearer tokens to users, like `--token-auth-file`; anonymous access for no token."""

    def __init__(self, tokens: dict[str, UserInfo] | None = None) -> None:
        self._tokens: dict[str, UserInfo] = {}
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


def split_service_account(username: str) -> tuple[str, str] | None:
    """(namespace, name) of `system:serviceaccount:NS:NAME`, else None."""
    if not username.startswith(SA_PREFIX):
        return None
    parts = username[len(SA_PREFIX) :].split(":")
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]


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


def impersonate(user: UserInfo, headers: Mapping[str, str], authorize: Authorize) -> UserInfo:
    """The user a request acts as after its `Impersonate-*` headers, as `WithImpersonation`:
    each requested user, service account, group, extra value and uid must be allowed with the
    `impersonate` verb, else 403; without impersonation headers the caller itself."""
    requested_user = _get(headers, IMPERSONATE_USER) or ""
    groups_requested = _get_all(headers, IMPERSONATE_GROUP)
    extras = _extra_headers(headers)
    uid_requested = _get(headers, IMPERSONATE_UID) or ""
    if not (requested_user or groups_requested or extras or uid_requested):
        return user
    if not requested_user:
        raise errors.internal(
            "requested impersonation of groups, extra or uid without impersonating a user"
        )

    checks: list[Attributes] = []
    groups: list[str] = []
    sa = split_service_account(requested_user)
    if sa is not None:
        checks.append(Attributes("impersonate", "serviceaccounts", "", "", sa[0], sa[1]))
        if not groups_requested:
            groups = [SA_GROUP, f"{SA_GROUP}:{sa[0]}"]
    else:
        checks.append(Attributes("impersonate", "users", "", "", "", requested_user))
    for group in groups_requested:
        checks.append(Attributes("impersonate", "groups", "", "", "", group))
        groups.append(group)
    extra: dict[str, list[str]] = {}
    for key, value in extras:
        checks.append(
            Attributes("impersonate", "userextras", "authentication.k8s.io", key, "", value)
        )
        extra.setdefault(key, []).append(value)
    if uid_requested:
        checks.append(
            Attributes("impersonate", "uids", "authentication.k8s.io", "", "", uid_requested)
        )

    for attrs in checks:
        allowed, reason = authorize(user, attrs)
        if not allowed:
            raise _forbidden(user, attrs, reason)

    if requested_user != ANONYMOUS:
        if AUTHENTICATED not in groups and UNAUTHENTICATED not in groups:
            groups.append(AUTHENTICATED)
    elif UNAUTHENTICATED not in groups:
        groups.append(UNAUTHENTICATED)
    return UserInfo(
        requested_user,
        tuple(groups),
        uid_requested,
        tuple((k, tuple(v)) for k, v in extra.items()),
    )


def _forbidden(user: UserInfo, attrs: Attributes, reason: str) -> errors.ApiError:
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    scope = f' in the namespace "{attrs.namespace}"' if attrs.namespace else " at the cluster scope"
    message = (
        f'{qualified} "{attrs.name}" is forbidden: User "{user.username}" cannot impersonate '
        f'resource "{resource}" in API group "{attrs.api_group}"{scope}'
    )
    if reason:
        message += f": {reason}"
    details: dict[str, Any] = {"name": attrs.name, "kind": attrs.resource}
    if attrs.api_group:
        details["group"] = attrs.api_group
    return errors.ApiError(403, "Forbidden", message, details)
