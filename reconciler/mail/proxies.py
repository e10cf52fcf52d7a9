"""A ProxyServer as every protocol uses it: its URL with credentials, which hosts go
around it (``noProxy``), and for SMTP, IMAP and POP3 a socket tunnelled through it."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError
from python_socks import ProxyType as PythonSocksType
from python_socks.sync import Proxy as SyncProxy

from reconciler.config.models.proxy_server import ProxyServerSpec, ProxyType
from reconciler.config.secrets import SecretError
from reconciler.credentials.gate import FIX, CredentialNotBound, present_secret
from reconciler.mail.failure import MailFailure
from reconciler.mail.outcome import Failure
from reconciler.mail.steps import Reason, Step
from reconciler.mail.transport import Redactor


def proxy_url(proxy: ProxyServerSpec, redactor: Redactor) -> str:
    """``type://user:password@host:port`` (IPv6 hosts bracketed; user and password
    percent-encoded and only when the proxy has a username).

    The password, plain and encoded (the form a URL and so an error message carries),
    goes into ``redactor``. Raises SecretError when the password cannot be read or is not
    bound to the proxy.
    """
    userinfo = ""
    if proxy.username:
        # Only where an apply bound it: the proxy's own host and port (SPEC S2).
        password = (present_secret(proxy.password, proxy.host, proxy.port)
                    if proxy.password is not None else "")
        redactor.add(password)
        redactor.add(quote(password, safe=""))
        userinfo = f"{quote(proxy.username, safe='')}:{quote(password, safe='')}@"
    host = f"[{proxy.host}]" if ":" in proxy.host else proxy.host
    return f"{proxy.type}://{userinfo}{host}:{proxy.port}"


def bypasses(proxy: ProxyServerSpec, host: str) -> bool:
    """Whether ``host`` is reached directly: a ``noProxy`` entry names it or a parent domain.

    The rule curl and most tools follow for NO_PROXY: ``example.com``, ``.example.com`` and
    ``*.example.com`` all cover example.com and every name below it; case and a trailing dot
    do not matter. Graph and EWS used to read the list differently; they share this now.
    """
    name = host.lower().rstrip(".")
    for entry in proxy.no_proxy:
        domain = entry.lower().strip().lstrip("*").lstrip(".").rstrip(".")
        if domain and (name == domain or name.endswith("." + domain)):
            return True
    return False


# -- tunnels for the socket protocols (SMTP, IMAP, POP3) -------------------------------
# The protocol client runs on the tunnelled socket as on a direct one, so TLS (implicit or
# STARTTLS) is negotiated end to end and verified against the mail server's own name.
#
# SOCKS5 (with username/password, RFC 1929) is python-socks. HTTP CONNECT is the few lines
# below: python-socks reads the proxy's reply with one recv() and drops whatever came
# with it, and SMTP, IMAP and POP3 servers speak first, so their greeting arrived with
# the "200" often enough to be lost. Here the reply is read with MSG_PEEK and only its
# own bytes are taken off the socket.

# What can carry these protocols; an https proxy (TLS to the proxy itself) is refused at
# validate for them (config.checks).
TUNNEL_TYPES = frozenset({ProxyType.HTTP, ProxyType.SOCKS5})
_MAX_REPLY = 16 * 1024  # a CONNECT reply is a status line and a few headers


def route(server: Any, lookup: Callable[[Any], ProxyServerSpec | None] | None,
          host: str) -> ProxyServerSpec | None:
    """The proxy a connection of ``server`` to ``host`` goes through: None for direct (it
    names none, or ``noProxy`` covers ``host``). A named ProxyServer that ``lookup`` cannot
    find is a config MailFailure: mail never goes around a configured proxy."""
    name = server.spec.proxy
    if not name:
        return None
    found = lookup(server) if lookup is not None else None
    if found is None:
        raise _proxy_failure(Reason.UNEXPECTED, Failure.CONFIG, f"the server uses "
                             f"ProxyServer {name}, which is not available here", "Define the "
                             "ProxyServer in the same namespace, or remove proxy from the "
                             "server.", permanent=True)
    return None if bypasses(found, host) else found


def open_tunnel(proxy: ProxyServerSpec, host: str, port: int, timeout: float | None,
                redactor: Redactor) -> socket.socket:
    """A blocking socket (``timeout`` set) connected to ``host:port`` through ``proxy``;
    raises MailFailure at Step.PROXY. The password goes into ``redactor``."""
    where = f"the {proxy.type} proxy {_address(proxy)}"
    if proxy.type not in TUNNEL_TYPES:
        raise _proxy_failure(Reason.UNEXPECTED, Failure.CONFIG, f"{where} cannot carry SMTP, "
                             "IMAP or POP3", "Use a ProxyServer of type http (CONNECT) or "
                             "socks5.", permanent=True)
    password = _password(proxy, where, redactor)
    try:
        if proxy.type == ProxyType.SOCKS5:
            sock: socket.socket = SyncProxy(
                PythonSocksType.SOCKS5, proxy.host, proxy.port, proxy.username, password,
                rdns=True).connect(host, port, timeout)
        else:
            sock = _connect_http(proxy, password, host, port, timeout, where)
    except (ProxyTimeoutError, TimeoutError):
        raise _proxy_failure(Reason.TIMEOUT, Failure.TIMEOUT, f"{where} did not answer or did "
                             f"not open the tunnel to {host}:{port} in time", "Check the "
                             "ProxyServer's host and port and that it is running.") from None
    except (ProxyConnectionError, ConnectionRefusedError, socket.gaierror) as exc:
        detail = redactor(getattr(exc, "strerror", None) or str(exc))
        raise _proxy_failure(Reason.REFUSED, Failure.CONNECT, f"cannot reach {where} "
                             f"({detail})", "Check the ProxyServer's host and port, that it "
                             "is running and that no firewall blocks this machine.") from None
    except (ProxyError, OSError) as exc:  # the handshake failed or was cut off
        detail = redactor(str(exc))
        raise _proxy_failure(Reason.REJECTED, Failure.CONNECT, f"{where} ended the handshake "
                             f"for {host}:{port} ({detail})", _REFUSED_FIX + " A proxy that "
                             "refuses a login may just hang up: check the ProxyServer's "
                             "username and password too.") from None
    sock.settimeout(timeout)
    return sock


async def open_tunnel_async(proxy: ProxyServerSpec, host: str, port: int,
                            timeout: float | None, redactor: Redactor) -> socket.socket:
    """:func:`open_tunnel` off the event loop, non-blocking (aiosmtplib's ``sock=``)."""
    sock = await asyncio.to_thread(open_tunnel, proxy, host, port, timeout, redactor)
    sock.setblocking(False)
    return sock


_REFUSED_FIX = ("The proxy may not allow this host or port (many allow CONNECT only to "
                "443), or cannot reach it: ask its admin, or list the host in the "
                "ProxyServer's noProxy.")


def _connect_http(proxy: ProxyServerSpec, password: str | None, host: str, port: int,
                  timeout: float | None, where: str) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port), timeout)
    try:
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if proxy.username:
            pair = f"{proxy.username}:{password or ''}".encode()
            head += f"Proxy-Authorization: Basic {base64.b64encode(pair).decode()}\r\n"
        sock.sendall((head + "\r\n").encode())
        status = _read_reply(sock).split(b"\r\n", 1)[0].decode("latin-1")
        parts = status.split(" ", 2)
        code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if 200 <= code < 300:
            return sock
        if code == 407:
            raise _proxy_failure(Reason.PROXY_AUTH, Failure.AUTH, f"{where} refused the login "
                                 f"({status})", "Check the ProxyServer's username and the "
                                 "password its reference points to.", permanent=True)
        raise _proxy_failure(Reason.REJECTED, Failure.CONNECT, f"{where} would not open a "
                             f"tunnel to {target} ({status or 'no HTTP reply'})", _REFUSED_FIX)
    except BaseException:
        sock.close()
        raise


def _read_reply(sock: socket.socket) -> bytes:
    """The proxy's reply up to its blank line, leaving what follows (the mail server's
    greeting) on the socket."""
    reply = b""
    while len(reply) < _MAX_REPLY:
        peeked = sock.recv(_MAX_REPLY, socket.MSG_PEEK)
        if not peeked:
            break
        end = (reply[-3:] + peeked).find(b"\r\n\r\n")
        take = len(peeked) if end < 0 else end + 4 - len(reply[-3:])
        reply += sock.recv(take)
        if end >= 0:
            return reply
    return reply if reply.endswith(b"\r\n\r\n") else b""


def _password(proxy: ProxyServerSpec, where: str, redactor: Redactor) -> str | None:
    if not proxy.username or proxy.password is None:
        return None
    try:
        password = present_secret(proxy.password, proxy.host, proxy.port)
    except CredentialNotBound as exc:
        raise _proxy_failure(Reason.NOT_BOUND, Failure.CONFIG, str(exc), FIX,
                             permanent=True) from None
    except SecretError as exc:
        raise _proxy_failure(Reason.SECRET, Failure.CONFIG, f"the password of {where} cannot "
                             f"be read ({exc})", "Set the environment variable or create the "
                             "file the ProxyServer's password reference names.",
                             permanent=True) from None
    redactor.add(password)
    return password


def _address(proxy: ProxyServerSpec) -> str:
    return f"[{proxy.host}]:{proxy.port}" if ":" in proxy.host else f"{proxy.host}:{proxy.port}"


def _proxy_failure(reason: Reason, failure: Failure, message: str, fix: str, *,
                   permanent: bool = False) -> MailFailure:
    return MailFailure(Step.PROXY, reason, message, failure=failure, permanent=permanent,
                       likely_fix=fix)
