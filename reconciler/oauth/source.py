"""Where access tokens come from, as the protocol layer sees it (O11).

``mail`` asks a :class:`TokenSource` for a token and tells it when a server
refused one; the OAuth providers in this package are the real sources. A plain
callable works too, for tests and simple set-ups (it cannot be refreshed).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TokenSource(Protocol):
    """Access tokens for servers whose auth block is OAuth2 (O11).

    ``token(server)`` returns a current access token for any resource with
    ``.spec.auth`` (an ``OAuth2Auth``), ``.spec.email`` and ``.metadata`` (outgoing and
    incoming servers alike); it raises :class:`TokenError`. ``invalidate(server, token)``
    says the server refused ``token`` (SMTP 535, HTTP 401): the next ``token`` call
    fetches a new one, unless another caller already replaced it.
    """

    async def token(self, server: Any) -> str: ...

    async def invalidate(self, server: Any, token: str) -> None: ...


# A TokenSource, or a plain callable, sync or async (see the module docstring).
TokenProvider = TokenSource | Callable[[Any], Awaitable[str] | str]


class TokenError(Exception):
    """A token provider could not produce a token; the message holds no secret.

    ``permanent`` is for revoked or never-authorised grants that need
    ``reconcile auth login``; anything else (the identity provider is down)
    is worth retrying.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@functools.cache
def _is_source(kind: type) -> bool:
    # Asked on every send: isinstance against a runtime-checkable Protocol walks its
    # members each time (~20 us on Python 3.11), the answer per class never changes.
    return issubclass(kind, TokenSource)


async def fetch_token(provider: TokenProvider, server: Any) -> str:
    token: object
    if _is_source(type(provider)):
        token = await provider.token(server)
    else:
        token = provider(server)
        if inspect.isawaitable(token):
            token = await token
    if not isinstance(token, str) or not token:
        raise TokenError("the token provider returned no token")
    return token


async def invalidate_token(provider: TokenProvider | None, server: Any,
                           token: str) -> bool:
    """Tell the provider ``token`` was refused; True when a retry can get a new one."""
    if not _is_source(type(provider)):
        return False
    assert isinstance(provider, TokenSource)
    await provider.invalidate(server, token)
    return True
