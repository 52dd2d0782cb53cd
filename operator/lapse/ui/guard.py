"""Who may talk to the page's server: only the browser its user opened, on this machine.

The server acts with the user's credentials, so any other caller would borrow them: a web
page in another tab (cross-site requests), a hostile domain resolving to 127.0.0.1 (DNS
rebinding), another local user guessing the port. Every request must therefore carry the
per-run token as the first path segment (static files and the event stream included — the
page's relative URLs carry it for free), name this server in `Host`, and, when the browser
sends an `Origin`, come from this very origin. No CORS header is ever sent, and every answer
forbids framing, sniffing, caching and referrers (the token is in the URL).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# State-changing requests come from the page's own scripts as JSON: a cross-site form cannot
# send that content type without a CORS preflight, which this server never grants.
JSON = "application/json"


@dataclass(frozen=True)
class Gate:
    """The per-run token and the one port this server answers on."""

    token: str
    port: int

    @classmethod
    def fresh(cls, port: int) -> Gate:
        return cls(token=secrets.token_urlsafe(24), port=port)

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset({f"127.0.0.1:{self.port}", f"localhost:{self.port}"})

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(f"http://{host}" for host in self.hosts)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.token}/"

    def refusal(self, request: web.Request) -> str | None:
        """Why `request` is refused, or None when it may pass."""
        if request.headers.get("Host", "") not in self.hosts:
            return "this server answers only to 127.0.0.1 and localhost on its own port"
        first, _, _ = request.rel_url.path.lstrip("/").partition("/")
        if not secrets.compare_digest(first.encode(), self.token.encode()):
            return "the URL lacks this run's token; open the URL kubectl lapse ui printed"
        origin = request.headers.get("Origin")
        if origin is not None and origin not in self.origins:
            return "requests from other sites are refused"
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return "requests from other sites are refused"
        if request.method not in ("GET", "HEAD"):
            if origin is None:
                return "a change must come from the page (no Origin header)"
            if request.content_type != JSON:
                return f"a change must be sent as {JSON}"
        return None


def guarded(gate: Gate) -> Middleware:
    """aiohttp middleware: refuse what `gate` refuses; stamp every answer with HEADERS."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        reason = gate.refusal(request)
        if reason is not None:
            response: web.StreamResponse = web.json_response({"error": reason}, status=403)
        else:
            try:
                response = await handler(request)
            except web.HTTPException as error:
                response = web.json_response({"error": error.reason}, status=error.status)
        response.headers.update(HEADERS)
        return response

    return middleware


def stamp_headers(response: web.StreamResponse) -> None:
    """For a streamed answer, whose headers leave before the middleware sees it."""
    response.headers.update(HEADERS)
