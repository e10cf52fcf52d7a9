"""The sign-in page, token sign-in, OpenID Connect sign-in and sign-out.

Token sign-in takes one of the daemon's API tokens (the set-up without an identity
provider) and gives the session the principal that token is. The sign-in form
itself is CSRF-protected too (a token in the flow cookie), so another site cannot
sign a browser in as someone else.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from reconciler.console.errors import no_role_page
from reconciler.console.oidc import NoRole, OidcClient, OidcError
from reconciler.console.render import page
from reconciler.console.session import (
    CsrfRefused,
    Sessions,
    csrf_checked,
    form,
    presented,
    same_token,
    sessions_of,
)
from reconciler.runtime.access import Principal

Identify = Callable[[str], Principal | None]


def safe_next(request: Request, given: str | None) -> str:
    """Where to go after sign-in: a console path of this daemon, never another site."""
    root = request.scope.get("root_path", "") + "/console"
    parts = urlsplit(given or "")
    if parts.scheme or parts.netloc or not (parts.path == root or
                                            parts.path.startswith(root + "/")):
        return f"{root}/"
    return parts.path + (f"?{parts.query}" if parts.query else "")


def router(identify: Identify, oidc: OidcClient | None, public_url: str | None) -> APIRouter:
    api = APIRouter()

    def sign_in_page(request: Request, *, error: str = "", status_code: int = 200,
                     next_path: str | None = None) -> HTMLResponse:
        flow = {"csrf": secrets.token_urlsafe(32)}
        request.state.csrf_token = flow["csrf"]
        response = page(request, "signin.html", None, status_code=status_code, error=error,
                        next_path=safe_next(request, next_path),
                        oidc_label=oidc.settings.label if oidc else None)
        sessions_of(request).set_flow(request, response, flow)
        return response

    @api.get("/signin")
    async def signin_form(request: Request, next: str | None = None) -> HTMLResponse:
        return sign_in_page(request, next_path=next)

    @api.post("/signin")
    async def token_signin(request: Request) -> Response:
        sessions = sessions_of(request)
        fields = await form(request)
        if not same_token(presented(request, fields), sessions.read_flow(request).get("csrf",
                                                                                     "")):
            raise CsrfRefused
        principal = identify(fields.get("token", "").strip())
        if principal is None:
            return sign_in_page(request, status_code=401, next_path=fields.get("next"),
                                error="That is not one of this daemon's API tokens. Check "
                                "for a missing character and try again.")
        response = RedirectResponse(safe_next(request, fields.get("next")), status_code=303)
        sessions.issue(request, response, principal, by_token=True)
        return response

    def callback_url(request: Request) -> str:
        base = public_url.rstrip("/") if public_url else \
            f"{request.url.scheme}://{request.url.netloc}"
        return f"{base}{request.scope.get('root_path', '')}/console/signin/oidc/callback"

    @api.get("/signin/oidc")
    async def oidc_begin(request: Request, next: str | None = None) -> Response:
        if oidc is None:
            return sign_in_page(request, status_code=404, error="Sign-in with an identity "
                                "provider is not configured on this daemon.")
        try:
            url, flow = await oidc.begin(callback_url(request))
        except OidcError as exc:
            return sign_in_page(request, status_code=502, error=str(exc), next_path=next)
        response = RedirectResponse(url, status_code=303)
        sessions_of(request).set_flow(request, response,
                                      {**flow, "next": safe_next(request, next)})
        return response

    @api.get("/signin/oidc/callback")
    async def oidc_callback(request: Request) -> Response:
        if oidc is None:
            return sign_in_page(request, status_code=404)
        sessions = sessions_of(request)
        flow = sessions.read_flow(request)
        try:
            principal = await oidc.finish(flow, dict(request.query_params),
                                          callback_url(request))
        except OidcError as exc:
            return sign_in_page(request, status_code=401, error=str(exc))
        except NoRole as exc:
            return no_role_page(request, exc)
        # A page, not a redirect: the browser arrived here from the provider's site, and
        # a redirect in that chain would still be cross-site, so the new SameSite=Strict
        # cookie would not come with it. A same-site navigation from this page does.
        response = page(request, "signed_in.html", None, next_path=flow.get("next") or
                        safe_next(request, None), name=principal.name)
        sessions.issue(request, response, principal)
        return response

    @api.post("/logout", dependencies=[Depends(csrf_checked)])
    async def logout(request: Request) -> Response:
        response = RedirectResponse(f"{request.scope.get('root_path', '')}/console/signin",
                                    status_code=303)
        sessions_of(request).end(request)
        Sessions.clear(request, response)
        return response

    return api

