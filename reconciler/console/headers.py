"""Security headers on every console response (pages, fragments, error pages, static
files), added by one ASGI middleware so no screen can forget them.

- ``Content-Security-Policy``: scripts and styles from the console's own static files
  only; no inline script, no ``eval``, no plug-ins, forms post back here only, and no
  framing (``frame-ancestors 'none'``, with ``X-Frame-Options: DENY`` for browsers
  that predate it). Should a value ever escape the templates' autoescaping, the
  browser still refuses to run it.
- ``X-Content-Type-Options: nosniff``: a CSV or YAML download is never run as HTML.
- ``Referrer-Policy: same-origin``: a link out to the git host does not carry the
  console's URL (its query holds the searched recipient).
- ``Cache-Control: no-store`` on everything but the static files: pages hold
  tenants' data and must not stay in a shared or browser cache after sign-out.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reconciler.console.errors import console_path

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
STATIC_PREFIX = "/console/static/"


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = console_path(scope) if scope["type"] == "http" else None
        if path is None:
            await self.app(scope, receive, send)
            return
        static = path.startswith(STATIC_PREFIX)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                if not static:  # static files keep their own long-lived caching
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, with_headers)
