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
import errno
import hmac
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiosmtplib import SMTPResponseException, SMTPServerDisconnected
from aiosmtplib.protocol import SMTPProtocol

from reconciler.config.models.auth import BasicAuth, NoAuth, OAuth2Auth
from reconciler.config.models.outgoing_server import OutgoingServer, Security
from reconciler.config.secrets import SecretError, resolve
from reconciler.dispatch.failover import Endpoint
from reconciler.dispatch.outcome import Failure
from reconciler.dispatch.transports.base import (
    Redactor,
    TokenError,
    fetch_token,
    invalidate_token,
)
from reconciler.dispatch.transports.smtp import BASIC_MECHANISMS
from reconciler.health.options import ProbeOptions
from reconciler.health.steps import Reason, Step, StepResult

log = logging.getLogger(__name__)

T = TypeVar("T")

_NAME_MISMATCH = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_CERT_EXPIRED = 10  # X509_V_ERR_CERT_HAS_EXPIRED
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


class StepError(Exception):
    """A step failed in a way the step itself understood."""

    def __init__(self, failure: Failure, detail: str, reason: Reason,
                 code: int | None = None) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail
        self.reason = reason
        self.code = code


@dataclass
class _Walk:
    where: str
    budget: float
    redactor: Redactor
    results: list[StepResult] = field(default_factory=list)
    deadline: float = 0.0

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.budget

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    async def run(self, step: Step, action: Callable[[], Awaitable[tuple[T, str]]]) -> T | None:
        """Run one step within what is left of the budget; None when it failed."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.remaining()):
                value, detail = await action()
        except StepError as exc:
            self._fail(step, started, exc.failure, exc.detail, exc.reason, exc.code)
            return None
        except TimeoutError:
            self._fail(step, started, Failure.TIMEOUT,
                       f"no answer from {self.where} within {self.budget:g}s "
                       f"({_waiting_for(step)})", Reason.TIMEOUT, None)
            return None
        except Exception as exc:
            failure, detail, reason, code = _classify(step, exc, self.where)
            if reason == Reason.UNEXPECTED:
                log.warning("unexpected error in the %s step against %s: %s", step, self.where,
                            self.redactor(detail))
            self._fail(step, started, failure, detail, reason, code)
            return None
        self.results.append(StepResult(step, True, self.redactor(detail),
                                       time.perf_counter() - started))
        return value

    def _fail(self, step: Step, started: float, failure: Failure, detail: str, reason: Reason,
              code: int | None) -> None:
        self.results.append(StepResult(step, False, self.redactor(detail),
                                       time.perf_counter() - started, failure, code, reason))


async def walk_smtp(server: OutgoingServer, endpoint: Endpoint,
                    options: ProbeOptions) -> list[StepResult]:
    """Walk the SMTP steps against one host; stop at the first failure. Never raises."""
    spec = server.spec
    security = Security(spec.security or Security.NONE)
    walk = _Walk(endpoint.address, options.budget(spec), Redactor())
    loop = asyncio.get_running_loop()
    name = await options.ehlo_name()  # before connecting: it may wait on DNS
    session: _Session | None = None
    try:
        addresses = await walk.run(Step.DNS, lambda: _resolve(loop, endpoint))
        if addresses is None:
            return walk.results
        sock = await walk.run(Step.TCP, lambda: _connect(loop, addresses, walk))
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


# -- the steps ----------------------------------------------------------------


async def _resolve(loop: asyncio.AbstractEventLoop,
                   endpoint: Endpoint) -> tuple[list[tuple[Any, ...]], str]:
    if endpoint.host.lower().rstrip(".").endswith(".invalid"):
        # RFC 6761: names under .invalid never resolve, so no query is sent for them
        raise StepError(Failure.CONNECT, f"{endpoint.host} does not resolve (a name under "
                        ".invalid never exists)", Reason.NXDOMAIN)
    try:
        infos = await loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            raise StepError(Failure.CONNECT, f"temporary DNS failure looking up {endpoint.host} "
                            f"({exc.strerror})", Reason.DNS_TEMPORARY) from None
        raise StepError(Failure.CONNECT, f"{endpoint.host} does not resolve ({exc.strerror})",
                        Reason.NXDOMAIN) from None
    if not infos:
        raise StepError(Failure.CONNECT, f"{endpoint.host} has no address", Reason.NXDOMAIN)
    if _is_ip(endpoint.host):
        return list(infos), f"{endpoint.host} is an IP address (no lookup needed)"
    shown = list(dict.fromkeys(str(info[4][0]) for info in infos))
    more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
    return list(infos), f"{endpoint.host} → {', '.join(shown[:3])}{more}"


async def _connect(loop: asyncio.AbstractEventLoop, infos: list[tuple[Any, ...]],
                   walk: _Walk) -> tuple[socket.socket, str]:
    """Try each address in the resolver's order; the first that accepts wins."""
    errors: list[tuple[Reason, str]] = []
    for index, (family, kind, proto, _, sockaddr) in enumerate(infos):
        where = _sockaddr_text(sockaddr)
        # Share what is left between the addresses still untried, so one
        # black-holed address cannot eat the whole budget.
        share = walk.remaining() / (len(infos) - index)
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, sockaddr), share)
        except TimeoutError:
            sock.close()
            errors.append((Reason.TIMEOUT, f"no answer from {where} within {share:.3g}s"))
            continue
        except OSError as exc:
            sock.close()
            errors.append(_connect_error(exc, where))
            continue
        except BaseException:
            sock.close()
            raise
        return sock, f"connected to {where}"
    reason, detail = errors[0] if len(errors) == 1 else _summarise(errors)
    failure = Failure.TIMEOUT if reason == Reason.TIMEOUT else Failure.CONNECT
    raise StepError(failure, detail, reason)


def _connect_error(exc: OSError, where: str) -> tuple[Reason, str]:
    if isinstance(exc, ConnectionRefusedError):
        return Reason.REFUSED, f"connection refused by {where}"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return Reason.NO_ROUTE, f"no route to {where} ({exc.strerror})"
    return Reason.CLOSED, f"cannot connect to {where}: {exc.strerror or exc}"


def _summarise(errors: list[tuple[Reason, str]]) -> tuple[Reason, str]:
    reasons = {r for r, _ in errors}
    reason = reasons.pop() if len(reasons) == 1 else Reason.CLOSED
    return reason, "; ".join(d for _, d in errors)


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
        return True, "implicit TLS, " + _tls_summary(self.transport)

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
        summary = _tls_summary(self.transport)
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
                password = resolve(auth.password)
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
            token = await self._token(server, options, redactor, username)
            mechanism = "xoauth2"
            if mechanism not in offered:
                raise self._not_offered("XOAUTH2")
            reply = await self._xoauth2(username, token)
            if reply.code == 535 and await invalidate_token(options.token_provider, server,
                                                            token):
                # as the transport does: a refused token is refreshed once
                token = await self._token(server, options, redactor, username)
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

    async def _token(self, server: OutgoingServer, options: ProbeOptions, redactor: Redactor,
                     username: str) -> str:
        if options.token_provider is None:
            raise StepError(Failure.CONFIG, "OAuth2 server but no token provider is configured",
                            Reason.NO_TOKEN_PROVIDER)
        try:
            token = await fetch_token(options.token_provider, server)
        except TokenError as exc:
            # A permanent token error (revoked grant, bad secret) already says how to fix it.
            raise StepError(Failure.AUTH, f"no access token: {exc}",
                            Reason.TOKEN_PERMANENT if exc.permanent else Reason.TOKEN) from None
        redactor.add(token, username=username)
        return token

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


def _classify(step: Step, exc: BaseException,
              where: str) -> tuple[Failure, str, Reason, int | None]:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _certificate_failure(exc, where)
    if isinstance(exc, ssl.SSLError):
        return (Failure.TLS, f"TLS handshake with {where} failed: {exc.reason or exc}",
                Reason.HANDSHAKE, None)
    if isinstance(exc, SMTPResponseException):
        reason = Reason.TEMPORARY if 400 <= exc.code < 500 else Reason.REJECTED
        failure = Failure.TLS if step == Step.TLS else Failure.REJECTED
        return failure, f"{exc.code} {exc.message}", reason, exc.code
    if isinstance(exc, SMTPServerDisconnected | ConnectionError | EOFError):
        if step == Step.TLS:
            return (Failure.TLS, f"{where} closed the connection during the TLS handshake",
                    Reason.HANDSHAKE, None)
        return Failure.CONNECT, f"{where} closed the connection", Reason.CLOSED, None
    if isinstance(exc, OSError):
        return Failure.CONNECT, f"{where}: {exc.strerror or exc}", Reason.CLOSED, None
    return (Failure.PROTOCOL, f"unexpected {type(exc).__name__}: {exc}", Reason.UNEXPECTED,
            None)


def _certificate_failure(exc: ssl.SSLCertVerificationError,
                         where: str) -> tuple[Failure, str, Reason, int | None]:
    message = exc.verify_message or exc.reason or str(exc)
    if exc.verify_code in _NAME_MISMATCH:
        return (Failure.TLS_VERIFY, f"certificate of {where} is for another host name "
                f"({message})", Reason.HOSTNAME_MISMATCH, None)
    if exc.verify_code == _CERT_EXPIRED:
        return (Failure.TLS_VERIFY, f"certificate of {where} has expired ({message})",
                Reason.EXPIRED, None)
    return (Failure.TLS_VERIFY, f"certificate of {where} is not trusted ({message})",
            Reason.UNTRUSTED, None)


def _waiting_for(step: Step) -> str:
    return {
        Step.DNS: "waiting for the DNS answer",
        Step.TCP: "connecting",
        Step.TLS: "negotiating TLS",
        Step.GREETING: "waiting for the greeting",
        Step.EHLO: "waiting for the EHLO reply",
        Step.AUTH: "authenticating",
    }.get(step, str(step))


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


def _tls_summary(transport: asyncio.BaseTransport | None) -> str:
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return "encrypted"
    cert = ssl_object.getpeercert() or {}
    names = [str(v) for k, v in cert.get("subjectAltName", ()) if k in ("DNS", "IP Address")]
    subject = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
    subject = subject or _name_of(cert.get("subject", ()))
    issuer = _name_of(cert.get("issuer", ()))
    parts = [ssl_object.version() or "TLS"]
    if subject:
        parts.append(f"certificate for {subject} verified" + (f" (issuer {issuer})"
                                                              if issuer else ""))
    if cert.get("notAfter"):
        parts.append(f"valid until {cert['notAfter']}")
    return ", ".join(parts)


def _name_of(rdns: Any) -> str:
    for rdn in rdns:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    for rdn in rdns:
        for key, value in rdn:
            if key == "organizationName":
                return str(value)
    return ""


def _first_line(message: str) -> str:
    return message.splitlines()[0] if message else ""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _sockaddr_text(sockaddr: Any) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
