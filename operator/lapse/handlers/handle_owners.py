"""Every AccessRequest and BreakGlass event, read-only: what Lapse keeps in memory of grants.

The grant index (lapse.index: the foothold webhook's and the role watch's lookups) and the
audit sink (which matches audit events against grants' subjects, windows and namespaces)
learn the grants from the watches Lapse already has. Both are filled before kopf starts
watching or learn again from the first events of these watches, so a restart loses nothing.
"""

from __future__ import annotations

from typing import Any

import kopf

from lapse.core.kinds import ACCESS_REQUEST, BREAK_GLASS
from lapse.handlers.bodies import plain
from lapse.services import Services


def _follow(kind: str, event: kopf.RawEvent, memo: kopf.Memo) -> None:
    services = getattr(memo, "services", None)
    if not isinstance(services, Services):
        return
    body = plain(event.get("object") or {})
    deleted = event.get("type") == "DELETED"
    services.index.observe(kind, body, deleted=deleted)
    if services.grantor.activity.enabled:
        services.grantor.activity.track(kind, body, deleted=deleted)


@kopf.on.event(*ACCESS_REQUEST.resource, id="owners-requests")
async def follow_request(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _follow(ACCESS_REQUEST.kind, event, memo)


@kopf.on.event(*BREAK_GLASS.resource, id="owners-breakglasses")
async def follow_breakglass(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _follow(BREAK_GLASS.kind, event, memo)
