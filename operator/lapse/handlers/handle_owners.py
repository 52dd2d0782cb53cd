"""Every AccessRequest and BreakGlass event, read-only: what the audit sink knows of grants.

The audit sink (which matches audit events against grants' subjects, windows and namespaces)
runs on the leader only, and learns the grants from kopf's watches, from their first events
on, so a restart loses nothing. The grant index keeps a watch of its own (lapse.index): it
answers a standby's webhooks too, and a standby's kopf events wait for the lead.
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
    if services.grantor.activity.enabled:
        body = plain(event.get("object") or {})
        services.grantor.activity.track(kind, body, deleted=event.get("type") == "DELETED")


@kopf.on.event(*ACCESS_REQUEST.resource, id="owners-requests")
async def follow_request(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _follow(ACCESS_REQUEST.kind, event, memo)


@kopf.on.event(*BREAK_GLASS.resource, id="owners-breakglasses")
async def follow_breakglass(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _follow(BREAK_GLASS.kind, event, memo)
