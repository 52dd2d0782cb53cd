"""Who is asking, and what for: the values authentication, authorization and admission share.

`UserInfo` is what authentication (bearer token, then impersonation) yields and what admission
webhooks receive as `userInfo`; `Attributes` is what the authorizer judges, as in the API
server's `authorizer.Attributes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ADMIN_GROUP = "system:masters"


@dataclass(frozen=True)
class UserInfo:
    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups

    def to_review(self) -> dict[str, Any]:
        """The `userInfo` block of an AdmissionReview or a SubjectAccessReview status."""
        info: dict[str, Any] = {"username": self.username, "groups": list(self.groups)}
        if self.uid:
            info["uid"] = self.uid
        if self.extra:
            info["extra"] = {k: list(v) for k, v in self.extra}
        return info


@dataclass(frozen=True)
class Attributes:
    """One request as the authorizer sees it."""

    # get, list, watch, create, update, patch, delete, deletecollection, impersonate, bind, escalate
    verb: str
    resource: str = ""  # plural, e.g. "rolebindings"; empty for a non-resource request
    api_group: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # for non-resource requests, e.g. "/version"
    resource_request: bool = True
