"""``router(deps)``: the console's routes; ``mount(app, deps, tokens)``: the console
added to the daemon's app under ``/console`` (sessions, sign-in, static files, the
error pages)."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from reconciler.config.secrets import SecretError, redact_ref, resolve_operator
from reconciler.console import home, outbox, screens, servers, signin
from reconciler.console.deps import ConsoleDeps
from reconciler.console.errors import ConsoleErrors, NotFound, console_first
from reconciler.console.headers import SecurityHeaders
from reconciler.console.oidc import ConsoleSetupError, OidcClient, OidcSettings
from reconciler.console.render import STATIC, TEMPLATES
from reconciler.console.session import Sessions
from reconciler.runtime.access import Principal
from reconciler.runtime.api_tokens import BearerTokens
from reconciler.state.base import StoreError

STATIC_MAX_AGE = 86400  # the files change only with a new release of the daemon


def router(deps: ConsoleDeps) -> APIRouter:
    console = APIRouter(prefix="/console", include_in_schema=False)
    # One include per screen module: console.include_router(servers.router(deps)), ...
    console.include_router(home.router(deps))
    console.include_router(servers.router(deps))
    console.include_router(outbox.router(deps))
    screens.include(console, deps)
    return console


def token_identity(tokens: BearerTokens) -> signin.Identify:
    """Token sign-in through the API's tokens: the console session gets the token's
    principal (its roles and namespaces), exactly what that token has on the API."""
    def identify(presented: str) -> Principal | None:
        return tokens.identify(presented) if presented else None
    return identify


def session_key(ref: str | None) -> bytes:
    if ref is None:
        return secrets.token_bytes(32)  # sessions end when the daemon restarts
    try:
        return resolve_operator(ref).strip().encode()
    except SecretError as exc:
        raise ConsoleSetupError(f"the console session key ({redact_ref(ref)}) cannot be "
                                f"resolved: {exc}") from None


class _CachedStatic(StaticFiles):
    def file_response(self, *args: object, **kwargs: object) -> Response:
        response = super().file_response(*args, **kwargs)  # type: ignore[arg-type]
        response.headers["Cache-Control"] = f"public, max-age={STATIC_MAX_AGE}"
        return response


def mount(app: FastAPI, deps: ConsoleDeps, tokens: BearerTokens) -> None:
    """Add the console to ``app``; raises :class:`ConsoleSetupError` on unusable settings."""
    settings = deps.settings
    oidc_settings = OidcSettings.from_daemon(settings)
    oidc = OidcClient(oidc_settings, ca_file=settings.ca_file) if oidc_settings else None
    public = settings.console_public_url or ""
    app.state.console_sessions = Sessions(session_key(settings.console_session_key_ref),
                                          settings.console_session_hours * 3600,
                                          token_valid=tokens.knows,
                                          secure=public.startswith("https://"))
    app.include_router(router(deps))
    app.include_router(signin.router(token_identity(tokens), oidc, settings.console_public_url),
                       prefix="/console", include_in_schema=False)
    app.mount("/console/static", _CachedStatic(directory=STATIC), name="console-static")

    # Last: any other /console path is the console's 404 page, not the API's JSON one.
    @app.get("/console/{rest:path}", include_in_schema=False)
    async def unknown(request: Request, rest: str) -> Response:
        raise NotFound(f"page {request.url.path}")

    app.add_middleware(ConsoleErrors)
    # Added after (outside) ConsoleErrors: its error pages get the headers too.
    app.add_middleware(SecurityHeaders)
    api_handler = app.exception_handlers.get(StoreError)
    if api_handler is not None:
        app.add_exception_handler(StoreError, console_first(api_handler))
    for name in TEMPLATES.list_templates():  # compiled now, not on someone's first visit
        TEMPLATES.get_template(name)
