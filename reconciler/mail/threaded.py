"""What the IMAP and POP3 fetchers share: the endpoint, TLS, credentials and the
thread their blocking client (IMAPClient, poplib) runs in.

Each fetcher owns one worker thread. IMAPClient and poplib objects are not
thread-safe, so every call for one session must go through the same thread
in order; a single-worker executor gives exactly that, and a slow or idling
mailbox never takes a thread from the event loop's shared pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from reconciler.config.derive import INCOMING_PORTS
from reconciler.config.endpoints import host_endpoint
from reconciler.config.models.auth import BasicAuth, NoAuth, OAuth2Auth
from reconciler.config.models.incoming_server import IncomingProtocol, IncomingServer
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.config.secrets import SecretError
from reconciler.credentials.gate import (
    FIX,
    CredentialNotBound,
    client_of,
    present_secret_at,
    require,
)
from reconciler.mail.fetch_errors import Where, config_error, username_of
from reconciler.mail.fetcher import (
    AlreadyDone,
    FetchedMail,
    Fetcher,
    FetchError,
    FetchErrorKind,
    is_done,
)
from reconciler.mail.proxies import open_tunnel, route
from reconciler.mail.steps import Reason, Step
from reconciler.mail.trace import in_thread
from reconciler.mail.transport import Redactor
from reconciler.oauth.source import TokenError, TokenProvider, fetch_token
from reconciler.runtime.tls import transport_tls

T = TypeVar("T")
# Opens a connected, blocking socket to the mail server; given the connect timeout.
Connect = Callable[[float | None], socket.socket]
ProxyLookup = Callable[[IncomingServer], ProxyServerSpec | None]


def close_now(client: Any) -> None:
    """Close a client's socket at once, without a goodbye (``shutdown`` on IMAPClient and
    on the POP3 client); never raises."""
    with contextlib.suppress(Exception):
        client.shutdown()


@dataclass(frozen=True)
class Credentials:
    """Resolved for one login and dropped after it; never kept on the fetcher."""

    username: str
    password: str | None = None
    token: str | None = None


class ThreadedFetcher(Fetcher):
    """A fetcher whose protocol client blocks; runs it in the fetcher's own thread."""

    def __init__(self, server: IncomingServer, *, token_provider: TokenProvider | None,
                 ca_file: str | Path | None, timeout: float,
                 proxy_lookup: ProxyLookup | None = None) -> None:
        super().__init__(server)
        self._proxy_lookup = proxy_lookup
        self._token_provider = token_provider
        self._ca_file = ca_file
        self._timeout = timeout
        self._executor: ThreadPoolExecutor | None = None
        self.redactor = Redactor()
        spec = server.spec
        if not spec.host:
            raise config_error(server, "no host is set",
                               "Set host to the mail server's name (for example "
                               "imap.example.com).", step=Step.DNS)
        protocol = IncomingProtocol(spec.protocol)
        self.where = Where(server, str(spec.host), int(spec.port or INCOMING_PORTS[protocol]))
        self.folder = str(spec.folder)

    # Exceptions of the protocol client that end the session, and those that only
    # refuse one command (the session stays usable).
    _broken: tuple[type[BaseException], ...] = (OSError, EOFError)
    _refused: tuple[type[BaseException], ...] = ()
    _client: Any = None

    @abstractmethod
    def _open(self, credentials: Credentials) -> Any:
        """Connect, secure the channel and log in (in the thread); returns the client."""

    @abstractmethod
    def _classify(self, exc: BaseException, doing: str) -> FetchError:
        """The protocol's one classifier: the FetchError for ``exc`` raised while ``doing``."""

    def _new_session(self) -> None:
        """Forget what the previous session knew; runs just before each open."""

    async def connect(self) -> None:
        if self._client is not None:
            return
        credentials = await self._credentials()
        self._new_session()
        try:
            self._client = await self._run(self._open, credentials)
        except BaseException:
            self._release_thread()
            raise

    async def _call(self, step: str, fn: Callable[..., T], *args: object) -> T:
        """Run one operation on the session (connecting first if needed); classify failures."""
        if self._client is None:
            await self.connect()
        try:
            return await self._run(fn, *args)
        except FetchError:
            raise
        except self._broken as exc:
            error = self._classify(exc, step)
            self._drop()
            raise error from None
        except self._refused as exc:
            raise self._classify(exc, step) from None

    async def _stream(self, listing: list[tuple[str, int]], already_done: AlreadyDone,
                      limit: int, download: Callable[[int, str], FetchedMail | None],
                      ) -> AsyncIterator[FetchedMail]:
        """Up to ``limit`` mails of ``listing`` (marker, uid; oldest first) not done yet,
        downloaded one at a time; ``download`` answers None for a mail gone since."""
        yielded = 0
        for marker, uid in listing:
            if yielded >= limit:
                return
            if await is_done(already_done, marker):
                continue
            mail = await self._call("downloading a mail", download, uid, marker)
            if mail is not None:
                yielded += 1
                yield mail

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            close_now(client)
        self._release_thread()

    def _session(self) -> Any:
        """The open client, in the thread; a dropped session reads as the server ending it."""
        if self._client is None:
            raise self._broken[0]("not connected")
        return self._client

    async def aclose(self) -> None:
        try:
            if self._client is not None and self._executor is not None:
                with contextlib.suppress(Exception):  # the session is over either way
                    await self._run(self._client.logout)
        finally:
            self._drop()

    def _socket(self, timeout: float | None) -> socket.socket:
        """The connection to the mail server (in the thread): direct, or tunnelled through
        the ProxyServer the server names (a MailFailure at the proxy step if that fails)."""
        host, port = self.where.host, self.where.port
        proxy = route(self.server, self._proxy_lookup, host)
        if proxy is None:
            return socket.create_connection((host, port), timeout)
        return open_tunnel(proxy, host, port, timeout, self.redactor)

    def _tls(self) -> ssl.SSLContext:
        return transport_tls(self._ca_file)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"{self.protocol}-{self.server.metadata.name}")
        # bound to the thread: the protocol client's lines are this server's trace
        return await asyncio.get_running_loop().run_in_executor(self._executor, in_thread,
                                                                self, fn, *args)

    def _release_thread(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    async def _credentials(self) -> Credentials:
        """Checks what can fail before the network, then resolves the secret for one login."""
        if self.where.host.lower().rstrip(".").endswith(".invalid"):
            # RFC 6761: a name under .invalid never exists, so no DNS query is sent for it
            raise FetchError(FetchErrorKind.CONNECT,
                             f"{self.where.host} does not resolve (a name under .invalid "
                             "never exists)",
                             f"Set host in incoming server {self.where.name} to the mail "
                             "server's real name.", step=Step.DNS, reason=Reason.NXDOMAIN)
        auth = self.server.spec.auth
        username = username_of(self.server)
        if isinstance(auth, NoAuth):
            return Credentials(username)
        at = host_endpoint(self.where.host, self.where.port)
        if isinstance(auth, BasicAuth):
            password = self._password(auth, at)
            self.redactor.add(password, username=username)
            return Credentials(username, password=password)
        token = await self._token(auth, username, at)
        self.redactor.add(token, username=username)
        return Credentials(username, token=token)

    def _password(self, auth: BasicAuth, at: str) -> str:
        """The password a basic-auth reference names, for the endpoint ``at`` (host:port), or
        a config FetchError saying why not (unreadable, or not bound to ``at``: SPEC S2)."""
        try:
            return present_secret_at(auth.password, at)
        except CredentialNotBound as exc:
            raise config_error(self.server, str(exc), FIX, step=Step.AUTH,
                               reason=Reason.NOT_BOUND) from None
        except SecretError as exc:
            raise config_error(self.server, f"the password cannot be read ({exc})",
                               "Set the environment variable or create the file the reference "
                               "names (references are resolved where the daemon runs), or "
                               "check RECONCILE_SECRET_KEY for enc: values.", step=Step.AUTH,
                               reason=Reason.SECRET) from None

    async def _token(self, auth: OAuth2Auth, username: str, at: str) -> str:
        """An OAuth2 access token to present at ``at`` (host:port); a FetchError (never the
        secret) when none, or when the client is not bound to ``at`` (SPEC S2)."""
        try:
            require(client_of(auth), at)
        except CredentialNotBound as exc:
            raise config_error(self.server, str(exc), FIX, step=Step.TOKEN,
                               reason=Reason.NOT_BOUND) from None
        if self._token_provider is None:
            raise config_error(self.server, "auth is oauth2 but no token provider is available",
                               "Authorise the mailbox with `reconcile auth login SERVER` so the "
                               "daemon can obtain tokens.", step=Step.TOKEN,
                               reason=Reason.NO_TOKEN_PROVIDER)
        try:
            return await fetch_token(self._token_provider, self.server)
        except TokenError as exc:
            raise FetchError(FetchErrorKind.AUTH,
                             f"no access token for {username}: {self.redactor(str(exc))}",
                             "Check client id, secret and tenant and that consent was granted; "
                             "re-authorise with `reconcile auth login SERVER`.", step=Step.TOKEN,
                             reason=Reason.TOKEN_PERMANENT if exc.permanent else Reason.TOKEN,
                             permanent=exc.permanent) from None


def xoauth2(username: str, token: str) -> bytes:
    """The XOAUTH2 initial response (before base64), as Google and Microsoft define it."""
    return f"user={username}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer(username: str, token: str, host: str, port: int) -> bytes:
    """RFC 7628 OAUTHBEARER initial response (before base64)."""
    user = username.replace("=", "=3D").replace(",", "=2C")
    return f"n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()
