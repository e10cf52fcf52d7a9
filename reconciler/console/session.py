"""Console sign-in and sessions: the contract every screen relies on.

- :func:`signed_in` (a FastAPI dependency) gives the request's
  :class:`~reconciler.runtime.access.Principal`; with no valid session it raises
  :class:`SignInRequired`, which the console turns into a redirect to the sign-in
  page. It also sets ``request.state.csrf_token`` for :func:`~.render.page`.
- :func:`needs` (``Depends(needs(Role.OPERATOR))``) is :func:`signed_in` plus the
  role check; a missing role raises :class:`~reconciler.runtime.access.Forbidden`,
  rendered as a 403 page naming the role.
- :func:`csrf_checked` guards every POST: the form's ``csrf_token`` field must
  match the session's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from reconciler.runtime.access import Principal, Role


class SignInRequired(Exception):
    """No valid session: the console redirects to its sign-in page."""


async def signed_in(request: Request) -> Principal:
    raise NotImplementedError("console sessions: see the console-session brief")


def needs(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    async def dependency(request: Request) -> Principal:
        principal = await signed_in(request)
        principal.require(role)
        return principal
    return dependency


async def csrf_checked(request: Request) -> None:
    raise NotImplementedError("console sessions: see the console-session brief")
