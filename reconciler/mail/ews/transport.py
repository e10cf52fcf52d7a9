"""EWS transport (SPEC O5, O7) on exchangelib: CreateItem with SendOnly / SendAndSaveCopy.

The session (:mod:`reconciler.mail.ews.session`: threads, credentials, TLS, proxy,
the cached account, token refresh and busy waits) is shared with the fetcher and the
probe; one session per server, URL and auth. What is the transport's own:

- **Busy servers within the deadline.** exchangelib fails fast; the server's back-off
  is waited out only while the wait and another try fit in ``timeoutSeconds``,
  otherwise the result is TRANSIENT with the server's wait as ``retry_after`` and
  ``dispatch.retry`` schedules the next attempt. A timeout is never retried here.
- **Failover** (O6): a host that was not reached at all (DNS, TCP) is marked down and
  the alternate tried, with the same Message-ID on every attempt.
- **Maybe sent**: when the answer to CreateItem never came, Exchange may have sent the
  message; the result says so.

Classification (O7) is :func:`reconciler.mail.ews.errors.classify`; the table is in
``docs/dispatch.md``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from exchangelib import Account, Body, FileAttachment, HTMLBody, Mailbox, Message

from reconciler.config.desired import digest_of
from reconciler.config.models.outgoing_server import OutgoingProtocol, OutgoingServer
from reconciler.config.secrets import redact
from reconciler.mail.envelope import Envelope
from reconciler.mail.ews.errors import response_code
from reconciler.mail.ews.http import short
from reconciler.mail.ews.session import (
    EwsSession,
    ProxyLookup,
    check_mailbox,
    service_url,
    url_endpoint,
)
from reconciler.mail.failover import Endpoint, HostSelector, SendProgress
from reconciler.mail.failure import MailFailure
from reconciler.mail.outcome import Failure, Health, HealthStatus, Outcome, SendResult
from reconciler.mail.results import every_recipient, log_unexpected, logged_result, unsendable
from reconciler.mail.steps import Reason, Step
from reconciler.mail.transport import Redactor, Transport
from reconciler.oauth.source import TokenProvider
from reconciler.policy.functions import is_exchange_online
from reconciler.runtime.tls import transport_tls

log = logging.getLogger(__name__)

DEFAULT_THREADS = 2  # the derived maxConcurrency of EWS servers
_HEALTH_STEPS = {Step.DNS: "connect", Step.TCP: "connect", Step.TLS: "tls", Step.AUTH: "auth",
                 Step.TOKEN: "auth"}


def ews_url_for(server: OutgoingServer, endpoint: Endpoint | None = None) -> str:
    """The service URL for the main host (``ewsUrl`` as configured) or the alternate host
    (the same URL on the alternate host and port)."""
    base = service_url(server) or ""
    if endpoint is None or not endpoint.alternate:
        return base
    parts = urlsplit(base)
    host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    netloc = host if endpoint.port == 443 else f"{host}:{endpoint.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def unreachable(failure: MailFailure) -> bool:
    """The host was not reached at all: the alternate host may be."""
    return failure.step in (Step.DNS, Step.TCP)


def _in_flight(failure: MailFailure) -> bool:
    """The request went out and its answer never came (not a proxy that refused the tunnel,
    nor a host never reached): the server may have done what it asked."""
    return failure.step == Step.API and failure.failure in (Failure.TIMEOUT, Failure.CONNECT) \
        and failure.reason in (Reason.TEMPORARY, Reason.TIMEOUT)


# -- the message ------------------------------------------------------------------------


Attachment = tuple[str, str, bytes]  # name, content type, content


def _fields(envelope: Envelope) -> tuple[dict[str, Any], list[Attachment]]:
    """The message's EWS fields and attachments, read once; each attempt builds its own
    :class:`Message` from them (:func:`_message`)."""
    parsed = envelope.message
    html = parsed.get_body(preferencelist=("html",))
    text = parsed.get_body(preferencelist=("plain",))

    def box(email: str, name: str | None = None) -> Mailbox:
        return Mailbox(email_address=email, name=name) if name else Mailbox(email_address=email)

    fields: dict[str, Any] = {
        "subject": str(parsed["Subject"] or ""),
        # Exchange keeps one body per item; with an HTML part it writes the text part itself.
        "body": HTMLBody(html.get_content()) if html is not None
        else Body(text.get_content() if text is not None else ""),
        "author": box(envelope.mail_from, envelope.sender_name),
        "to_recipients": [box(m.email, m.name) for m in envelope.to] or None,
        "cc_recipients": [box(m.email, m.name) for m in envelope.cc] or None,
        "bcc_recipients": [box(m.email, m.name) for m in envelope.bcc] or None,
        "reply_to": [box(envelope.reply_to)] if envelope.reply_to else None,
        # Same Message-ID on every attempt, so a copy sent after an ambiguous failure
        # is recognisable downstream, as with SMTP.
        "message_id": envelope.message_id,
        "in_reply_to": str(parsed["In-Reply-To"]) if parsed["In-Reply-To"] else None,
        "references": str(parsed["References"]) if parsed["References"] else None,
    }
    attachments = [(p.get_filename() or "attachment", p.get_content_type(),
                    p.get_payload(decode=True) or b"") for p in parsed.iter_attachments()]
    return {k: v for k, v in fields.items() if v is not None}, attachments


def _message(account: Account, fields: dict[str, Any], attachments: list[Attachment]) -> Message:
    files = [FileAttachment(name=n, content_type=t, content=d) for n, t, d in attachments]
    return Message(account=account, attachments=files or None, **fields)


# -- the transport ----------------------------------------------------------------------


@dataclass
class _Progress(SendProgress):
    deadline: float = float("inf")  # loop time
    session: EwsSession | None = None

    @property
    def redactor(self) -> Redactor:
        """The session's: it knows the secrets in use (also after a token refresh)."""
        return self.session.redactor if self.session is not None else Redactor()


class EwsTransport(Transport):
    protocol = "ews"

    def __init__(self, *, ca_file: str | Path | None = None,
                 token_provider: TokenProvider | None = None,
                 selector: HostSelector | None = None,
                 proxy_lookup: ProxyLookup | None = None) -> None:
        self._tls = transport_tls(ca_file)
        self._token_provider = token_provider
        self.selector = selector or HostSelector()
        self._proxy_lookup = proxy_lookup
        self._sessions: dict[tuple[object, ...], EwsSession] = {}
        self._warned: set[tuple[str, str]] = set()

    # -- public API -------------------------------------------------------

    async def send(self, envelope: Envelope, server: OutgoingServer) -> SendResult:
        spec = server.spec
        refused = unsendable(envelope, server, OutgoingProtocol.EWS, "EWS")
        if refused is not None:
            return refused
        self.warn_exchange_online(server)
        progress = _Progress()
        timeout = asyncio.timeout(spec.timeout_seconds)
        try:
            async with timeout:
                progress.deadline = timeout.when() or float("inf")
                return await self._send(envelope, server, progress)
        except TimeoutError as exc:
            if not timeout.expired():
                return self._unexpected(exc, server, envelope, progress)
            failure = MailFailure(Step.API, Reason.TIMEOUT, f"deadline of "
                                  f"{spec.timeout_seconds:g}s exceeded while {progress.step}",
                                  failure=Failure.TIMEOUT, permanent=False)
            return self._finish(server, envelope, progress, failure)
        except Exception as exc:
            return self._unexpected(exc, server, envelope, progress)

    async def probe(self, server: OutgoingServer, *, alternate: bool = False) -> Health:
        """GetFolder on the mailbox's root folder, in a fresh session (never the cached one)."""
        spec = server.spec
        endpoint = self._endpoints(server)[-1 if alternate else 0]
        session = self.new_session(server, ews_url_for(server, endpoint), threads=1)
        try:
            async with asyncio.timeout(spec.timeout_seconds):
                await session.call(check_mailbox)
        except MailFailure as failure:
            return Health(HealthStatus.UNREACHABLE, endpoint.address, failure.message,
                          failure.failure, _HEALTH_STEPS.get(failure.step, "api"))
        except TimeoutError:
            return Health(HealthStatus.UNREACHABLE, endpoint.address, "timed out",
                          Failure.TIMEOUT, "connect")
        finally:
            await session.aclose()
        return Health(HealthStatus.REACHABLE, endpoint.address,
                      f"EWS answered for {spec.mailbox or spec.email} (auth {spec.auth.type})")

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.aclose()

    def new_session(self, server: OutgoingServer, url: str, *, threads: int,
                    timeout: float | None = None) -> EwsSession:
        """A session for the sending mailbox at ``url``, configured as this transport's."""
        return EwsSession(server, url, mailbox=str(server.spec.mailbox or server.spec.email),
                          tls=self._tls, token_provider=self._token_provider,
                          proxy_lookup=self._proxy_lookup,
                          timeout=timeout or server.spec.timeout_seconds, threads=threads)

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

    def _session(self, server: OutgoingServer, url: str) -> EwsSession:
        spec = server.spec
        threads = spec.max_concurrency or DEFAULT_THREADS
        auth = digest_of(redact(spec.auth.model_dump(mode="json", by_alias=True)))
        key = (url, str(spec.mailbox or spec.email).lower(), auth, threads, spec.timeout_seconds)
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = self.new_session(server, url, threads=threads)
        session.server = server  # its proxy and secret references as configured now
        return session

    async def _send(self, envelope: Envelope, server: OutgoingServer,
                    progress: _Progress) -> SendResult:
        fields = _fields(envelope)
        candidates = self._endpoints(server)
        for endpoint in candidates:
            progress.endpoint = endpoint
            try:
                await self._deliver(fields, server, ews_url_for(server, endpoint), progress)
            except MailFailure as failure:
                if unreachable(failure) and endpoint is not candidates[-1]:
                    progress.give_up_on(self.selector, endpoint, failure.message)
                    continue
                if unreachable(failure):
                    self.selector.mark_down(endpoint, failure.message)
                return self._finish(server, envelope, progress, failure)
            progress.reached(self.selector, endpoint)
            return self._finish(server, envelope, progress, None)
        raise AssertionError("no endpoint tried")  # pragma: no cover - candidates is never empty

    async def _deliver(self, fields: tuple[dict[str, Any], list[Attachment]],
                       server: OutgoingServer, url: str, progress: _Progress) -> None:
        session = progress.session = self._session(server, url)
        progress.step = "authenticating"
        await session.open()  # the credentials as they are now (a token may have changed)
        loop = asyncio.get_running_loop()
        save = server.spec.save_to_sent_items

        def work(account: Account) -> None:
            progress.step = "asking the server for its EWS version"
            _ = account.protocol.version
            message = _message(account, *fields)
            if save:
                progress.step = "looking up the Sent Items folder"
                _ = account.sent
                progress.step = f"sending (CreateItem SendAndSaveCopy to {url})"
                message.send_and_save()
            else:
                progress.step = f"sending (CreateItem SendOnly to {url})"
                message.send(save_copy=False)

        # A busy server is waited out only when the wait and another try fit the deadline.
        await session.call(work, may_wait=lambda wait: wait < progress.deadline - loop.time())

    # -- results ----------------------------------------------------------

    def _finish(self, server: OutgoingServer, envelope: Envelope, progress: _Progress,
                failure: MailFailure | None) -> SendResult:
        if failure is None:
            spec = server.spec
            copy = " (copy in Sent Items)" if spec.save_to_sent_items else ""
            return logged_result(
                log, envelope, server, progress.redactor, Outcome.SENT, None,
                f"sent by {spec.mailbox or spec.email} to {len(envelope.rcpt_to)} recipients"
                f"{copy}{progress.failover_note()}", server_reply="NoError",
                recipients=every_recipient(envelope, Outcome.SENT),
                host=progress.host, used_alternate=progress.used_alternate)
        detail = failure.message
        if progress.step.startswith("sending") and _in_flight(failure):
            # The answer to CreateItem never came: Exchange may have sent it. A retry
            # keeps the Message-ID, so receivers can spot the copy.
            detail += "; the server may have sent the message"
        # EWS answers for the whole message: every recipient shares the outcome, with the
        # ResponseCode as the reason and the HTTP status (401, 403) as the code.
        reply = response_code(failure) or (str(failure.code) if failure.code else "")
        recipients = every_recipient(envelope, failure.outcome, failure.code, reply)
        return logged_result(
            log, envelope, server, progress.redactor, failure.outcome, failure.failure, detail,
            recipients=recipients, server_reply=reply, host=progress.host,
            used_alternate=progress.used_alternate,
            # The busy server's own wait, when it did not fit this attempt: the next
            # attempt is scheduled no earlier.
            retry_after=None if failure.permanent else failure.retry_after)

    def _unexpected(self, exc: BaseException, server: OutgoingServer, envelope: Envelope,
                    progress: _Progress) -> SendResult:
        log_unexpected(log, server, exc, progress.redactor)
        failure = MailFailure(Step.API, Reason.UNEXPECTED, f"unexpected error while "
                              f"{progress.step}: {type(exc).__name__}: {short(exc)}",
                              failure=Failure.PROTOCOL, permanent=False)
        return self._finish(server, envelope, progress, failure)
