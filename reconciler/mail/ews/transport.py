"""EWS transport (SPEC O5, O7) on exchangelib: CreateItem with SendOnly / SendAndSaveCopy.

- **Threads, never the loop.** exchangelib speaks blocking HTTP (requests), so
  every call runs in a thread pool of the server's own (``maxConcurrency``
  threads, derived as 2 for EWS), matched by exchangelib's session pool of
  the same size. One slow Exchange server can use up only its own threads.
- **Cached per server**: the ``Configuration``/``Account`` and with them
  exchangelib's ``Protocol`` (its HTTP sessions, the auth type it detected and
  the server version it asked for), so a send is one CreateItem on a warm
  connection. Auth type: OAuth2 as configured; for Basic the server's
  ``WWW-Authenticate`` decides between NTLM, Digest and Basic (on-premises
  Exchange usually offers only NTLM on EWS).
- **Tokens stay ours.** OAuth2 access tokens come from the injected
  :class:`TokenProvider` (one cache, one refresh for every transport) and are
  handed to exchangelib as an ``access_token`` on
  ``OAuth2AuthorizationCodeCredentials`` without client id or secret, so
  exchangelib never fetches or refreshes tokens itself. A new token means a
  new ``Account`` (and ``Protocol``; the old one is closed). On HTTP 401 the
  token is invalidated and the send tried once more with a fresh one.
  Client-credential (app-only) servers act on the mailbox by impersonation.
- **Retry policy: fail fast, then ours.** exchangelib's ``FaultTolerance``
  would sleep inside the thread for up to its ``max_wait``, treat every 401
  as "busy" (so a wrong password would be retried until the deadline instead
  of failing), and could keep going after our deadline gave up, sending a
  message we already reported as not sent. ``FailFast`` makes one HTTP
  attempt per call; this transport then honours the server's back-off
  (``BackOffMilliseconds`` of ErrorServerBusy, ``Retry-After`` of a 503) by
  waiting on the event loop and trying again while the server's
  ``timeoutSeconds`` allows; otherwise the result is TRANSIENT and
  ``dispatch.retry`` schedules the next attempt. Only answers that say the
  request was not processed are retried here, never a timeout.
- **TLS and proxies**: exchangelib's documented hook for HTTP settings is the
  ``BaseProtocol.HTTP_ADAPTER_CLS`` class attribute, which is process-wide.
  :class:`EwsHttpAdapter` is set there once; it looks up per service
  endpoint what to use (our verifying ``SSLContext``: system CAs plus the
  extra CA bundle; the server's ProxyServer), and behaves like the stock
  adapter for any endpoint it does not know.
- Secrets: the resolved password, the token and their Basic/Bearer header
  forms go into a :class:`Redactor`; exchangelib's DEBUG log, which prints
  request headers, is scrubbed by :class:`_HeaderScrubber`.

Classification (O7) is in :mod:`reconciler.mail.ews.errors`; the table is
in ``docs/dispatch.md``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from exchangelib import (
    Account,
    Body,
    FileAttachment,
    HTMLBody,
    Mailbox,
    Message,
)

from reconciler.config.desired import digest_of
from reconciler.config.models.auth import BasicAuth, NoAuth, OAuth2Auth, OAuthGrant
from reconciler.config.models.outgoing_server import OutgoingProtocol, OutgoingServer
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.config.secrets import SecretError, redact
from reconciler.credentials.gate import CredentialNotBound, present_secret, require_client
from reconciler.mail.envelope import Envelope
from reconciler.mail.ews.errors import EwsFailed, Verdict, classify
from reconciler.mail.ews.session import (  # shared with the EWS fetcher
    EwsHttpAdapter,
    Login,
    add_login_secrets,
    install_adapter,
    open_account,
    proxy_url,
    retire_account,
)
from reconciler.mail.ews.session import Route as _Route
from reconciler.mail.ews.session import bypasses as _bypasses
from reconciler.mail.ews.session import short as _short
from reconciler.mail.failover import Endpoint, HostSelector
from reconciler.mail.outcome import (
    Failure,
    Health,
    HealthStatus,
    Outcome,
    SendResult,
    token_outcome,
)
from reconciler.mail.progress import SendProgress
from reconciler.mail.results import (
    every_recipient,
    log_unexpected,
    logged_result,
    unsendable,
)
from reconciler.mail.transport import Redactor, Transport
from reconciler.oauth.source import TokenError, TokenProvider, fetch_token, invalidate_token
from reconciler.policy.functions import is_exchange_online
from reconciler.runtime.tls import transport_tls

log = logging.getLogger(__name__)

DEFAULT_THREADS = 2  # the derived maxConcurrency of EWS servers
MAX_INLINE_RETRIES = 3  # back-off waits within one send before leaving it to dispatch.retry
EWS_PATH = "/EWS/Exchange.asmx"

# A proxy for a server: the ProxyServer its spec names, or None. The daemon
# resolves names against the live config; a server naming a proxy that the
# lookup cannot find is not sent directly (that would bypass the admin's route).
ProxyLookup = Callable[[OutgoingServer], ProxyServerSpec | None]


def ews_url_for(server: OutgoingServer, endpoint: Endpoint | None = None) -> str:
    """The service URL for the main host (``ewsUrl`` as configured) or the alternate host
    (the same URL on the alternate host and port)."""
    spec = server.spec
    base = spec.ews_url or f"https://{spec.host}{EWS_PATH}"
    if endpoint is None or not endpoint.alternate:
        return base
    parts = urlsplit(base)
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    netloc = host if endpoint.port == 443 else f"{host}:{endpoint.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def url_endpoint(url: str, *, alternate: bool = False) -> Endpoint:
    parts = urlsplit(url)
    return Endpoint(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80),
                    alternate)


def new_account(server: OutgoingServer, url: str, login: Login, *, timeout: float,
                threads: int, version: Any = None) -> Account:
    """The sending mailbox's exchangelib Account; no network I/O until it is used."""
    auth = server.spec.auth
    app_only = isinstance(auth, OAuth2Auth) and auth.grant == OAuthGrant.CLIENT_CREDENTIALS
    return open_account(url, login, mailbox=str(server.spec.mailbox or server.spec.email),
                        app_only=app_only, timeout=timeout, threads=threads, version=version)


# -- the message ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Parts:
    subject: str
    text: str | None
    html: str | None
    attachments: tuple[tuple[str, str, bytes], ...]
    in_reply_to: str | None
    references: str | None


def _parts(envelope: Envelope) -> _Parts:
    parsed = envelope.message
    html = parsed.get_body(preferencelist=("html",))
    text = parsed.get_body(preferencelist=("plain",))
    return _Parts(
        subject=str(parsed["Subject"] or ""),
        text=text.get_content() if text is not None else None,
        html=html.get_content() if html is not None else None,
        attachments=tuple((p.get_filename() or "attachment", p.get_content_type(),
                           p.get_payload(decode=True) or b"")
                          for p in parsed.iter_attachments()),
        in_reply_to=str(parsed["In-Reply-To"]) if parsed["In-Reply-To"] else None,
        references=str(parsed["References"]) if parsed["References"] else None,
    )


def _message(account: Account, envelope: Envelope, parts: _Parts) -> Message:
    def box(email: str, name: str | None = None) -> Mailbox:
        return Mailbox(email_address=email, name=name) if name else Mailbox(email_address=email)

    # Exchange keeps one body per item; with an HTML part it writes the text part itself.
    body = HTMLBody(parts.html) if parts.html is not None else Body(parts.text or "")
    fields: dict[str, Any] = {
        "subject": parts.subject,
        "body": body,
        "author": box(envelope.mail_from, envelope.sender_name),
        "to_recipients": [box(m.email, m.name) for m in envelope.to] or None,
        "cc_recipients": [box(m.email, m.name) for m in envelope.cc] or None,
        "bcc_recipients": [box(m.email, m.name) for m in envelope.bcc] or None,
        "reply_to": [box(envelope.reply_to)] if envelope.reply_to else None,
        # Same Message-ID on every attempt, so a copy sent after an ambiguous failure
        # is recognisable downstream, as with SMTP.
        "message_id": envelope.message_id,
        "in_reply_to": parts.in_reply_to,
        "references": parts.references,
        "attachments": [FileAttachment(name=n, content_type=t, content=d)
                        for n, t, d in parts.attachments] or None,
    }
    return Message(account=account, **{k: v for k, v in fields.items() if v is not None})


# -- the transport ----------------------------------------------------------------------


@dataclass
class _Link:
    """One server's exchangelib account, its threads and what it last used."""

    executor: ThreadPoolExecutor
    account: Account | None = None
    login_fingerprint: str | None = None
    version: Any = None  # kept across new tokens: no second version probe


@dataclass
class _Progress(SendProgress):
    deadline: float = float("inf")  # loop time


class EwsTransport(Transport):
    protocol = "ews"

    def __init__(
        self,
        *,
        ca_file: str | Path | None = None,
        token_provider: TokenProvider | None = None,
        selector: HostSelector | None = None,
        proxy_lookup: ProxyLookup | None = None,
    ) -> None:
        install_adapter()
        self._tls = transport_tls(ca_file)
        self._token_provider = token_provider
        self.selector = selector or HostSelector()
        self._proxy_lookup = proxy_lookup
        self._links: dict[tuple[object, ...], _Link] = {}
        self._warned: set[tuple[str, str]] = set()

    # -- public API -------------------------------------------------------

    async def send(self, envelope: Envelope, server: OutgoingServer) -> SendResult:
        spec = server.spec
        refused = unsendable(envelope, server, OutgoingProtocol.EWS, "EWS")
        if refused is not None:
            return refused
        self.warn_exchange_online(server)
        redactor = Redactor()
        progress = _Progress()
        timeout = asyncio.timeout(spec.timeout_seconds)
        try:
            async with timeout:
                progress.deadline = timeout.when() or float("inf")
                return await self._send(envelope, server, redactor, progress)
        except TimeoutError as exc:
            if not timeout.expired():
                return self._unexpected(exc, server, envelope, progress, redactor)
            verdict = Verdict(Outcome.TRANSIENT, Failure.TIMEOUT,
                              f"deadline of {spec.timeout_seconds:g}s exceeded while "
                              f"{progress.step}", maybe_sent=progress.step.startswith("sending"))
            return self._finish(server, envelope, progress, redactor, verdict)
        except Exception as exc:
            return self._unexpected(exc, server, envelope, progress, redactor)

    async def probe(self, server: OutgoingServer, *, alternate: bool = False) -> Health:
        """GetFolder on the mailbox's root folder, with a fresh account (never the cached one)."""
        spec = server.spec
        endpoint = self._endpoints(server)[-1 if alternate else 0]
        url = ews_url_for(server, endpoint)
        redactor = Redactor()
        try:
            async with asyncio.timeout(spec.timeout_seconds):
                login = await self.login(server, redactor, url)
                self.route(server, url, redactor)
                await asyncio.to_thread(check_mailbox, server, url, login, spec.timeout_seconds)
        except EwsFailed as exc:
            return Health(HealthStatus.UNREACHABLE, endpoint.address,
                          redactor(exc.verdict.detail), exc.verdict.failure, "auth")
        except TimeoutError:
            return Health(HealthStatus.UNREACHABLE, endpoint.address, "timed out",
                          Failure.TIMEOUT, "connect")
        except Exception as exc:
            verdict = classify(exc, endpoint.address)
            step = "tls" if verdict.tls_reason else "connect" if verdict.unreachable else "api"
            return Health(HealthStatus.UNREACHABLE, endpoint.address, redactor(verdict.detail),
                          verdict.failure, step)
        return Health(HealthStatus.REACHABLE, endpoint.address,
                      f"EWS answered for {spec.mailbox or spec.email} (auth {spec.auth.type})")

    async def aclose(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            if link.account is not None:
                await asyncio.to_thread(retire_account, link.account)
            link.executor.shutdown(wait=False, cancel_futures=True)

    # -- pieces the health probe shares ------------------------------------------

    async def login(self, server: OutgoingServer, redactor: Redactor, url: str) -> Login:
        """The password or a token for ``url``, resolved now; raises EwsFailed (also when
        no apply bound the credential to the URL's host, SPEC S2)."""
        auth = server.spec.auth
        target = url_endpoint(url)
        if isinstance(auth, BasicAuth):
            username = auth.username or str(server.spec.email)
            try:
                password = present_secret(auth.password, target.host, target.port)
            except CredentialNotBound as exc:
                raise EwsFailed(Verdict(Outcome.PERMANENT, Failure.CONFIG, str(exc))) from None
            except SecretError as exc:
                raise EwsFailed(Verdict(Outcome.PERMANENT, Failure.CONFIG,
                                        f"cannot read the password: {exc}")) from None
            login = Login("basic", username, password)
        elif isinstance(auth, OAuth2Auth):
            username = auth.username or str(server.spec.email)
            if self._token_provider is None:
                raise EwsFailed(Verdict(Outcome.PERMANENT, Failure.CONFIG,
                                        "OAuth2 server but no token provider is configured"))
            try:
                require_client(auth, target.host, target.port)
            except CredentialNotBound as exc:
                raise EwsFailed(Verdict(Outcome.PERMANENT, Failure.CONFIG, str(exc))) from None
            try:
                token = await fetch_token(self._token_provider, server)
            except TokenError as exc:
                raise EwsFailed(Verdict(token_outcome(exc), Failure.AUTH,
                                        f"no access token: {exc}")) from None
            login = Login("oauth2", username, token)
        else:
            assert isinstance(auth, NoAuth)
            raise EwsFailed(Verdict(Outcome.PERMANENT, Failure.CONFIG,
                                    "EWS needs authentication: set auth type basic or oauth2"))
        add_login_secrets(redactor, login)
        return login

    def route(self, server: OutgoingServer, url: str, redactor: Redactor) -> None:
        """Register TLS and proxy settings for ``url``; raises EwsFailed for a bad proxy."""
        proxies: dict[str, str] = {}
        name = server.spec.proxy
        if name:
            proxy = self._proxy_lookup(server) if self._proxy_lookup is not None else None
            if proxy is None:
                raise EwsFailed(Verdict(Outcome.PERMANENT, Failure.CONFIG,
                                        f"server uses ProxyServer {name!r}, which is not "
                                        "available here; it is not sent around the proxy"))
            if not _bypasses(proxy, urlsplit(url).hostname or ""):
                try:
                    address = proxy_url(proxy, redactor)
                except (SecretError, ValueError) as exc:
                    raise EwsFailed(Verdict(Outcome.PERMANENT, Failure.CONFIG,
                                            f"proxy {name}: {exc}")) from None
                proxies = {"http": address, "https": address}
        EwsHttpAdapter.register(url, _Route(self._tls, proxies))

    def warn_exchange_online(self, server: OutgoingServer) -> None:
        key = (server.metadata.namespace, server.metadata.name)
        if key in self._warned:
            return
        self._warned.add(key)
        if is_exchange_online(server.spec.ews_url) or is_exchange_online(server.spec.host):
            log.warning("%s uses EWS against Exchange Online, which Microsoft blocks from "
                        "October 2026 and removes in April 2027; move it to protocol graph",
                        server.display)

    # -- the send -----------------------------------------------------------

    def _endpoints(self, server: OutgoingServer) -> tuple[Endpoint, ...]:
        try:
            return self.selector.candidates(server.spec)
        except ValueError:  # only ewsUrl given: its host is the one host
            return (url_endpoint(ews_url_for(server)),)

    async def _send(self, envelope: Envelope, server: OutgoingServer, redactor: Redactor,
                    progress: _Progress) -> SendResult:
        parts = _parts(envelope)
        candidates = self._endpoints(server)
        for endpoint in candidates:
            progress.endpoint = endpoint
            url = ews_url_for(server, endpoint)
            try:
                await self._deliver_with_retries(envelope, parts, server, url, redactor,
                                                 progress)
            except EwsFailed as exc:
                verdict = exc.verdict
                if verdict.unreachable and endpoint is not candidates[-1]:
                    progress.give_up_on(self.selector, endpoint, redactor(verdict.detail))
                    continue
                if verdict.unreachable:
                    self.selector.mark_down(endpoint, redactor(verdict.detail))
                return self._finish(server, envelope, progress, redactor, verdict)
            progress.reached(self.selector, endpoint)
            detail = (f"sent by {server.spec.mailbox or server.spec.email} to "
                      f"{len(envelope.rcpt_to)} recipients"
                      f"{' (copy in Sent Items)' if server.spec.save_to_sent_items else ''}"
                      f"{progress.failover_note()}")
            return self._finish(server, envelope, progress, redactor,
                                Verdict(Outcome.SENT, Failure.PROTOCOL, detail))
        raise AssertionError("no endpoint tried")  # pragma: no cover - candidates is never empty

    async def _deliver_with_retries(self, envelope: Envelope, parts: _Parts,
                                    server: OutgoingServer, url: str, redactor: Redactor,
                                    progress: _Progress) -> None:
        token_retried = False
        busy_waits = 0
        while True:
            progress.step = "authenticating"
            login = await self.login(server, redactor, url)
            self.route(server, url, redactor)
            link = self._link(server, url)
            try:
                await self._run(link, server, url, login, envelope, parts, progress)
                return
            except EwsFailed as exc:
                verdict = exc.verdict
            if verdict.auth_refused and login.kind == "oauth2" and not token_retried:
                token_retried = True
                if await invalidate_token(self._token_provider, server, login.secret):
                    log.info("%s refused the access token; trying once with a new one",
                             server.display)
                    continue
            wait = verdict.back_off
            if wait is not None and busy_waits < MAX_INLINE_RETRIES:
                # Only when the wait and another try fit in the send's deadline;
                # otherwise dispatch.retry schedules the next attempt.
                remaining = progress.deadline - asyncio.get_running_loop().time()
                if wait < remaining:
                    busy_waits += 1
                    progress.step = f"waiting {wait:g}s as the busy server asked"
                    log.info("%s: %s; waiting %gs before trying again", server.display,
                             redactor(verdict.detail), wait)
                    await asyncio.sleep(wait)
                    continue
            raise EwsFailed(verdict)

    def _link(self, server: OutgoingServer, url: str) -> _Link:
        spec = server.spec
        threads = spec.max_concurrency or DEFAULT_THREADS
        auth = digest_of(redact(spec.auth.model_dump(mode="json", by_alias=True)))
        key = (url, str(spec.mailbox or spec.email).lower(), auth, threads)
        link = self._links.get(key)
        if link is None:
            link = _Link(ThreadPoolExecutor(threads, thread_name_prefix=f"ews-{spec.host}"))
            self._links[key] = link
        return link

    async def _run(self, link: _Link, server: OutgoingServer, url: str, login: Login,
                   envelope: Envelope, parts: _Parts, progress: _Progress) -> None:
        loop = asyncio.get_running_loop()
        timeout = server.spec.timeout_seconds
        threads = server.spec.max_concurrency or DEFAULT_THREADS
        save = server.spec.save_to_sent_items

        def work() -> None:
            if link.account is None or link.login_fingerprint != login.fingerprint:
                old, link.account = link.account, new_account(
                    server, url, login, timeout=timeout, threads=threads, version=link.version)
                link.login_fingerprint = login.fingerprint
                if old is not None:
                    retire_account(old)
            account = link.account
            progress.step = "asking the server for its EWS version"
            link.version = account.protocol.version
            message = _message(account, envelope, parts)
            if save:
                progress.step = "looking up the Sent Items folder"
                _ = account.sent
                progress.step = f"sending (CreateItem SendAndSaveCopy to {url})"
                message.send_and_save()
            else:
                progress.step = f"sending (CreateItem SendOnly to {url})"
                message.send(save_copy=False)

        where = progress.endpoint.address if progress.endpoint else url
        try:
            await loop.run_in_executor(link.executor, work)
        except Exception as exc:
            verdict = classify(exc, where)
            if verdict.auth_refused or verdict.unreachable:
                link.account, link.login_fingerprint = None, None  # start clean next time
            raise EwsFailed(verdict) from None

    # -- results ----------------------------------------------------------

    def _finish(self, server: OutgoingServer, envelope: Envelope, progress: _Progress,
                redactor: Redactor, verdict: Verdict) -> SendResult:
        detail = verdict.detail
        if verdict.maybe_sent:
            # The answer to CreateItem never came: Exchange may have sent it. A retry
            # keeps the Message-ID, so receivers can spot the copy.
            detail += "; the server may have sent the message"
        outcome = verdict.outcome
        failure = None if outcome == Outcome.SENT else verdict.failure
        # EWS answers for the whole message: every recipient shares the outcome, with the
        # ResponseCode as the reason and the HTTP status (401, 403) as the code.
        status = int(verdict.code) if verdict.code and verdict.code.isdigit() else None
        recipients = every_recipient(envelope, outcome, status, "" if outcome == Outcome.SENT
                                     else redactor(verdict.code or ""))
        return logged_result(
            log, envelope, server, redactor, outcome, failure, detail, recipients=recipients,
            server_reply=verdict.code or ("NoError" if outcome == Outcome.SENT else ""),
            host=progress.host, used_alternate=progress.used_alternate,
            # The busy server's own wait, when it did not fit this attempt: the next
            # attempt is scheduled no earlier.
            retry_after=verdict.back_off if outcome == Outcome.TRANSIENT else None)

    def _unexpected(self, exc: BaseException, server: OutgoingServer, envelope: Envelope,
                    progress: _Progress, redactor: Redactor) -> SendResult:
        log_unexpected(log, server, exc, redactor)
        verdict = Verdict(Outcome.TRANSIENT, Failure.PROTOCOL,
                          f"unexpected error while {progress.step}: {type(exc).__name__}: "
                          f"{_short(exc)}")
        return self._finish(server, envelope, progress, redactor, verdict)


def check_mailbox(server: OutgoingServer, url: str, login: Login, timeout: float) -> str:
    """One cheap authenticated call (GetFolder on the mailbox's root folder), on a fresh
    account; blocking. Raises exchangelib's errors. Returns what the server said."""
    account = new_account(server, url, login, timeout=timeout, threads=1)
    try:
        root = account.root
        version = account.protocol.version
    finally:
        retire_account(account)
    return (f"GetFolder {root.name or 'root'} of {account.primary_smtp_address}: "
            f"{version.fullname if version else 'Exchange'} ({version.build if version else '?'})")
