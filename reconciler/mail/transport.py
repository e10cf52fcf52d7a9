"""The one interface every outgoing protocol implements (DESIGN "The few interfaces").

Nothing else in dispatch knows whether a message goes out over SMTP, Graph or
EWS: the worker hands an :class:`~reconciler.mail.envelope.Envelope` and the
routed server to ``send`` and gets a classified
:class:`~reconciler.mail.outcome.SendResult` back. Transports never raise
for a failed send; every failure is a result, so a secret can only leave a
transport through text that went through :class:`Redactor`.
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod

from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.mail.envelope import Envelope
from reconciler.mail.outcome import Health, SendResult


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
