"""What every connection check shares (SPEC O9, O10): the walk that runs one step at a
time within the check's budget and classifies whatever a step raised, and the steps
every protocol starts with, on a socket of its own so a failure says whether the name,
the port or the certificate is the problem:

    DNS → TCP → TLS (implicit, on the connected socket) [→ token, for OAuth2]

SMTP (``mail.smtp.probe``) goes on with its greeting, EHLO and AUTH; Graph and EWS
(``mail.graph.probe``, ``mail.ews.probe``) with a token and one cheap API call.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from reconciler.config.models.auth import OAuth2Auth
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.mail.certificates import certificate_failure
from reconciler.mail.failover import Endpoint
from reconciler.mail.failure import MailFailure
from reconciler.mail.outcome import Failure
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.proxies import open_tunnel_async
from reconciler.mail.steps import Reason, Step, StepResult
from reconciler.mail.transport import Redactor
from reconciler.oauth.source import TokenError, fetch_token

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Walk:
    """One check of one host: its budget, its redactor and the results so far."""

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
        except Exception as exc:
            # A MailFailure is one the step itself understood; anything else is classified.
            failure = exc if isinstance(exc, MailFailure) else _classify(step, exc, self)
            if failure is not exc and failure.reason == Reason.UNEXPECTED:
                log.warning("unexpected error in the %s step against %s: %s", step, self.where,
                            self.redactor(failure.message))
            self.results.append(StepResult(step, False, self.redactor(failure.message),
                                           time.perf_counter() - started, failure.failure,
                                           failure.code, failure.reason,
                                           self.redactor(failure.likely_fix)))
            return None
        self.results.append(StepResult(step, True, self.redactor(detail),
                                       time.perf_counter() - started))
        return value

    async def reach(self, endpoint: Endpoint, options: ProbeOptions | None = None,
                    server: Any = None) -> socket.socket | None:
        """The DNS and TCP steps (through the proxy ``server`` names, when ``options`` can
        look it up: the proxy step in TCP's place): the connected socket, or None when one
        failed."""
        loop = asyncio.get_running_loop()
        try:
            proxy = options.proxy_for(server, endpoint.host) if options else None
        except MailFailure as exc:
            failure = exc

            async def refuse() -> tuple[None, str]:
                raise failure
            return await self.run(Step.PROXY, refuse)
        if proxy is not None:
            return await self._tunnel(endpoint, proxy)
        addresses = await self.run(Step.DNS, lambda: dns_step(loop, endpoint))
        if addresses is None:
            return None
        return await self.run(Step.TCP, lambda: tcp_step(loop, addresses, self))

    async def _tunnel(self, endpoint: Endpoint,
                      proxy: ProxyServerSpec) -> socket.socket | None:
        """The mail server's name is the proxy's to resolve; the proxy step resolves the
        proxy's own name, connects to it and opens the tunnel (so any failure there,
        its name included, is named as the proxy's)."""
        at = Endpoint(proxy.host, proxy.port).address

        async def resolved_there() -> tuple[bool, str]:
            return True, f"{endpoint.host} is resolved by the proxy {at}"

        async def tunnel() -> tuple[socket.socket, str]:
            sock = await open_tunnel_async(proxy, endpoint.host, endpoint.port,
                                           self.remaining(), self.redactor)
            return sock, f"tunnel to {endpoint.address} through the {proxy.type} proxy {at}"
        if await self.run(Step.DNS, resolved_there) is None:
            return None
        return await self.run(Step.PROXY, tunnel)

    async def reach_tls(self, endpoint: Endpoint, options: ProbeOptions,
                        server: Any = None) -> bool:
        """DNS, TCP and TLS for an HTTPS API (Graph, EWS); True when all three passed.
        Through the proxy ``server`` names when given; else the direct path (the outgoing
        checks: their client libraries take the proxy themselves)."""
        sock = await (self.reach(endpoint) if server is None
                      else self.reach(endpoint, options, server))
        if sock is None:
            return False
        loop = asyncio.get_running_loop()
        return await self.run(Step.TLS, lambda: tls_step(loop, sock, endpoint, options)) \
            is not None


async def dns_step(loop: asyncio.AbstractEventLoop,
                   endpoint: Endpoint) -> tuple[list[tuple[Any, ...]], str]:
    if endpoint.host.lower().rstrip(".").endswith(".invalid"):
        # RFC 6761: names under .invalid never resolve, so no query is sent for them
        raise _dns_failure(f"{endpoint.host} does not resolve (a name under .invalid never "
                           "exists)")
    try:
        infos = await loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            raise _dns_failure(f"temporary DNS failure looking up {endpoint.host} "
                               f"({exc.strerror})", Reason.DNS_TEMPORARY) from None
        raise _dns_failure(f"{endpoint.host} does not resolve ({exc.strerror})") from None
    if not infos:
        raise _dns_failure(f"{endpoint.host} has no address")
    if _is_ip(endpoint.host):
        return list(infos), f"{endpoint.host} is an IP address (no lookup needed)"
    shown = list(dict.fromkeys(str(info[4][0]) for info in infos))
    more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
    return list(infos), f"{endpoint.host} → {', '.join(shown[:3])}{more}"


def _dns_failure(message: str, reason: Reason = Reason.NXDOMAIN) -> MailFailure:
    return _failure(Step.DNS, Failure.CONNECT, reason, message)


async def tcp_step(loop: asyncio.AbstractEventLoop, infos: list[tuple[Any, ...]],
                   walk: Walk) -> tuple[socket.socket, str]:
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
    raise _failure(Step.TCP, failure, reason, detail)


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


async def tls_step(loop: asyncio.AbstractEventLoop, sock: socket.socket, endpoint: Endpoint,
                   options: ProbeOptions) -> tuple[bool, str]:
    """Implicit TLS on the connected socket, then close: HTTPS APIs (Graph, EWS) get their
    own connection from their client library afterwards."""
    try:
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=sock,
                                                    ssl=options.tls(),
                                                    server_hostname=endpoint.host)
    except BaseException:
        sock.close()
        raise
    try:
        return True, tls_summary(transport)
    finally:
        transport.abort()  # type: ignore[attr-defined]


async def token_step(server: OutgoingServer, options: ProbeOptions,
                     redactor: Redactor) -> tuple[str, str]:
    """The token step of Graph and EWS (EWS walks it for OAuth2 servers only): a token from
    the probe's provider, added to ``redactor``."""
    auth = server.spec.auth
    if not isinstance(auth, OAuth2Auth):
        raise MailFailure(Step.TOKEN, Reason.AUTH_NOT_OFFERED, "Microsoft Graph accepts only "
                          f"OAuth2; this server's auth type is {auth.type}",
                          failure=Failure.CONFIG, permanent=True)
    if options.token_provider is None:
        raise MailFailure(Step.TOKEN, Reason.NO_TOKEN_PROVIDER, "OAuth2 server but no token "
                          "provider is configured", failure=Failure.CONFIG, permanent=True)
    try:
        token = await fetch_token(options.token_provider, server)
    except TokenError as exc:
        # A permanent token error (revoked grant, bad secret) already says how to fix it.
        raise MailFailure(Step.TOKEN,
                          Reason.TOKEN_PERMANENT if exc.permanent else Reason.TOKEN,
                          f"no access token: {exc}", failure=Failure.AUTH,
                          permanent=exc.permanent) from None
    redactor.add(token)
    return token, f"access token obtained ({auth.grant}, client {auth.client_id})"


def _classify(step: Step, exc: BaseException, walk: Walk) -> MailFailure:
    where = walk.where
    if isinstance(exc, TimeoutError):  # before OSError, of which it is one
        return _failure(step, Failure.TIMEOUT, Reason.TIMEOUT, f"no answer from {where} within "
                        f"{walk.budget:g}s ({_waiting_for(step)})")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return certificate_failure(exc, where)
    if isinstance(exc, ssl.SSLError):
        return _failure(step, Failure.TLS, Reason.HANDSHAKE,
                        f"TLS handshake with {where} failed: {exc.reason or exc}")
    if isinstance(exc, ConnectionError | EOFError):
        if step == Step.TLS:
            return _failure(step, Failure.TLS, Reason.HANDSHAKE,
                            f"{where} closed the connection during the TLS handshake")
        return _failure(step, Failure.CONNECT, Reason.CLOSED, f"{where} closed the connection")
    if isinstance(exc, OSError):
        return _failure(step, Failure.CONNECT, Reason.CLOSED, f"{where}: {exc.strerror or exc}")
    return _failure(step, Failure.PROTOCOL, Reason.UNEXPECTED,
                    f"unexpected {type(exc).__name__}: {exc}")


def _failure(step: Step, failure: Failure, reason: Reason, message: str) -> MailFailure:
    """A failure of a step that the walk classified; whether a retry may help is the
    caller's to judge (a probe only reports it)."""
    return MailFailure(step, reason, message, failure=failure, permanent=False)


def _waiting_for(step: Step) -> str:
    return {
        Step.DNS: "waiting for the DNS answer",
        Step.TCP: "connecting",
        Step.TLS: "negotiating TLS",
        Step.GREETING: "waiting for the greeting",
        Step.EHLO: "waiting for the EHLO reply",
        Step.AUTH: "authenticating",
    }.get(step, str(step))


def tls_summary(transport: asyncio.BaseTransport | None) -> str:
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    return ssl_summary(ssl_object)


def ssl_summary(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """The TLS version and the verified certificate, for people."""
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
    """The commonName of a certificate name, else its organizationName."""
    names: dict[str, str] = {}
    for rdn in rdns:
        for key, value in rdn:
            names.setdefault(key, str(value))
    return names.get("commonName") or names.get("organizationName", "")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _sockaddr_text(sockaddr: Any) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
