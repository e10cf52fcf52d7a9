"""What the console shows when a page cannot be: sign-in, 403, 404 and 500 pages.

:class:`ConsoleErrors` is an ASGI middleware that acts on ``/console`` paths only,
so every screen module's routes get the same pages whatever router they were
built with, and the ``/v1`` API keeps its JSON problems. An exception the app
already has a handler for (the store's errors) never reaches a middleware, so
:func:`console_first` wraps that handler for the console's paths. No page ever shows a
traceback: an unexpected exception is logged with a short reference, and the
page shows only that reference, for the operator to find the log line.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reconciler.console.oidc import NoRole
from reconciler.console.render import page
from reconciler.console.session import CsrfRefused, Sessions, SignInRequired
from reconciler.runtime.access import Forbidden
from reconciler.state.base import StoreError

log = logging.getLogger("reconciler.console")


class NotFound(Exception):
    """A console URL names something that does not exist (or the principal may not see:
    the two look the same, so a namespace's names do not leak to another's users)."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(what)


def console_path(scope: Scope) -> str | None:
    """The path below the app's root when it is the console's, else None."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path if path == "/console" or path.startswith("/console/") else None


class ConsoleErrors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or console_path(scope) is None:
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started:  # half a page went out: nothing better to do than end it
                raise
            await error_response(Request(scope, receive), exc)(scope, receive, send)


def error_response(request: Request, exc: Exception) -> Response:
    if isinstance(exc, SignInRequired):
        return sign_in_redirect(request)
    principal = getattr(request.state, "principal", None)
    if isinstance(exc, Forbidden):
        return page(request, "error.html", principal, status_code=403,
                    title=f"This needs the {exc.needed.value} role",
                    message=f"{exc.principal.name} is signed in with the role(s) "
                    f"{_roles(exc)}; this page or action needs {exc.needed.value} (or a "
                    "role that includes it). Ask an administrator to grant it.")
    if isinstance(exc, CsrfRefused):
        return page(request, "error.html", principal, status_code=403,
                    title="The form could not be verified",
                    message="The request did not carry this session's form token (a page "
                    "from before you signed in again, or a request from another site). "
                    "Reload the page and try again.")
    if isinstance(exc, NoRole):
        return no_role_page(request, exc)
    if isinstance(exc, StoreError):  # its text is written for the user (state.base)
        return page(request, "error.html", principal, status_code=503,
                    title="The state store is unavailable",
                    message=f"{exc} Try again once the store is back.")
    if isinstance(exc, NotFound):
        return page(request, "error.html", principal, status_code=404, title="Not found",
                    message=f"There is no {exc.what}, or it is not in a namespace you may see.")
    reference = secrets.token_hex(4)
    log.error("console page %s failed (reference %s)", request.url.path, reference,
              exc_info=exc)
    return page(request, "error.html", principal, status_code=500,
                title="Something went wrong",
                message=f"The page could not be shown. The daemon's log has the details "
                f"under reference {reference}.")


def console_first(api_handler: Callable[[Request, Exception], Awaitable[Response]]
                  ) -> Callable[[Request, Exception], Awaitable[Response]]:
    """An app-wide exception handler that answers console paths with a page and
    leaves every other path to the API's ``api_handler``."""
    async def handler(request: Request, exc: Exception) -> Response:
        if console_path(request.scope) is not None:
            return error_response(request, exc)
        return await api_handler(request, exc)
    return handler


def _roles(exc: Forbidden) -> str:
    return ", ".join(sorted(r.value for r in exc.principal.roles)) or "none"


def no_role_page(request: Request, exc: NoRole) -> HTMLResponse:
    mapped = ", ".join(exc.mapped) or "none are configured"
    return page(request, "error.html", None, status_code=403,
                title="No console role for this account",
                message=f"The identity provider signed in {exc.name or 'this account'}, but "
                f"its {exc.claim!r} claim holds none of the values mapped to a console role "
                f"({mapped}). Ask an administrator to add the account to one of them.")


def sign_in_redirect(request: Request) -> Response:
    """To the sign-in page, coming back here after; the stale session cookie cleared.

    htmx follows a redirect inside its request and would swap the sign-in page into
    a fragment, so an htmx request is told to navigate instead (``HX-Redirect``)."""
    root = request.scope.get("root_path", "") + "/console"
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET" or request.headers.get("HX-Request"):
        # Back to the page the form or fragment was on (htmx names it), not the action.
        shown = urlsplit(request.headers.get("HX-Current-URL", ""))
        back = shown.path + (f"?{shown.query}" if shown.query else "") or f"{root}/"
    target = f"{root}/signin?next={quote(back, safe='')}"
    response: Response
    if request.headers.get("HX-Request"):
        response = Response(status_code=204, headers={"HX-Redirect": target})
    else:
        response = RedirectResponse(target, status_code=303)
    Sessions.clear(request, response)
    return response
