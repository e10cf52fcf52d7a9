"""The one interface every outgoing protocol implements (DESIGN "The few interfaces").

Nothing else in dispatch knows whether a message goes out over SMTP, Graph or
EWS: the worker hands an :class:`~reconciler.dispatch.envelope.Envelope` and the
routed server to ``send`` and gets a classified
:class:`~reconciler.dispatch.outcome.SendResult` back. Transports never raise
for a failed send; every failure is a result, so a secret can only leave a
transport through text that went through :class:`Redactor`.
"""

from __future__ import annotations

import base64
import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.dispatch.envelope import Envelope
from reconciler.dispatch.outcome import Health, Outcome, SendResult


@runtime_checkable
class TokenSource(Protocol):
    """Access tokens for servers whose auth block is OAuth2 (O11).

    ``token(server)`` returns a current access token for any resource with
    ``.spec.auth`` (an ``OAuth2Auth``), ``.spec.email`` and ``.metadata``, i.e.
    OutgoingServer and IncomingServer alike; it raises :class:`TokenError`.
    ``invalidate(server, token)`` says the server refused ``token`` (SMTP 535,
    HTTP 401): the next ``token`` call fetches a new one, unless another caller
    already replaced it. :class:`reconciler.oauth.OAuthTokenProvider` is the
    real one.
    """

    async def token(self, server: Any) -> str: ...

    async def invalidate(self, server: Any, token: str) -> None: ...


# An OAuth access token for a server: a TokenSource, or a plain callable, sync
# or async (tests and simple set-ups can pass a lambda; it cannot be refreshed).
TokenProvider = TokenSource | Callable[[OutgoingServer], Awaitable[str] | str]


class TokenError(Exception):
    """A token provider could not produce a token; the message holds no secret.

    ``permanent`` is for revoked or never-authorised grants that need
    ``reconcile auth login``; anything else (the identity provider is down)
    is worth retrying.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent

    @property
    def outcome(self) -> Outcome:
        """What the failed fetch makes of a send: a person must act, or a retry may work."""
        return Outcome.PERMANENT if self.permanent else Outcome.TRANSIENT


async def fetch_token(provider: TokenProvider, server: OutgoingServer) -> str:
    token: object
    if isinstance(provider, TokenSource):
        token = await provider.token(server)
    else:
        token = provider(server)
        if inspect.isawaitable(token):
            token = await token
    if not isinstance(token, str) or not token:
        raise TokenError("the token provider returned no token")
    return token


async def invalidate_token(provider: TokenProvider | None, server: OutgoingServer,
                           token: str) -> bool:
    """Tell the provider ``token`` was refused; True when a retry can get a new one."""
    if not isinstance(provider, TokenSource):
        return False
    await provider.invalidate(server, token)
    return True


class Redactor:
    """Replaces every known secret, and the encodings protocols put them in, with ``***``."""

    MASK = "***"

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, secret: str, *, username: str | None = None) -> None:
        if not secret:
            return
        forms = {secret, _b64(secret)}
        if username is not None:
            forms.add(_b64(f"\0{username}\0{secret}"))  # AUTH PLAIN
            forms.add(_b64(f"user={username}\x01auth=Bearer {secret}\x01\x01"))  # XOAUTH2
        self._secrets |= forms

    def __call__(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, self.MASK)
        return text


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Transport(ABC):
    """Sends envelopes through one protocol and probes servers that speak it."""

    protocol: str = ""

    @abstractmethod
    async def send(self, envelope: Envelope, server: OutgoingServer) -> SendResult:
        """Try once to hand the envelope to the server; classify what happened.

        Retrying is the caller's business (``dispatch.retry``); failing over
        to the server's alternate host is the transport's (O6).
        """

    @abstractmethod
    async def probe(self, server: OutgoingServer) -> Health:
        """Connect, secure, authenticate and disconnect; say which step failed."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most transports hold nothing
        """Release pooled connections."""
