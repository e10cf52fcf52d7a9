"""One mailbox at one EWS URL, as the transport, the fetcher and the probe all use it.

- **Threads, never the loop.** exchangelib speaks blocking HTTP (requests), so every
  call runs in the session's own thread pool (the transport's ``maxConcurrency``
  threads, one for the fetcher and the probe), matched by exchangelib's connection
  pool of the same size: a slow Exchange server holds only its own threads.
- **Credentials through the gate** (SPEC S2): the password, or an access token from
  our token provider, resolved for the URL's host and port. exchangelib gets the
  token as an ``access_token`` without client id or secret, so it never fetches or
  refreshes tokens itself; for Basic, the server's ``WWW-Authenticate`` decides
  between NTLM, Digest and Basic (on-premises Exchange usually offers only NTLM).
  Client-credential (app-only) tokens act on the mailbox by impersonation.
- **The account is cached** (and with it exchangelib's ``Protocol``: its HTTP
  sessions, the auth type it detected and the server version it asked for) until
  the credentials change; the old one is closed. The version is kept across new
  tokens, so there is no second version probe.
- **TLS and proxies** go through :class:`~reconciler.mail.ews.http.EwsHttpAdapter`
  (our verifying context; exactly the configured ProxyServer, never a silent bypass).
- **One retry rule** (exchangelib's own policy is fail-fast, see ``http``): a refused
  OAuth token (HTTP 401) is invalidated and the call tried once more with a new one;
  a busy server's back-off (``BackOffMilliseconds``, ``Retry-After``) is waited out
  on the event loop while the caller's ``may_wait`` allows. Every other failure is
  raised at once as the :class:`~reconciler.mail.failure.MailFailure` of
  :func:`~reconciler.mail.ews.errors.classify`, with secrets redacted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from exchangelib import (
    DELEGATE,
    IMPERSONATION,
    Account,
    Configuration,
    Credentials,
    OAuth2AuthorizationCodeCredentials,
)
from exchangelib.protocol import Protocol
from exchangelib.transport import OAUTH2

from reconciler.config.models.auth import BasicAuth, OAuth2Auth, OAuthGrant
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.config.models.proxy_server import ProxyServerSpec, ProxyType
from reconciler.config.secrets import SecretError
from reconciler.credentials.gate import FIX, CredentialNotBound, present_secret, require_client
from reconciler.mail.ews.errors import classify
from reconciler.mail.ews.http import (
    EwsHttpAdapter,
    FailFastWithBackOff,
    Route,
    install_adapter,
    short,
)
from reconciler.mail.failover import Endpoint
from reconciler.mail.failure import MailFailure
from reconciler.mail.outcome import Failure
from reconciler.mail.proxies import bypasses, proxy_url
from reconciler.mail.steps import Reason, Step
from reconciler.mail.trace import in_thread
from reconciler.mail.transport import Redactor
from reconciler.oauth.source import TokenError, TokenProvider, fetch_token, invalidate_token

log = logging.getLogger(__name__)

T = TypeVar("T")
Server = OutgoingServer | IncomingServer
ProxyLookup = Callable[[Any], ProxyServerSpec | None]
MAX_BUSY_WAITS = 3  # back-off waits within one call before the caller's schedule takes over
EWS_PATH = "/EWS/Exchange.asmx"


def service_url(server: Server) -> str | None:
    """``ewsUrl`` as configured, else Exchange's usual path on ``host``; None without both."""
    spec = server.spec
    if spec.ews_url:
        return str(spec.ews_url)
    return f"https://{spec.host}{EWS_PATH}" if spec.host else None


def url_endpoint(url: str, *, alternate: bool = False) -> Endpoint:
    parts = urlsplit(url)
    return Endpoint(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80),
                    alternate)


def _never(_seconds: float) -> bool:
    return False


@dataclass(frozen=True)
class Login:
    """What a call authenticates with; never logged (the values are secrets)."""

    kind: str  # basic | oauth2
    username: str
    secret: str  # the password or the access token


def _config_failure(reason: Reason, message: str, fix: str) -> MailFailure:
    return MailFailure(Step.AUTH, reason, message, failure=Failure.CONFIG, permanent=True,
                       likely_fix=fix)


class EwsSession:
    """One mailbox at one EWS URL: its credentials, route, account and threads."""

    def __init__(self, server: Server, url: str, *, mailbox: str, tls: ssl.SSLContext,
                 token_provider: TokenProvider | None, proxy_lookup: ProxyLookup | None,
                 timeout: float, threads: int = 1) -> None:
        install_adapter()
        self.server = server  # as configured now: the transport renews it on every send
        self.url = url
        self.mailbox = mailbox
        self.where = url_endpoint(url).address
        self.redactor = Redactor()
        self.login: Login | None = None
        self._tls = tls
        self._tokens = token_provider
        self._proxy_lookup = proxy_lookup
        self._timeout = timeout
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None  # made on first use, again after aclose
        self._account: Account | None = None
        self._version: Any = None

    async def open(self) -> Account:
        """Resolve the credentials and the route now, and build a new account when the
        credentials changed (no request to Exchange yet); raises MailFailure."""
        login = await self._resolve_login()
        self._route()
        if self._account is None or self.login != login:
            old, self._account = self._account, await self._run(self._new_account, login)
            self.login = login
            if old is not None:
                self._version = old.protocol.config.version  # no second version probe
                await self._run(retire_account, old)
        return self._account

    async def call(self, fn: Callable[..., T], *args: Any,
                   may_wait: Callable[[float], bool] = _never) -> T:
        """``fn(account, *args)`` in the session's threads (opening it first when needed),
        with the one retry rule; raises MailFailure."""
        token_retried = False
        waits = 0
        while True:
            account = self._account
            try:
                account = account or await self.open()
                return await self._run(fn, account, *args)
            except MailFailure as exc:  # from open(), or fn's own verdict
                failure = exc
            except Exception as exc:
                failure = self.classify(exc)
            if failure.code == 401 and not token_retried and await self._new_token(account):
                token_retried = True
                continue
            wait = failure.retry_after
            if wait is not None and waits < MAX_BUSY_WAITS and may_wait(wait):
                waits += 1
                log.info("%s; waiting %gs as it asked", failure.message, wait)
                await asyncio.sleep(wait)
                continue
            if account is not None and (failure.step in (Step.DNS, Step.TCP, Step.TLS)
                                        or failure.failure == Failure.AUTH):
                await self.reset(account)  # start clean: a new connection, new credentials
            raise failure

    def classify(self, exc: BaseException) -> MailFailure:
        login = self.login
        failure = classify(exc, self.where, username=login.username if login else None,
                           oauth=login is not None and login.kind == "oauth2",
                           mailbox=self.mailbox)
        failure.message = self.redactor(failure.message)
        failure.args = (failure.message,)
        return failure

    async def reset(self, failed: Account | None = None) -> None:
        """Drop the account (closing its connections) and the credentials; with ``failed``,
        only if that is still the account (a concurrent call may have replaced it)."""
        if failed is not None and failed is not self._account:
            return
        account, self._account, self.login = self._account, None, None
        if account is not None:
            try:
                await self._run(retire_account, account)
            except Exception as exc:  # closing must not fail the caller
                log.debug("closing the EWS session of %s: %s", self.mailbox,
                          self.redactor(short(exc)))

    async def aclose(self) -> None:
        await self.reset()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads,
                                                thread_name_prefix=f"ews-{self.where}")
        # bound to the thread: the adapter's request lines are this server's trace
        return await asyncio.get_running_loop().run_in_executor(self._executor, in_thread,
                                                                self, fn, *args)

    async def _new_token(self, refused: Account | None) -> bool:
        login = self.login
        if login is None or login.kind != "oauth2" \
                or not await invalidate_token(self._tokens, self.server, login.secret):
            return False
        log.info("%s refused the access token for %s; trying once with a new one", self.where,
                 self.mailbox)
        await self.reset(refused)
        return True

    def _new_account(self, login: Login) -> Account:
        auth = self.server.spec.auth
        app_only = isinstance(auth, OAuth2Auth) and auth.grant == OAuthGrant.CLIENT_CREDENTIALS
        config = Configuration(
            service_endpoint=self.url, credentials=_credentials(login),
            auth_type=OAUTH2 if login.kind == "oauth2" else None, version=self._version,
            retry_policy=FailFastWithBackOff(), max_connections=self._threads)
        account = Account(primary_smtp_address=self.mailbox, config=config, autodiscover=False,
                          access_type=IMPERSONATION if app_only else DELEGATE)
        # Per protocol instance, not the class attribute: another server keeps its own.
        account.protocol.TIMEOUT = self._timeout
        account.protocol.RETRY_WAIT = 1
        return account

    async def _resolve_login(self) -> Login:
        """The password or a token for the URL's host and port, resolved now."""
        auth = self.server.spec.auth
        target = url_endpoint(self.url)
        username = getattr(auth, "username", None) or str(self.server.spec.email)
        try:
            if isinstance(auth, BasicAuth):
                login = Login("basic", username,
                              present_secret(auth.password, target.host, target.port))
            elif isinstance(auth, OAuth2Auth):
                login = Login("oauth2", username, await self._token(auth, target))
            else:
                raise _config_failure(Reason.REJECTED, "EWS needs authentication",
                                      "Set auth type basic (username and password) or oauth2.")
        except CredentialNotBound as exc:
            raise _config_failure(Reason.NOT_BOUND, str(exc), FIX) from None
        except SecretError as exc:
            raise _config_failure(Reason.SECRET, f"cannot read the password: {exc}",
                                  "Set the environment variable or create the file the "
                                  "reference names (references are resolved where the daemon "
                                  "runs), or check RECONCILE_SECRET_KEY for enc: values.") \
                from None
        if self.login != login:
            self.redactor = Redactor()  # only the secrets in use: tokens come and go
        add_login_secrets(self.redactor, login)
        return login

    async def _token(self, auth: OAuth2Auth, target: Endpoint) -> str:
        if self._tokens is None:
            raise _config_failure(Reason.NO_TOKEN_PROVIDER, "OAuth2 server but no token "
                                  "provider is configured", "Authorise the mailbox with "
                                  "`reconcile auth login SERVER` so the daemon can obtain "
                                  "tokens.")
        require_client(auth, target.host, target.port)
        try:
            return await fetch_token(self._tokens, self.server)
        except TokenError as exc:
            raise MailFailure(
                Step.TOKEN, Reason.TOKEN_PERMANENT if exc.permanent else Reason.TOKEN,
                f"no access token: {self.redactor(str(exc))}", failure=Failure.AUTH,
                permanent=exc.permanent, likely_fix="Check client id, secret and tenant and "
                "that consent was granted; re-authorise with `reconcile auth login SERVER`.") \
                from None

    def _route(self) -> None:
        """TLS and proxy settings for the URL, through exchangelib's adapter hook. A server
        naming a proxy that cannot be found is never sent around it."""
        proxies: dict[str, str] = {}
        name = self.server.spec.proxy
        if name:
            proxy = self._proxy_lookup(self.server) if self._proxy_lookup is not None else None
            if proxy is None:
                raise MailFailure(Step.API, Reason.REJECTED, f"server uses ProxyServer {name!r}, "
                                  "which is not available here; nothing goes around it",
                                  failure=Failure.CONFIG, permanent=True, likely_fix="Define "
                                  "the ProxyServer in the same namespace, or remove proxy from "
                                  "the server.")
            if not bypasses(proxy, urlsplit(self.url).hostname or ""):
                try:
                    if proxy.type == ProxyType.SOCKS5:
                        raise ValueError("SOCKS5 proxies are not supported for EWS "
                                         "(only http/https)")
                    address = proxy_url(proxy, self.redactor)
                except (SecretError, ValueError) as exc:
                    raise MailFailure(Step.API, Reason.REJECTED, f"proxy {name}: {exc}",
                                      failure=Failure.CONFIG, permanent=True, likely_fix="Fix "
                                      "the ProxyServer (type http or https, readable "
                                      "password).") from None
                proxies = {"http": address, "https": address}
        EwsHttpAdapter.register(self.url, Route(self._tls, proxies))


def _credentials(login: Login) -> Any:
    if login.kind == "basic":
        return Credentials(login.username, login.secret)
    # Only an access token: exchangelib then uses it as is and never asks an identity
    # provider itself (no client id/secret, so no refresh of its own).
    return OAuth2AuthorizationCodeCredentials(
        access_token={"access_token": login.secret, "token_type": "Bearer"})


def retire_account(account: Account) -> None:
    """Close the account's HTTP sessions and drop its Protocol from exchangelib's cache."""
    protocol = account.protocol
    with contextlib.suppress(KeyError):
        del Protocol[protocol.config]
    protocol.close()


def add_login_secrets(redactor: Redactor, login: Login) -> None:
    redactor.add(login.secret, username=login.username)
    if login.kind == "basic":
        redactor.add(base64.b64encode(f"{login.username}:{login.secret}".encode()).decode())


def check_mailbox(account: Account) -> str:
    """One cheap authenticated call (GetFolder on the mailbox's root folder); blocking.
    Returns what the server said."""
    root = account.root
    version = account.protocol.version
    return (f"GetFolder {root.name or 'root'} of {account.primary_smtp_address}: "
            f"{version.fullname if version else 'Exchange'} ({version.build if version else '?'})")
