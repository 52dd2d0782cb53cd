"""The audit sink's view of the grants: every AccessRequest and BreakGlass event, read-only.

The sink matches audit events against grants' subjects, windows and namespaces; it learns them
from the watches Lapse already has, and an operator that restarts learns them again (with the
activity already written to their status) from the first events of those watches.
"""

from __future__ import annotations

from typing import Any

import kopf

from lapse.core.kinds import ACCESS_REQUEST, BREAK_GLASS
from lapse.handlers.bodies import plain
from lapse.services import Services


def _follow(kind: str, event: kopf.RawEvent, memo: kopf.Memo) -> None:
    services = getattr(memo, "services", None)
    if not isinstance(services, Services) or not services.grantor.activity.enabled:
        return
    body = event.get("object") or {}
    services.grantor.activity.track(kind, plain(body), deleted=event.get("type") == "DELETED")


@kopf.on.event(*ACCESS_REQUEST.resource, id="activity-requests")
async def follow_request(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _follow(ACCESS_REQUEST.kind, event, memo)


@kopf.on.event(*BREAK_GLASS.resource, id="activity-breakglasses")
async def follow_breakglass(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _follow(BREAK_GLASS.kind, event, memo)
