"""The one Microsoft Graph client of the protocol layer (SPEC O5, O7, I1): the transport
(sendMail), the fetcher (incoming mail) and the probe (the API step) are thin users.

- **Connect**: one HTTP/1.1 keep-alive ``aiohttp.ClientSession`` per endpoint and proxy,
  direct or through a ``ProxyServer`` (a sixth of httpx's CPU per request, and a surge is
  bound by how fast a finished request frees its mailbox slot: docs/dispatch.md).
  Environment proxy variables are ignored: the ``proxy`` of the server is what runs.
- **TLS**: always verified (``runtime.tls``: the system CAs plus the optional CA bundle).
- **Token**: fetched through ``oauth.source`` only after the credential gate allows the
  client at this endpoint (SPEC S2). On 401 the token is invalidated and fetched again,
  once per request; a second 401 is a permanent authentication failure.
- **Throttling**: 429, 503 and 504 with a ``Retry-After`` (``runtime.backoff``) are waited
  out while the caller's rules allow (the send's deadline; the fetcher's cap per wait);
  beyond them the failure carries the wait, so the next attempt honours it.
- **One classifier** turns an HTTP status with Graph's ``{"error": {"code", "message"}}``
  body, a network error or a token problem into a :class:`MailFailure`, with the fix
  worded for what the caller does (:class:`Advice`: sending or fetching).
- The access token, the proxy password and upload URLs go into the caller's redactor.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import orjson
from yarl import URL

from reconciler.config.derive import GRAPH_ENDPOINTS
from reconciler.config.models.auth import OAuth2Auth
from reconciler.config.models.outgoing_server import NationalCloud
from reconciler.config.models.proxy_server import ProxyServerSpec, ProxyType
from reconciler.config.secrets import SecretError
from reconciler.credentials.gate import FIX, CredentialNotBound, require_client
from reconciler.mail.certificates import certificate_failure
from reconciler.mail.failure import MailFailure
from reconciler.mail.outcome import Failure
from reconciler.mail.proxies import bypasses, proxy_url
from reconciler.mail.results import describe
from reconciler.mail.steps import Reason, Step
from reconciler.mail.trace import trace
from reconciler.mail.transport import Redactor
from reconciler.oauth.source import TokenError, TokenProvider, fetch_token, invalidate_token
from reconciler.runtime.backoff import retry_after_seconds
from reconciler.runtime.tls import ssl_cause

log = logging.getLogger(__name__)

API_VERSION = "v1.0"
USER_AGENT = "reconciler-graph/1"
RETRY_AFTER_STATUS = frozenset({429, 503, 504})
NETWORK_ERRORS = (aiohttp.ClientError,)
_RECIPIENT_CODES = frozenset({"ErrorInvalidRecipients", "ErrorInvalidRecipientsTooMany"})
_MAILBOX_CODES = frozenset({"ErrorInvalidUser", "MailboxNotEnabledForRESTAPI",
                            "ResourceNotFound", "ErrorNonExistentMailbox"})


@dataclass(frozen=True, slots=True)
class GraphAnswer:
    """One HTTP answer, whichever client fetched it (its body read in full)."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive
    content: bytes
    reason_phrase: str

    def json(self) -> Any:
        return orjson.loads(self.content)


class HttpClient(Protocol):
    async def request(self, method: str, url: str, content: bytes | None,
                      headers: dict[str, str], timeout: float) -> GraphAnswer: ...

    async def aclose(self) -> None: ...


class ProxyRefused(aiohttp.ClientConnectionError):
    """The SOCKS5 proxy refused or failed the tunnel (aiohttp-socks' errors are not
    aiohttp's), so it is classified like an HTTP proxy's refusal."""


class _Client:
    """aiohttp, straight to Graph or through the server's ProxyServer (HTTP or HTTPS with
    CONNECT, aiohttp's own; SOCKS5 with aiohttp-socks, the ``socks`` extra). No
    per-request timer: the session bounds connecting and each read (``read_timeout``,
    when given); the caller's deadline bounds the rest."""

    def __init__(self, tls: ssl.SSLContext, proxy: str | None, connect_timeout: float,
                 read_timeout: float | None) -> None:
        # No connection cap: the mailboxes' limits are the cap; keep-alive for them all.
        pool: dict[str, Any] = {"ssl": tls, "limit": 0, "keepalive_timeout": 60.0}
        self._proxy = proxy
        self._refusals: tuple[type[Exception], ...] = ()
        if proxy is not None and proxy.startswith("socks5://"):
            # The socks extra (proxy_for checked it is there).
            from aiohttp_socks import (
                ProxyConnectionError,
                ProxyConnector,
                ProxyError,
                ProxyTimeoutError,
            )

            self._refusals = (ProxyConnectionError, ProxyError, ProxyTimeoutError)
            connector: aiohttp.BaseConnector = ProxyConnector.from_url(proxy, rdns=True,
                                                                       **pool)
            self._proxy = None  # the connector tunnels every connection
        else:
            connector = aiohttp.TCPConnector(**pool)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout,
                                          sock_read=read_timeout),
            headers={"User-Agent": USER_AGENT}, trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar())  # Graph sets none we would send back

    async def request(self, method: str, url: str, content: bytes | None,
                      headers: dict[str, str], timeout: float) -> GraphAnswer:
        # encoded=True: the URL is sent as built (mailbox and item ids already quoted,
        # upload URLs and nextLinks exactly as Graph gave them).
        try:
            async with self._session.request(method, URL(url, encoded=True), data=content,
                                             headers=headers, allow_redirects=False,
                                             proxy=self._proxy) as response:
                body = await response.read()
        except self._refusals as exc:
            raise ProxyRefused(str(exc)) from exc
        return GraphAnswer(response.status, response.headers, body, response.reason or "")

    async def aclose(self) -> None:
        await self._session.close()


def open_client(tls: ssl.SSLContext, proxy: str | None, connect_timeout: float,
                read_timeout: float | None = None) -> HttpClient:
    """The one client for Graph calls: direct when ``proxy`` is None, else through it."""
    return _Client(tls, proxy, connect_timeout, read_timeout)


@dataclass(frozen=True, slots=True)
class GraphTarget:
    """Where every mail call for one mailbox goes."""

    endpoint: str  # https://graph.microsoft.com
    mailbox: str
    host: str
    port: int
    users: str  # {graphEndpoint}/v1.0/users/{mailbox}

    @property
    def address(self) -> str:
        """host:port, for messages and results."""
        return f"{self.host}:{self.port}"


def graph_target(server: Any, *, cloud_default: bool = False) -> GraphTarget:
    """Where ``server`` (Outgoing or IncomingServer) goes: its ``graphEndpoint`` (or, with
    ``cloud_default``, its cloud's, as config.derive fills it) and ``mailbox`` (else
    ``email``); a config MailFailure when the endpoint is missing or not https://."""
    spec = server.spec
    default = ""
    if cloud_default:
        default = GRAPH_ENDPOINTS[NationalCloud(spec.national_cloud or NationalCloud.GLOBAL)]
    return _target(str(spec.graph_endpoint or default).rstrip("/"),
                   str(getattr(spec, "mailbox", None) or spec.email))


@functools.lru_cache(maxsize=1024)  # asked on every send; a handful of mailboxes
def _target(endpoint: str, mailbox: str) -> GraphTarget:
    parts = urlsplit(endpoint)
    if parts.scheme != "https" or not parts.hostname:
        raise _config(f"graphEndpoint {endpoint or '(none)'} is not an https:// URL",
                      "Set graphEndpoint to the Graph endpoint of your cloud, for example "
                      "https://graph.microsoft.com.")
    users = f"{endpoint}/{API_VERSION}/users/{quote(mailbox, safe='@')}"
    return GraphTarget(endpoint, mailbox, parts.hostname, parts.port or 443, users)


def proxy_for(server: Any, lookup: Callable[[Any], ProxyServerSpec | None] | None,
              host: str, redactor: Redactor) -> str | None:
    """The proxy URL of the ProxyServer ``server`` names (None: go direct), its password
    in ``redactor``; a config MailFailure when it cannot be used."""
    name = server.spec.proxy
    if not name:
        return None
    found = lookup(server) if lookup is not None else None
    if found is None:
        raise _config(f"the server uses ProxyServer {name}, which is not available here",
                      "Define the ProxyServer in the same namespace, or remove proxy from the "
                      "server; mail never goes around a configured proxy.")
    if bypasses(found, host):
        return None
    if found.type == ProxyType.SOCKS5:
        try:
            import aiohttp_socks  # noqa: F401  # aiohttp has no SOCKS of its own
        except ImportError:
            raise _config(f"ProxyServer {name} is SOCKS5, which needs the aiohttp-socks "
                          "package", "pip install 'reconciler[socks]'") from None
    try:
        return proxy_url(found, redactor)
    except SecretError as exc:
        raise _config(f"cannot read the password of ProxyServer {name}: {exc}",
                      "Set the environment variable or file the password reference names.") \
            from None


# -- what the failures advise -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Advice:
    """The fixes that depend on what the caller does with the mailbox."""

    permission: str  # what to grant on a 403
    mailbox_field: str  # where the config names the mailbox (a 404)
    missing_item: str = ""  # a 404 not about the mailbox: what to check ("" = the mailbox)
    retry: str = ""  # what happens after a transient failure


SENDING = Advice(
    "the Mail.Send permission (application permission with admin consent for client "
    "credentials, or Mail.Send delegated/shared)", "spec.mailbox (or email)")
FETCHING = Advice(
    "the Mail.ReadWrite permission (an application permission with admin consent for client "
    "credentials, or delegated Mail.ReadWrite.Shared); Mail.Read can list but not mark mail "
    "read or move it", "email in the incoming server spec",
    missing_item="Check folder in the incoming server spec.",
    retry="The fetch is retried at the next interval; if throttling persists, lengthen "
          "fetch_interval_minutes or spread mailboxes over app registrations.")


# -- one session: token, throttling, one request at a time ----------------------------------

# How a request goes on the wire: straight through the client, or through a mailbox's
# in-flight slots (the transport's lanes).
Wire = Callable[[HttpClient, str, str, bytes | None, dict[str, str], float],
                Awaitable[GraphAnswer]]


def _prepared(url: str, params: dict[str, str] | None, json: Any, content: bytes | None,
              headers: dict[str, str] | None) -> tuple[str, bytes | None, dict[str, str]]:
    sent = dict(headers or {})
    if json is not None:
        content, sent["Content-Type"] = orjson.dumps(json), "application/json"
    return (f"{url}?{urlencode(params)}" if params else url), content, sent


def _direct(client: HttpClient, method: str, url: str, content: bytes | None,
            headers: dict[str, str], timeout: float) -> Awaitable[GraphAnswer]:
    return client.request(method, url, content, headers, timeout)


@dataclass
class GraphSession:
    """Requests for one mailbox with one token: a send or a probe of the transport, the
    API step of a check, or every request of a fetcher. ``step`` says what it is doing."""

    server: Any  # OutgoingServer | IncomingServer: .spec.auth, .spec.debug, .metadata
    target: GraphTarget
    client: HttpClient
    tokens: TokenProvider | None
    redactor: Redactor
    advice: Advice
    wire: Wire = _direct
    deadline: float = math.inf  # loop time: waits for throttling must end before it
    max_wait: float = math.inf  # one Retry-After longer than this is not waited out
    max_waits: int = 1_000_000  # per request
    request_timeout: float = math.inf  # per request; else the caller's deadline
    token: str = ""
    step: str = "starting"
    waits: list[str] = field(default_factory=list)  # throttling waited out, for the result
    on_wait: Callable[[], None] | None = None
    bound: bool = False  # check_bound passed: the token may go to this endpoint

    def remaining(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

    async def authorize(self) -> str:
        """A token for this mailbox, or a MailFailure at the token step."""
        auth = self.server.spec.auth
        if not isinstance(auth, OAuth2Auth):
            raise MailFailure(Step.TOKEN, Reason.AUTH_NOT_OFFERED,
                              "Microsoft Graph accepts only OAuth2", failure=Failure.CONFIG,
                              permanent=True, likely_fix="Set auth type oauth2 (provider "
                              "microsoft) for this mailbox.")
        if self.tokens is None:
            raise MailFailure(Step.TOKEN, Reason.NO_TOKEN_PROVIDER, "auth is oauth2 but no "
                              "token provider is configured", failure=Failure.CONFIG,
                              permanent=True, likely_fix="Authorise the mailbox with "
                              "`reconcile auth login SERVER` so the daemon can obtain tokens.")
        self.check_bound()
        try:
            token = await fetch_token(self.tokens, self.server)
        except TokenError as exc:
            raise MailFailure(Step.TOKEN, Reason.TOKEN_PERMANENT if exc.permanent
                              else Reason.TOKEN, f"no access token for {self.target.mailbox}: "
                              f"{self.redactor(str(exc))}", failure=Failure.AUTH,
                              permanent=exc.permanent, likely_fix="Check client id, secret and "
                              "tenant and that admin consent was granted; re-authorise with "
                              "`reconcile auth login SERVER`.") from None
        self.redactor.add(token)
        self.redactor.add(f"Bearer {token}")
        self.token = token
        return token

    def check_bound(self) -> None:
        """An access token of this client goes only where an apply bound it (SPEC S2)."""
        auth = self.server.spec.auth
        try:
            if isinstance(auth, OAuth2Auth):
                require_client(auth, self.target.host, self.target.port)
        except CredentialNotBound as exc:
            raise MailFailure(Step.API, Reason.NOT_BOUND, str(exc), failure=Failure.CONFIG,
                              permanent=True, likely_fix=FIX) from None
        self.bound = True

    async def request(self, method: str, url: str, *, ok: tuple[int, ...] = (200,),
                      json: Any = None, content: bytes | None = None,
                      headers: dict[str, str] | None = None, params: dict[str, str] | None = None,
                      authorized: bool = True, missing_ok: bool = False) -> GraphAnswer | None:
        """One call: refresh a refused token once, wait out throttling while allowed; the
        answer when its status is in ``ok``, None for a 404 when ``missing_ok``, else a
        MailFailure."""
        url, content, sent = _prepared(url, params, json, content, headers)
        refreshed, waited = False, 0
        while True:
            if authorized:
                if not self.bound:  # a token given to the session was not checked yet
                    self.check_bound()
                sent["Authorization"] = f"Bearer {self.token or await self.authorize()}"
            answer = await self._once(method, url, content, sent)
            status = answer.status_code
            if status in ok:
                return answer
            if status == 401 and authorized and not refreshed:
                refreshed = True
                self._trace("401 from Graph while %s; fetching a new token", self.step)
                if await invalidate_token(self.tokens, self.server, self.token):
                    self.token = ""
                    continue
            wait = (retry_after_seconds(answer.headers.get("retry-after"))
                    if status in RETRY_AFTER_STATUS else None)
            if wait is not None and self._may_wait(wait, waited):
                waited += 1
                await self._wait_out(answer, wait)
                continue
            if status == 404 and missing_ok:
                return None
            raise answer_failure(answer, self.step, self.target.mailbox, self.advice,
                                 refreshed=refreshed, retry_after=wait)

    def _may_wait(self, wait: float, waited: int) -> bool:
        return wait <= self.max_wait and waited < self.max_waits and wait < self.remaining()

    async def _wait_out(self, answer: GraphAnswer, wait: float) -> None:
        code, _ = graph_error(answer)
        self.waits.append(" ".join(filter(None, (str(answer.status_code), code,
                                                 f"Retry-After {wait:g}s"))))
        if self.on_wait is not None:
            self.on_wait()
        self._trace("%s from Graph while %s; waiting %.3gs (Retry-After)", answer.status_code,
                    self.step, wait)
        await asyncio.sleep(wait)  # holding no mailbox slot: the others keep going

    async def _once(self, method: str, url: str, content: bytes | None,
                    headers: dict[str, str]) -> GraphAnswer:
        timeout = max(min(self.request_timeout, self.remaining()), 0.001)
        self._trace("> %s %s (%s)", method, url, self.step)
        try:
            answer = await self.wire(self.client, method, url, content, headers, timeout)
        except NETWORK_ERRORS as exc:  # aiohttp's timeouts too: they are ClientErrors
            self._trace("< %s %s failed: %s", method, url, exc)
            raise network_failure(exc, self.target.address, self.step, self.advice) from None
        self._trace("< %s %s", answer.status_code, answer.headers.get("request-id", ""))
        return answer

    def _trace(self, msg: str, *args: object) -> None:
        trace(self, msg, *args)


# -- the one classifier ---------------------------------------------------------------------


def graph_error(answer: GraphAnswer) -> tuple[str, str]:
    """(code, message) of Graph's error body; the reason phrase when there is none."""
    try:
        error = answer.json().get("error") or {}
    except (ValueError, AttributeError):
        return "", answer.reason_phrase
    code = str(error.get("code") or "")
    message = " ".join(str(error.get("message") or "").split())[:300]
    return code, message


def answer_failure(answer: GraphAnswer, step: str, mailbox: str, advice: Advice, *,
                   refreshed: bool = False, retry_after: float | None = None) -> MailFailure:
    """An error answer -> the failure, with a message that quotes Graph and a fix."""
    status = answer.status_code
    code, message = graph_error(answer)
    said = f"{status} {code}: {message}" if code else f"{status} {message}"
    where = f" (while {step})"

    def failed(reason: Reason, text: str, failure: Failure, fix: str = "", *,
               permanent: bool = True) -> MailFailure:
        return MailFailure(Step.API, reason, text, failure=failure, permanent=permanent,
                           code=status, likely_fix=fix,
                           retry_after=None if permanent else retry_after)

    if status == 401:
        again = " even with a freshly fetched token" if refreshed else ""
        return failed(Reason.AUTH_FAILED, f"Graph refused the access token for {mailbox}"
                      f"{again}: {said}{where}", Failure.AUTH,
                      "Check that the app registration's tenant and national cloud match "
                      "graphEndpoint and that the token is for Microsoft Graph; re-authorise "
                      "with `reconcile auth login SERVER` if the grant was revoked or consent "
                      "was withdrawn.")
    if status == 403:
        return failed(Reason.PERMISSION, f"Graph denied access to mailbox {mailbox}: "
                      f"{said}{where}", Failure.AUTH, f"Grant the app {advice.permission}; "
                      "check that no application access policy excludes this mailbox.")
    if status == 404 and advice.missing_item and code not in _MAILBOX_CODES:
        return failed(Reason.NOT_FOUND, f"Graph found nothing in {mailbox}: {said}{where}",
                      Failure.CONFIG, advice.missing_item)
    if status == 404:
        return failed(Reason.NOT_FOUND, f"Graph does not know mailbox {mailbox}: {said}{where}",
                      Failure.CONFIG, f"Check that {advice.mailbox_field} names an existing "
                      "mailbox in the app's tenant (not a group or a contact).")
    if status in (408, 429) or status >= 500:
        what = "Graph is throttling this mailbox" if status == 429 else "Graph is unavailable"
        return failed(Reason.TEMPORARY, f"{what}: {said}{where}", Failure.REJECTED,
                      advice.retry, permanent=False)
    if status == 413:
        return failed(Reason.REJECTED, f"the request is too large: {said}{where}",
                      Failure.REJECTED)
    if code in _RECIPIENT_CODES:
        return failed(Reason.REJECTED, f"Graph refused the request: {said}{where}",
                      Failure.RECIPIENTS)
    return failed(Reason.REJECTED, f"Graph refused the request: {said}{where}",
                  Failure.REJECTED, "If this persists, report the Graph error code above.")


def network_failure(exc: Exception, where: str, step: str, advice: Advice) -> MailFailure:
    """A network, proxy or TLS error (or a read timeout) -> the failure."""
    cert = (exc.certificate_error if isinstance(exc, aiohttp.ClientConnectorCertificateError)
            else ssl_cause(exc))
    if isinstance(cert, ssl.SSLCertVerificationError):
        return certificate_failure(cert, where, host_field="graphEndpoint")
    if cert is not None or isinstance(exc, aiohttp.ClientSSLError):
        return MailFailure(Step.TLS, Reason.HANDSHAKE, f"TLS handshake with {where} failed: "
                           f"{cert or exc}", failure=Failure.TLS, permanent=True,
                           likely_fix="Check graphEndpoint and the proxy.")

    def transient(step_: Step, reason: Reason, text: str, failure: Failure,
                  fix: str) -> MailFailure:
        return MailFailure(step_, reason, text, failure=failure, permanent=False, likely_fix=fix)

    if isinstance(exc, ProxyRefused | aiohttp.ClientProxyConnectionError
                  | aiohttp.ClientHttpProxyError):
        return transient(Step.TCP, Reason.REFUSED, f"the proxy refused the connection to "
                         f"{where}: {exc}", Failure.CONNECT,
                         "Check the ProxyServer's host, port and credentials.")
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return transient(Step.API, Reason.TIMEOUT, f"timed out while {step} ({where})",
                         Failure.TIMEOUT, advice.retry)
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
        return transient(Step.TCP, Reason.REFUSED, f"cannot connect to {where}: "
                         f"{describe(cause)}", Failure.CONNECT,
                         "Check graphEndpoint, DNS and firewall rules (outbound HTTPS).")
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return transient(Step.API, Reason.CLOSED, f"connection to {where} lost while {step}: "
                         f"{describe(exc)}", Failure.CONNECT, advice.retry)
    return transient(Step.API, Reason.UNEXPECTED, f"{where}: {describe(exc)}",
                     Failure.PROTOCOL, advice.retry)


def _config(message: str, fix: str) -> MailFailure:
    return MailFailure(Step.API, Reason.UNEXPECTED, message, failure=Failure.CONFIG,
                       permanent=True, likely_fix=fix)
