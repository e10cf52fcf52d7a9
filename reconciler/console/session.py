"""Console sign-in and sessions: the contract every screen relies on.

- :func:`signed_in` (a FastAPI dependency) gives the request's
  :class:`~reconciler.runtime.access.Principal`; with no valid session it raises
  :class:`SignInRequired`, which the console turns into a redirect to the sign-in
  page. It also sets ``request.state.csrf_token`` for :func:`~.render.page`.
- :func:`needs` (``Depends(needs(Role.OPERATOR))``) is :func:`signed_in` plus the
  role check; a missing role raises :class:`~reconciler.runtime.access.Forbidden`,
  rendered as a 403 page naming the role.
- :func:`csrf_checked` guards every POST: the form's ``csrf_token`` field (or the
  ``X-CSRF-Token`` header htmx sends) must match the session's; a mismatch raises
  :class:`CsrfRefused`, a 403 page.

The session is one cookie signed with the daemon's console key (itsdangerous, which
also timestamps it): the principal and the CSRF token. Nothing is kept server-side, so
a signature that does not verify, or one older than the session's maximum age, is
simply no session (signed out, the cookie cleared). With no key configured the key
is random per start, and every session ends when the daemon restarts. Signing out
also ends the session on the server: its id is remembered (in this process, until
the session would have expired), so a copy of the cookie taken before is refused.
A session signed in by API token holds only as long as that token does: one removed
from the access file, or given other roles or namespaces, ends its sessions.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request, Response
from itsdangerous import BadData, URLSafeTimedSerializer

from reconciler.runtime.access import Principal, Role

SESSION_COOKIE = "reconcile_console"
# Before sign-in: the sign-in form's CSRF token and an OIDC flow's state, nonce and
# PKCE verifier. SameSite=Lax, unlike the session: the identity provider's redirect
# back is a cross-site navigation, and a Strict cookie would not come with it.
FLOW_COOKIE = "reconcile_console_flow"
FLOW_MAX_AGE = 600  # seconds to finish signing in once the sign-in page was shown
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


class SignInRequired(Exception):
    """No valid session: the console redirects to its sign-in page."""


class CsrfRefused(Exception):
    """A POST without the session's CSRF token: refused with a 403 page."""


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str


def cookie_path(request: Request) -> str:
    return request.scope.get("root_path", "") + "/console"


class Sessions:
    """Signs and reads the console's cookies with one key."""

    def __init__(self, key: bytes, max_age_seconds: float, *,
                 token_valid: Callable[[Principal], bool] | None = None,
                 secure: bool = False) -> None:
        """``token_valid``: whether a token sign-in's principal is still one of the API's
        tokens (a token removed or given fewer rights ends its sessions at the next
        start); ``secure``: Secure cookies even over http (TLS ends at a proxy in front)."""
        self._session = URLSafeTimedSerializer(key, salt="reconcile-console-session")
        self._flow = URLSafeTimedSerializer(key, salt="reconcile-console-flow")
        self.max_age = max_age_seconds
        self._token_valid = token_valid
        self._secure = secure
        self._ended: dict[str, float] = {}  # signed-out session id -> when it expires

    def end(self, request: Request) -> None:
        """Sign the request's session out for good (logout): its cookie stops working
        here even if a copy of it is presented again."""
        session = self.read(request)
        now = time.time()
        self._ended = {sid: until for sid, until in self._ended.items() if until > now}
        if session is not None:
            self._ended[session.csrf] = now + self.max_age

    def __repr__(self) -> str:  # the key stays out of tracebacks
        return f"Sessions(max_age={self.max_age})"

    def read(self, request: Request) -> Session | None:
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        try:
            data = self._session.loads(raw, max_age=self.max_age)
            namespaces = data["ns"]
            principal = Principal.of(data["n"], data["r"], namespaces)
            csrf = str(data["c"])  # also the session's id
            by_token = data.get("k") == "token"
        except (BadData, KeyError, TypeError, ValueError):
            # Tampered, expired or from another key: treated exactly as no session.
            return None
        if csrf in self._ended or (by_token and self._token_valid is not None
                                   and not self._token_valid(principal)):
            return None
        return Session(principal, csrf)

    def issue(self, request: Request, response: Response, principal: Principal, *,
              by_token: bool = False) -> None:
        data = {"n": principal.name, "r": sorted(r.value for r in principal.roles),
                "ns": None if principal.namespaces is None else sorted(principal.namespaces),
                "c": secrets.token_urlsafe(32), "k": "token" if by_token else "oidc"}
        self._set(request, response, SESSION_COOKIE, self._session.dumps(data),
                  int(self.max_age), "strict")
        response.delete_cookie(FLOW_COOKIE, path=cookie_path(request))

    def read_flow(self, request: Request) -> dict[str, str]:
        raw = request.cookies.get(FLOW_COOKIE)
        if not raw:
            return {}
        try:
            data = self._flow.loads(raw, max_age=FLOW_MAX_AGE)
        except BadData:
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def set_flow(self, request: Request, response: Response, flow: Mapping[str, str]) -> None:
        self._set(request, response, FLOW_COOKIE, self._flow.dumps(dict(flow)), FLOW_MAX_AGE,
                  "lax")

    @staticmethod
    def clear(request: Request, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path=cookie_path(request))

    def _set(self, request: Request, response: Response, name: str, value: str,
             max_age: int, same_site: str) -> None:
        response.set_cookie(name, value, max_age=max_age, path=cookie_path(request),
                            httponly=True,
                            secure=self._secure or request.url.scheme == "https",
                            samesite=same_site)  # type: ignore[arg-type]


def sessions_of(request: Request) -> Sessions:
    found: Sessions = request.app.state.console_sessions
    return found


async def signed_in(request: Request) -> Principal:
    session = sessions_of(request).read(request)
    if session is None:
        raise SignInRequired
    request.state.csrf_token = session.csrf
    request.state.principal = session.principal
    return session.principal


def needs(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    async def dependency(request: Request) -> Principal:
        principal = await signed_in(request)
        principal.require(role)
        return principal
    return dependency


async def form(request: Request) -> dict[str, str]:
    """The POST's urlencoded fields (the console's forms send nothing else); the last
    value of a repeated field wins."""
    if not hasattr(request.state, "form"):
        body = (await request.body()).decode("utf-8", "replace")
        request.state.form = dict(parse_qsl(body, keep_blank_values=True))
    fields: dict[str, str] = request.state.form
    return fields


def same_token(given: str | None, expected: str) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(
        str(given).encode(), expected.encode())


async def csrf_checked(request: Request) -> None:
    await signed_in(request)
    if not same_token(presented(request, await form(request)), request.state.csrf_token):
        raise CsrfRefused


def presented(request: Request, fields: Mapping[str, Any]) -> str | None:
    """The CSRF token a POST carries (header first: htmx sends it there)."""
    value = request.headers.get(CSRF_HEADER) or fields.get(CSRF_FIELD)
    return None if value is None else str(value)
