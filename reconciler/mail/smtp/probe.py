"""The SMTP connection check, one reportable step at a time (SPEC O9, O10).

aiosmtplib's ``SMTP.connect`` resolves, connects, negotiates TLS and reads the
greeting inside one call, so it cannot say how long the TLS handshake took or
whether the name did not resolve versus the port refusing. Health and
test-connection need exactly that, so this walker drives the steps itself:

    DNS → TCP → [TLS, implicit] → greeting → EHLO → [TLS, STARTTLS] → AUTH

It still speaks SMTP through aiosmtplib's ``SMTPProtocol`` (reply parsing, the
STARTTLS plaintext-injection defence) and shares with the transport the TLS
context (always verifying), AUTH (:mod:`~reconciler.mail.smtp.auth`) and the
classification of every failure (:mod:`~reconciler.mail.smtp.errors`). The
walker never sends mail; test-connection's "send" step goes through the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtplib import SMTPException
from aiosmtplib.esmtp import parse_esmtp_extensions
from aiosmtplib.protocol import SMTPProtocol

from reconciler.config.models.auth import NoAuth
from reconciler.config.models.outgoing_server import OutgoingServer, Security
from reconciler.mail.failover import Endpoint
from reconciler.mail.failure import MailFailure
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.smtp.auth import authenticate
from reconciler.mail.smtp.errors import error_failure, no_starttls, reply_failure
from reconciler.mail.steps import Step, StepResult
from reconciler.mail.transport import Redactor
from reconciler.mail.walk import StepError, Walk, tls_summary

_QUIT_TIMEOUT = 2.0
_DOING = {Step.TLS: "negotiating TLS", Step.GREETING: "waiting for the greeting",
          Step.EHLO: "waiting for the EHLO reply", Step.AUTH: "authenticating"}
Action = Callable[[], Awaitable[tuple[Any, str]]]


def smtp_plan(server: OutgoingServer) -> tuple[Step, ...]:
    security = Security(server.spec.security or Security.NONE)
    steps = [Step.DNS, Step.TCP]
    if security == Security.TLS:
        steps.append(Step.TLS)
    steps += [Step.GREETING, Step.EHLO]
    if security == Security.STARTTLS:
        steps.append(Step.TLS)
    if not isinstance(server.spec.auth, NoAuth):
        steps.append(Step.AUTH)
    return tuple(steps)


async def walk_smtp(server: OutgoingServer, endpoint: Endpoint,
                    options: ProbeOptions) -> list[StepResult]:
    """Walk the SMTP steps against one host; stop at the first failure. Never raises."""
    spec = server.spec
    security = Security(spec.security or Security.NONE)
    walk = Walk(endpoint.address, options.budget(spec), Redactor())
    name = await options.ehlo_name()  # before connecting: it may wait on DNS
    sock = await walk.reach(endpoint)
    if sock is None:
        return walk.results
    session = _Session(endpoint, security)
    steps: list[tuple[Step, Action]] = []
    if security == Security.TLS:
        steps.append((Step.TLS, lambda: session.open(sock, options.tls())))
    else:
        await session.open(sock, None)  # no I/O: wraps the connected socket
    steps += [(Step.GREETING, session.greeting), (Step.EHLO, lambda: session.ehlo(name))]
    if security == Security.STARTTLS:
        steps.append((Step.TLS, lambda: session.starttls(options.tls(), name)))
    if not isinstance(spec.auth, NoAuth):
        steps.append((Step.AUTH, lambda: session.authenticate(server, options, walk.redactor)))
    try:
        for step, action in steps:
            if await walk.run(step, session.guarded(step, action)) is None:
                break
        return walk.results
    finally:
        # QUIT only while the conversation is in step; after a timeout or a
        # dropped connection a reply may never come.
        last = walk.results[-1]
        task = asyncio.current_task()
        stopping = task is not None and task.cancelling() > 0
        await session.close(polite=not stopping and (last.ok or last.code is not None))


class _Session:
    """One SMTP conversation over the socket the TCP step connected."""

    def __init__(self, endpoint: Endpoint, security: Security) -> None:
        self.endpoint = endpoint
        self.security = security
        self.protocol = SMTPProtocol(loop=asyncio.get_running_loop())
        self.extensions: dict[str, str] = {}
        self.auth_methods: list[str] = []
        self.encrypted = False

    def guarded(self, step: Step, action: Action) -> Action:
        """``action`` with every failure classified as the transport's would be."""
        async def run() -> tuple[Any, str]:
            try:
                return await action()
            except MailFailure as exc:
                raise StepError(exc.failure, exc.message, exc.reason, exc.code) from None
            except (SMTPException, OSError, EOFError) as exc:
                doing = f"{_DOING[step]} from {self.endpoint.address}"
                failure = error_failure(exc, step, doing, self.endpoint, self.security)
                raise StepError(failure.failure, failure.message, failure.reason,
                                failure.code) from None
        return run

    async def open(self, sock: socket.socket, context: ssl.SSLContext | None) -> tuple[bool, str]:
        try:
            await asyncio.get_running_loop().create_connection(
                lambda: self.protocol, sock=sock, ssl=context,
                server_hostname=self.endpoint.host if context else None)
        except BaseException:
            sock.close()  # asyncio does not always close a socket it was handed
            raise
        self.encrypted = context is not None
        return True, "implicit TLS, " + tls_summary(self.protocol.transport)

    async def greeting(self) -> tuple[bool, str]:
        reply = await self.protocol.read_response()
        text = reply.message.splitlines()[0] if reply.message else ""
        if reply.code != 220:
            raise reply_failure(reply.code, text, Step.GREETING, _DOING[Step.GREETING])
        return True, f"{reply.code} {text}"

    async def ehlo(self, name: str) -> tuple[bool, str]:
        reply = await self.protocol.execute_command(b"EHLO", name.encode())
        if reply.code in (500, 502):  # a pre-ESMTP server: HELO is all it knows
            reply = await self.protocol.execute_command(b"HELO", name.encode())
            if reply.code == 250:
                self.extensions, self.auth_methods = {}, []
                return True, f"HELO accepted ({name}); the server offers no ESMTP extensions"
        if reply.code != 250:
            raise reply_failure(reply.code, reply.message, Step.EHLO, f"EHLO {name}")
        self.extensions, self.auth_methods = parse_esmtp_extensions(reply.message)
        return True, self._offers()

    async def starttls(self, context: ssl.SSLContext, name: str) -> tuple[bool, str]:
        if "starttls" not in self.extensions:
            raise no_starttls(self.endpoint)
        reply = await self.protocol.start_tls(context, server_hostname=self.endpoint.host)
        self.encrypted = True
        summary = tls_summary(self.protocol.transport)
        # RFC 3207: forget what was offered in plaintext; ask again under TLS.
        again = await self.protocol.execute_command(b"EHLO", name.encode())
        if again.code != 250:
            raise reply_failure(again.code, again.message, Step.TLS, "EHLO after STARTTLS")
        self.extensions, self.auth_methods = parse_esmtp_extensions(again.message)
        return True, f"STARTTLS {reply.code}, {summary}"

    async def authenticate(self, server: OutgoingServer, options: ProbeOptions,
                           redactor: Redactor) -> tuple[bool, str]:
        who = await authenticate(self.protocol.execute_command, self.auth_methods,
                                 self.encrypted, server, self.endpoint, redactor,
                                 options.token_provider)
        return True, f"authenticated as {who}"

    def _offers(self) -> str:
        shown = []
        if "starttls" in self.extensions:
            shown.append("STARTTLS")
        if self.auth_methods:
            shown.append("AUTH " + " ".join(m.upper() for m in self.auth_methods))
        if self.extensions.get("size"):
            shown.append(f"SIZE {self.extensions['size']}")
        return "offers " + ", ".join(shown) if shown else "accepted (no STARTTLS or AUTH offered)"

    async def close(self, *, polite: bool) -> None:
        if polite and self.protocol.is_connected:
            with contextlib.suppress(Exception):
                await self.protocol.execute_command(b"QUIT", timeout=_QUIT_TIMEOUT)
        transport = self.protocol.transport
        if transport is not None and not transport.is_closing():
            # abort, not close: a polite TLS shutdown waits for a peer that may be gone
            transport.abort()  # type: ignore[attr-defined]
