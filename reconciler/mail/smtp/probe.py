"""The SMTP connection check, one reportable step at a time (SPEC O9, O10).

``SmtpTransport.probe`` answers "can this server send?" in one go: aiosmtplib's
``SMTP.connect`` resolves, connects, negotiates TLS and reads the greeting
inside one call, so it cannot say how long the TLS handshake took or whether
the name did not resolve versus the port refusing. Test-connection needs
exactly that, so this walker drives the steps itself:

    DNS → TCP → [TLS, implicit] → greeting → EHLO → [TLS, STARTTLS] → AUTH

It still speaks SMTP through aiosmtplib's ``SMTPProtocol`` (reply parsing, the
STARTTLS plaintext-injection defence), uses the transport's TLS context
(always verifying), mechanism order and secret handling (``Redactor``), and
only the final "send" step of test-connection goes through the real
transport. The walker never sends mail.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import socket
import ssl
from typing import Any

from aiosmtplib import SMTPResponseException, SMTPServerDisconnected
from aiosmtplib.protocol import SMTPProtocol

from reconciler.config.models.auth import BasicAuth, NoAuth, OAuth2Auth
from reconciler.config.models.outgoing_server import OutgoingServer, Security
from reconciler.config.secrets import SecretError
from reconciler.credentials.gate import CredentialNotBound, present_secret, require_client
from reconciler.mail.failover import Endpoint
from reconciler.mail.outcome import Failure
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.smtp.transport import BASIC_MECHANISMS
from reconciler.mail.steps import Reason, Step, StepResult
from reconciler.mail.transport import Redactor
from reconciler.mail.walk import StepError, Walk, access_token, tls_summary
from reconciler.oauth.source import invalidate_token

_QUIT_TIMEOUT = 2.0


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
    loop = asyncio.get_running_loop()
    name = await options.ehlo_name()  # before connecting: it may wait on DNS
    session: _Session | None = None
    try:
        sock = await walk.reach(endpoint)
        if sock is None:
            return walk.results
        session = _Session(loop, endpoint)
        if security == Security.TLS:
            tls_ok = await walk.run(Step.TLS, lambda: session.open_tls(sock, options.tls()))
            if tls_ok is None:
                return walk.results
        else:
            await session.open_plain(sock)  # no I/O: wraps the connected socket
        if await walk.run(Step.GREETING, session.greeting) is None:
            return walk.results
        if await walk.run(Step.EHLO, lambda: session.ehlo(name)) is None:
            return walk.results
        if security == Security.STARTTLS:
            upgraded = await walk.run(Step.TLS, lambda: session.starttls(options.tls(), name))
            if upgraded is None:
                return walk.results
        if not isinstance(spec.auth, NoAuth):
            await walk.run(Step.AUTH,
                           lambda: session.authenticate(server, options, walk.redactor))
        return walk.results
    finally:
        if session is not None:
            # QUIT only while the conversation is in step; after a timeout or a
            # dropped connection a reply may never come.
            last = walk.results[-1] if walk.results else None
            task = asyncio.current_task()
            stopping = task is not None and task.cancelling() > 0
            await session.close(polite=not stopping and last is not None
                                and (last.ok or last.code is not None))


# -- the SMTP conversation ----------------------------------------------------


class _Session:
    """One SMTP conversation over the socket the TCP step connected."""

    def __init__(self, loop: asyncio.AbstractEventLoop, endpoint: Endpoint) -> None:
        self.loop = loop
        self.endpoint = endpoint
        self.protocol = SMTPProtocol(loop=loop)
        self.transport: asyncio.BaseTransport | None = None
        self.extensions: dict[str, str] = {}
        self.auth_methods: list[str] = []
        self.encrypted = False

    async def open_plain(self, sock: socket.socket) -> None:
        try:
            self.transport, _ = await self.loop.create_connection(lambda: self.protocol,
                                                                  sock=sock)
        except BaseException:
            sock.close()
            raise

    async def open_tls(self, sock: socket.socket, context: ssl.SSLContext) -> tuple[bool, str]:
        try:
            self.transport, _ = await self.loop.create_connection(
                lambda: self.protocol, sock=sock, ssl=context,
                server_hostname=self.endpoint.host)
        except BaseException:
            sock.close()  # asyncio does not always close a socket it was handed
            raise
        self.encrypted = True
        return True, "implicit TLS, " + tls_summary(self.transport)

    async def greeting(self) -> tuple[bool, str]:
        try:
            reply = await self.protocol.read_response()
        except SMTPServerDisconnected:
            raise StepError(Failure.CONNECT, f"{self.endpoint.address} closed the connection "
                            "without a greeting", Reason.CLOSED) from None
        if reply.code != 220:
            raise StepError(Failure.REJECTED, f"{reply.code} {_first_line(reply.message)}",
                            Reason.TEMPORARY if 400 <= reply.code < 500 else Reason.REJECTED,
                            reply.code)
        return True, f"{reply.code} {_first_line(reply.message)}"

    async def ehlo(self, name: str) -> tuple[bool, str]:
        reply = await self.protocol.execute_command(b"EHLO", name.encode())
        if reply.code in (500, 502):  # a pre-ESMTP server: HELO is all it knows
            reply = await self.protocol.execute_command(b"HELO", name.encode())
            if reply.code == 250:
                self.extensions, self.auth_methods = {}, []
                return True, f"HELO accepted ({name}); the server offers no ESMTP extensions"
        if reply.code != 250:
            raise StepError(Failure.REJECTED, f"EHLO {name}: {reply.code} {reply.message}",
                            Reason.REJECTED, reply.code)
        self.extensions, self.auth_methods = _extensions(reply.message)
        return True, _offers(self.extensions, self.auth_methods)

    async def starttls(self, context: ssl.SSLContext, name: str) -> tuple[bool, str]:
        if "starttls" not in self.extensions:
            raise StepError(Failure.TLS, f"{self.endpoint.address} does not offer STARTTLS",
                            Reason.NO_STARTTLS)
        try:
            reply = await self.protocol.start_tls(context, server_hostname=self.endpoint.host)
        except SMTPResponseException as exc:
            raise StepError(Failure.TLS, f"STARTTLS refused: {exc.code} {exc.message}",
                            Reason.NO_STARTTLS, exc.code) from None
        self.transport = self.protocol.transport
        self.encrypted = True
        summary = tls_summary(self.transport)
        # RFC 3207: forget what was offered in plaintext; ask again under TLS.
        again = await self.protocol.execute_command(b"EHLO", name.encode())
        if again.code != 250:
            raise StepError(Failure.TLS, f"EHLO after STARTTLS: {again.code} {again.message}",
                            Reason.REJECTED, again.code)
        self.extensions, self.auth_methods = _extensions(again.message)
        return True, f"STARTTLS {reply.code}, {summary}"

    async def authenticate(self, server: OutgoingServer, options: ProbeOptions,
                           redactor: Redactor) -> tuple[bool, str]:
        auth = server.spec.auth
        offered = self.auth_methods
        if isinstance(auth, BasicAuth):
            username = auth.username or server.spec.email
            try:
                password = present_secret(auth.password, self.endpoint.host, self.endpoint.port)
            except CredentialNotBound as exc:
                raise StepError(Failure.CONFIG, str(exc), Reason.NOT_BOUND) from None
            except SecretError as exc:
                raise StepError(Failure.CONFIG, f"cannot read the password: {exc}",
                                Reason.SECRET) from None
            redactor.add(password, username=username)
            mechanism = next((m for m in BASIC_MECHANISMS if m in offered), None)
            if mechanism is None:
                raise self._not_offered("PLAIN/LOGIN")
            reply = await self._basic(mechanism, username, password)
        elif isinstance(auth, OAuth2Auth):
            username = auth.username or server.spec.email
            try:
                require_client(auth, self.endpoint.host, self.endpoint.port)
            except CredentialNotBound as exc:
                raise StepError(Failure.CONFIG, str(exc), Reason.NOT_BOUND) from None
            token = await access_token(server, options, redactor, username)
            mechanism = "xoauth2"
            if mechanism not in offered:
                raise self._not_offered("XOAUTH2")
            reply = await self._xoauth2(username, token)
            if reply.code == 535 and await invalidate_token(options.token_provider, server,
                                                            token):
                # as the transport does: a refused token is refreshed once
                token = await access_token(server, options, redactor, username)
                reply = await self._xoauth2(username, token)
        else:  # pragma: no cover - the plan has no AUTH step for NoAuth
            return True, "no authentication configured"
        if reply.code != 235:
            raise _auth_refused(reply.code, reply.message, username)
        return True, f"authenticated as {username} ({mechanism.upper()})"

    async def _basic(self, mechanism: str, username: str, password: str) -> Any:
        user, secret = username.encode(), password.encode()
        if mechanism == "plain":
            return await self.protocol.execute_command(
                b"AUTH", b"PLAIN", base64.b64encode(b"\0" + user + b"\0" + secret))
        if mechanism == "login":
            reply = await self.protocol.execute_command(b"AUTH", b"LOGIN")
            if reply.code == 334:
                reply = await self.protocol.execute_command(base64.b64encode(user))
            if reply.code == 334:
                reply = await self.protocol.execute_command(base64.b64encode(secret))
            return reply
        reply = await self.protocol.execute_command(b"AUTH", b"CRAM-MD5")
        if reply.code != 334:
            return reply
        challenge = base64.b64decode(reply.message)
        digest = hmac.new(secret, challenge, "md5").hexdigest().encode()
        return await self.protocol.execute_command(base64.b64encode(user + b" " + digest))

    async def _xoauth2(self, username: str, token: str) -> Any:
        blob = f"user={username}\x01auth=Bearer {token}\x01\x01".encode()
        reply = await self.protocol.execute_command(b"AUTH", b"XOAUTH2", base64.b64encode(blob))
        if reply.code == 334:  # the error details come as a challenge; an empty line ends it
            reply = await self.protocol.execute_command(b"")
        return reply

    def _not_offered(self, wanted: str) -> StepError:
        if not self.auth_methods and not self.encrypted:
            return StepError(Failure.CONFIG, f"the server offers no {wanted} authentication on "
                             "an unencrypted connection", Reason.AUTH_NOT_OFFERED_PLAINTEXT)
        shown = ", ".join(m.upper() for m in self.auth_methods) or "none"
        return StepError(Failure.CONFIG, f"the server does not offer {wanted} authentication "
                         f"(offers: {shown})", Reason.AUTH_NOT_OFFERED)

    async def close(self, *, polite: bool) -> None:
        if polite and self.protocol.is_connected:
            with contextlib.suppress(Exception):
                await self.protocol.execute_command(b"QUIT", timeout=_QUIT_TIMEOUT)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            # abort, not close: a polite TLS shutdown waits for a peer that may be gone
            transport.abort()  # type: ignore[attr-defined]


# -- classification -------------------------------------------------------------


def _auth_refused(code: int, message: str, username: str) -> StepError:
    text = f"{code} {message}"
    if code == 534:
        return StepError(Failure.AUTH, f"authentication refused for {username}: {text}",
                         Reason.APP_PASSWORD, code)
    if code == 535:
        return StepError(Failure.AUTH, f"authentication failed for {username}: {text}",
                         Reason.AUTH_FAILED, code)
    if code in (530, 538):
        return StepError(Failure.AUTH, f"the server wants encryption first: {text}",
                         Reason.ENCRYPTION_REQUIRED, code)
    if 400 <= code < 500:
        return StepError(Failure.AUTH, f"temporary authentication failure for {username}: "
                         f"{text}", Reason.TEMPORARY, code)
    return StepError(Failure.AUTH, f"authentication failed for {username}: {text}",
                     Reason.AUTH_FAILED, code)


# -- small helpers -----------------------------------------------------------------


def _extensions(message: str) -> tuple[dict[str, str], list[str]]:
    """EHLO reply lines after the first → {keyword: parameters}, AUTH mechanisms."""
    extensions: dict[str, str] = {}
    auth: list[str] = []
    for line in message.splitlines()[1:]:
        keyword, _, params = line.strip().partition(" ")
        keyword = keyword.lower()
        if keyword.startswith("auth="):  # the pre-RFC 4954 form some servers still send
            keyword, params = "auth", keyword[5:] + " " + params
        extensions[keyword] = params
        if keyword == "auth":
            auth += [m.lower() for m in params.split() if m.lower() not in auth]
    return extensions, auth


def _offers(extensions: dict[str, str], auth: list[str]) -> str:
    shown = []
    if "starttls" in extensions:
        shown.append("STARTTLS")
    if auth:
        shown.append("AUTH " + " ".join(m.upper() for m in auth))
    if extensions.get("size"):
        shown.append(f"SIZE {extensions['size']}")
    return "offers " + ", ".join(shown) if shown else "accepted (no STARTTLS or AUTH offered)"


def _first_line(message: str) -> str:
    return message.splitlines()[0] if message else ""

