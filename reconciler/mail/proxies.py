"""A ProxyServer as every protocol uses it: its URL with credentials, which hosts go
around it (``noProxy``), and for SMTP, IMAP and POP3 a socket tunnelled through it."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError
from python_socks.async_.asyncio import Proxy as AsyncProxy
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
# python-socks does the HTTP CONNECT and SOCKS5 handshakes (with username/password); the
# protocol client then runs on the tunnelled socket as on a direct one, so TLS (implicit
# or STARTTLS) is negotiated end to end and verified against the mail server's own name.

# What python-socks can tunnel through; an https proxy (TLS to the proxy itself) is
# refused at validate for these protocols (config.checks).
TUNNEL_TYPES = frozenset({ProxyType.HTTP, ProxyType.SOCKS5})
_PROXY_ERRORS = (ProxyError, ProxyConnectionError, ProxyTimeoutError)


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


def _tunnel(proxy: ProxyServerSpec, redactor: Redactor) -> str:
    """The proxy's URL for python-socks, or a config MailFailure naming the proxy."""
    where = f"{proxy.type} proxy {proxy.host}:{proxy.port}"
    if proxy.type not in TUNNEL_TYPES:
        raise _proxy_failure(Reason.UNEXPECTED, Failure.CONFIG, f"an {where} cannot carry "
                             "SMTP, IMAP or POP3", "Use a ProxyServer of type http (CONNECT) "
                             "or socks5.", permanent=True)
    try:
        return proxy_url(proxy, redactor)
    except CredentialNotBound as exc:
        raise _proxy_failure(Reason.NOT_BOUND, Failure.CONFIG, str(exc), FIX,
                             permanent=True) from None
    except SecretError as exc:
        raise _proxy_failure(Reason.SECRET, Failure.CONFIG, f"the password of the {where} "
                             f"cannot be read ({exc})", "Set the environment variable or "
                             "create the file the ProxyServer's password reference names.",
                             permanent=True) from None


def open_tunnel(proxy: ProxyServerSpec, host: str, port: int, timeout: float | None,
                redactor: Redactor) -> socket.socket:
    """A blocking socket connected to ``host:port`` through ``proxy`` (for imaplib and
    poplib, in their thread); raises MailFailure at Step.PROXY."""
    url = _tunnel(proxy, redactor)
    try:
        sock: socket.socket = SyncProxy.from_url(url, rdns=True).connect(host, port, timeout)
    except _PROXY_ERRORS as exc:
        raise tunnel_failure(exc, proxy, host, port, redactor) from None
    sock.settimeout(timeout)
    return sock


async def open_tunnel_async(proxy: ProxyServerSpec, host: str, port: int,
                            timeout: float | None, redactor: Redactor) -> socket.socket:
    """A non-blocking socket connected to ``host:port`` through ``proxy`` (aiosmtplib's
    ``sock=``); raises MailFailure at Step.PROXY."""
    url = _tunnel(proxy, redactor)
    try:
        return await AsyncProxy.from_url(url, rdns=True).connect(host, port, timeout)
    except _PROXY_ERRORS as exc:
        raise tunnel_failure(exc, proxy, host, port, redactor) from None


def tunnel_failure(exc: Exception, proxy: ProxyServerSpec, host: str, port: int,
                   redactor: Redactor) -> MailFailure:
    """What went wrong at the proxy, in the words of the ProxyServer's fields."""
    where = f"the {proxy.type} proxy {proxy.host}:{proxy.port}"
    detail = redactor(str(exc))
    if isinstance(exc, ProxyTimeoutError):
        return _proxy_failure(Reason.TIMEOUT, Failure.TIMEOUT, f"{where} did not answer or "
                              f"did not open the tunnel to {host}:{port} in time",
                              "Check the ProxyServer's host and port and that it is running.")
    if isinstance(exc, ProxyConnectionError):
        return _proxy_failure(Reason.REFUSED, Failure.CONNECT, f"cannot reach {where} "
                              f"({detail})", "Check the ProxyServer's host and port, that it "
                              "is running and that no firewall blocks this machine.")
    code = getattr(exc, "error_code", None)
    if code == 407 or any(w in detail.lower() for w in ("authentication", "auth method")):
        return _proxy_failure(Reason.PROXY_AUTH, Failure.AUTH, f"{where} refused the login "
                              f"({detail})", "Check the ProxyServer's username and the "
                              "password its reference points to.", permanent=True)
    return _proxy_failure(Reason.REJECTED, Failure.CONNECT, f"{where} would not open a tunnel "
                          f"to {host}:{port} ({detail})", "The proxy may not allow this host "
                          "or port (many allow CONNECT only to 443), or cannot reach it: ask "
                          "its admin, or list the host in the ProxyServer's noProxy.")


def _proxy_failure(reason: Reason, failure: Failure, message: str, fix: str, *,
                   permanent: bool = False) -> MailFailure:
    return MailFailure(Step.PROXY, reason, message, failure=failure, permanent=permanent,
                       likely_fix=fix)
