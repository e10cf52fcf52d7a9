"""Who may call what (SPEC S3): the bearer token, its role and its namespaces.

Every guarded route depends on one of :class:`Guard`'s dependencies, each of which
answers 401 for a missing or wrong token, 403 naming the role needed for a token
without it, and otherwise hands the route the caller's
:class:`~reconciler.runtime.access.Principal`. The route then keeps to the
principal's namespaces: lists are filtered in the store query, and a single item of
another namespace is a 404, as if it did not exist (a 403 would tell that it does).

Which role each route needs:

* ``sender``: ``POST /v1/notifications`` (into its namespaces only);
* ``viewer`` (or ``auditor``): every read: notifications, audit, status, outbox
  list/show, events and their attachments; ``/metrics`` when it needs a token;
* ``operator``: outbox actions and the events ack (it changes what the daemon keeps);
* ``admin``: everything.

``GET /v1/sync`` and a token-guarded ``/metrics`` describe the whole daemon (every
namespace's servers), so a namespace-limited token gets 403 there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import Scope

from reconciler.daemon.api.refusals import refuse
from reconciler.runtime.access import Principal, Role
from reconciler.runtime.api_tokens import BearerTokens

_BEARER = HTTPBearer(auto_error=False, description="One of the daemon's API tokens.")

Dependency = Callable[..., Awaitable[None]]
_PRINCIPAL = "reconcile.principal"  # the scope entry the guard leaves the caller in


async def _caller(request: Request) -> Principal:
    return request.scope[_PRINCIPAL]  # type: ignore[no-any-return]


Caller = Annotated[Principal, Depends(_caller)]
"""A route's parameter for the caller, once its guard (one of :class:`Guard`'s, in
the route's ``dependencies``: they run first) has let it in."""


def check_bearer(tokens: BearerTokens, scope: Scope, credentials: str | None) -> Principal:
    """The caller, or the 401 for a missing or wrong token."""
    if credentials is None:
        refuse(scope, "no token")
        raise HTTPException(401, "a bearer token is required",
                            headers={"WWW-Authenticate": 'Bearer realm="reconcile"'})
    principal = tokens.identify(credentials)
    if principal is None:
        # The refusal line says so, never the token; "bearer <word>" would be masked
        # as a token.
        refuse(scope, "wrong token")
        raise HTTPException(
            401, "the bearer token is not valid",
            headers={"WWW-Authenticate": 'Bearer realm="reconcile", error="invalid_token"'})
    return principal


def require(principal: Principal, needed: Role, scope: Scope) -> None:
    """The 403 naming the role, when ``principal`` lacks it."""
    if not principal.has(needed):
        refuse(scope, f"{principal.name} lacks the {needed.value} role")
        raise HTTPException(403, f"this needs the {needed.value} role")


def require_all_namespaces(principal: Principal, scope: Scope) -> None:
    """The 403 for a namespace-limited caller on a route about every namespace."""
    if principal.namespaces is not None:
        refuse(scope, f"{principal.name} is limited to namespaces")
        raise HTTPException(403, "this needs a token that is not limited to namespaces: "
                            "it shows every namespace's servers")


def scope_of(principal: Principal) -> tuple[str, ...] | None:
    """The principal's namespaces for a store filter (None: every namespace)."""
    return None if principal.namespaces is None else tuple(sorted(principal.namespaces))


class Guard:
    """The dependencies of guarded routes, one per role: ``Depends(guard.viewer)`` in a
    route's ``dependencies``; the route reads the caller with a :data:`Caller`
    parameter (its annotations are resolved in the module, where no guard exists)."""

    def __init__(self, tokens: BearerTokens) -> None:
        self.tokens = tokens
        self.sender = self._needs(Role.SENDER)
        self.viewer = self._needs(Role.VIEWER)
        self.operator = self._needs(Role.OPERATOR)
        self.viewer_everywhere = self._needs(Role.VIEWER, everywhere=True)

    def _needs(self, role: Role, *, everywhere: bool = False) -> Dependency:
        tokens = self.tokens

        # async although it never awaits: FastAPI runs a plain def dependency in
        # the threadpool, a thread hop per request for a few microseconds of work.
        async def guard(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
        ) -> None:
            scope = request.scope
            principal = check_bearer(tokens, scope, None if credentials is None
                                     else credentials.credentials)
            require(principal, role, scope)
            if everywhere:
                require_all_namespaces(principal, scope)
            scope[_PRINCIPAL] = principal

        guard.__name__ = f"needs_{role.value}{'_everywhere' if everywhere else ''}"
        return guard
