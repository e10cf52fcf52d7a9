"""The SMTP connection check, one reportable step at a time (SPEC O9, O10).

aiosmtplib's ``SMTP.connect`` resolves, connects, negotiates TLS and reads the
greeting inside one call, so it cannot say how long the TLS handshake took or
whether the name did not resolve versus the port refusing. Health and
test-connection need exactly that, so this walker drives the steps itself:

    DNS → TCP → [TLS, implicit] → greeting → EHLO → [TLS, STARTTLS] → AUTH

After TCP it is the transport's session (:mod:`~reconciler.mail.smtp.session`) on
the connected socket: the same TLS context (always verifying), EHLO, STARTTLS,
AUTH (:mod:`~reconciler.mail.smtp.auth`) and classification of every failure
(:mod:`~reconciler.mail.smtp.errors`). With implicit TLS aiosmtplib reads the
greeting right after the handshake, so the TLS step's time includes the wait
for it. The walker never sends mail; test-connection's "send" step goes
through the transport.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiosmtplib
from aiosmtplib import SMTPException, SMTPResponse

from reconciler.config.models.auth import NoAuth
from reconciler.config.models.outgoing_server import OutgoingServer, Security
from reconciler.mail.failover import Endpoint
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.smtp.auth import authenticate
from reconciler.mail.smtp.errors import error_failure
from reconciler.mail.smtp.session import close, greet, new_session, offers, retire, starttls
from reconciler.mail.steps import Step, StepResult
from reconciler.mail.transport import Redactor
from reconciler.mail.walk import Walk, tls_summary

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
    walk = Walk(endpoint.address, options.budget(server.spec), Redactor())
    name = await options.ehlo_name()  # before connecting: it may wait on DNS
    sock = await walk.reach(endpoint, options, server)
    if sock is None:
        return walk.results
    check = _Check(server, endpoint, options, walk.redactor, sock, name)
    try:
        for step in smtp_plan(server)[2:]:  # after DNS and TCP
            if await walk.run(step, check.guarded(step)) is None:
                break
        return walk.results
    finally:
        # QUIT only while the conversation is in step; after a timeout or a
        # dropped connection a reply may never come.
        last = walk.results[-1]
        task = asyncio.current_task()
        stopping = task is not None and task.cancelling() > 0
        await check.close(polite=not stopping and (last.ok or last.code is not None))


class _Check:
    """The steps after TCP, on the socket the TCP step connected."""

    def __init__(self, server: OutgoingServer, endpoint: Endpoint, options: ProbeOptions,
                 redactor: Redactor, sock: socket.socket, name: str) -> None:
        self.server, self.endpoint, self.options = server, endpoint, options
        self.redactor, self.sock, self.name = redactor, sock, name
        self.security = Security(server.spec.security or Security.NONE)
        self.smtp: aiosmtplib.SMTP | None = None
        self.greeting: SMTPResponse | None = None

    def guarded(self, step: Step) -> Action:
        """The step's action, every failure classified as the transport's would be."""
        tls = self.implicit_tls if self.security == Security.TLS else self.starttls
        action = {Step.TLS: tls, Step.GREETING: self.greet, Step.EHLO: self.ehlo,
                  Step.AUTH: self.login}[step]

        async def run() -> tuple[Any, str]:
            try:
                return await action()
            except (SMTPException, OSError, EOFError) as exc:
                doing = f"{_DOING[step]} from {self.endpoint.address}"
                raise error_failure(exc, step, doing, self.endpoint, self.security) from None
        return run

    async def connect(self) -> tuple[aiosmtplib.SMTP, SMTPResponse]:
        """The session and the server's greeting (read once)."""
        if self.smtp is None or self.greeting is None:
            self.smtp = new_session(self.endpoint, self.security, self.options.tls(),
                                    self.name, timeout=None, sock=self.sock)
            self.greeting = await self.smtp.connect()  # the walk's budget bounds it
        return self.smtp, self.greeting

    async def implicit_tls(self) -> tuple[bool, str]:
        smtp, _ = await self.connect()
        return True, "implicit TLS, " + tls_summary(smtp.transport)

    async def greet(self) -> tuple[bool, str]:
        _, reply = await self.connect()
        text = reply.message.splitlines()[0] if reply.message else ""
        return True, f"{reply.code} {text}"

    async def ehlo(self) -> tuple[bool, str]:
        smtp, _ = await self.connect()
        await greet(smtp)
        return True, offers(smtp)

    async def starttls(self) -> tuple[bool, str]:
        smtp, _ = await self.connect()
        reply = await starttls(smtp, self.endpoint)
        return True, f"STARTTLS {reply.code}, {tls_summary(smtp.transport)}"

    async def login(self) -> tuple[bool, str]:
        smtp, _ = await self.connect()
        who = await authenticate(smtp, self.server, self.endpoint, self.redactor,
                                 self.options.token_provider)
        return True, f"authenticated as {who}"

    async def close(self, *, polite: bool) -> None:
        if self.smtp is not None:
            if polite:
                await retire(self.smtp)
            close(self.smtp)
        self.sock.close()  # asyncio does not always close a socket it was handed
