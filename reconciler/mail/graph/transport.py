"""Microsoft Graph transport (SPEC O5, O7): sendMail through ``client.GraphSession``.

- ``POST {graphEndpoint}/v1.0/users/{mailbox}/sendMail`` with the JSON message
  (``graph.message``); 202 means accepted. Attachments above 3 MB together
  (or a request above Graph's 4 MB limit, or a 413) go the long way: create a draft,
  one upload session per large attachment with chunks of at most 4 MB (a multiple of
  320 KiB, as Graph requires) and ``Content-Range``, then ``POST .../send``.
- One keep-alive client per endpoint and proxy for the life of the transport (one per
  daemon), and **at most ``maxConcurrency`` requests in flight per mailbox**
  (``graph.slots``).
- **Throttling is waited out here, not in the outbox**, while the send's deadline
  (``timeoutSeconds``) allows; only a longer ``Retry-After`` ends the attempt TRANSIENT
  (carrying the wait) and the worker's backoff takes over. A surge is then bound by
  Graph's throughput, not by exponential backoff.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

import orjson

from reconciler.config.models.outgoing_server import OutgoingProtocol, OutgoingServer
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.mail.envelope import Envelope
from reconciler.mail.failure import MailFailure
from reconciler.mail.graph.client import (
    NETWORK_ERRORS,
    SENDING,
    GraphAnswer,
    GraphSession,
    HttpClient,
    graph_target,
    open_client,
    proxy_for,
)
from reconciler.mail.graph.message import (
    MAX_REQUEST_BYTES,
    GraphAttachment,
    GraphMessage,
    graph_message,
    mime_request_size,
)
from reconciler.mail.graph.probe import read_mailbox
from reconciler.mail.graph.slots import MailboxSlots, MailboxStats
from reconciler.mail.outcome import (
    Failure,
    Health,
    HealthStatus,
    Outcome,
    RecipientResult,
    SendResult,
)
from reconciler.mail.results import (
    describe,
    every_recipient,
    log_unexpected,
    logged_result,
    unsendable,
)
from reconciler.mail.transport import Redactor, Transport
from reconciler.oauth.source import TokenProvider
from reconciler.runtime.tls import transport_tls

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 4  # Graph's concurrent requests per mailbox
LANE_FACTOR = 2  # sends the worker may hand over per mailbox slot (see lane_width)
UPLOAD_CHUNK = 12 * 320 * 1024  # 3.75 MiB: a multiple of 320 KiB below the 4 MB limit
_DRAFT_CLEANUP_S = 5.0

# The ProxyServer a server names, looked up in the config it was routed with.
ProxyLookup = Callable[[OutgoingServer], ProxyServerSpec | None]


class GraphTransport(Transport):
    protocol = "graph"

    def __init__(
        self,
        *,
        ca_file: str | Path | None = None,
        token_provider: TokenProvider | None = None,
        proxy_lookup: ProxyLookup | None = None,
        connect_timeout: float = 15.0,
        upload_chunk: int = UPLOAD_CHUNK,
    ) -> None:
        if upload_chunk <= 0 or upload_chunk % (320 * 1024) or upload_chunk > MAX_REQUEST_BYTES:
            raise ValueError("upload_chunk must be a multiple of 320 KiB of at most 4 MB")
        self._tls = transport_tls(ca_file)
        self._token_provider = token_provider
        self._proxies = proxy_lookup
        self._connect_timeout = connect_timeout
        self._chunk = upload_chunk
        self._clients: dict[tuple[str, str | None], HttpClient] = {}
        self._mailboxes: dict[tuple[str, str, int], MailboxSlots] = {}

    # -- public API -------------------------------------------------------

    async def send(self, envelope: Envelope, server: OutgoingServer) -> SendResult:
        spec = server.spec
        refused = unsendable(envelope, server, OutgoingProtocol.GRAPH, "Microsoft Graph")
        if refused is not None:
            return refused
        redactor = Redactor()
        timeout = asyncio.timeout(spec.timeout_seconds)
        session: GraphSession | None = None
        try:
            async with timeout:
                session = self._session(server, redactor)
                return await self._send(session, envelope)
        except MailFailure as exc:
            return self._finish(session, server, envelope, redactor, exc.outcome, exc.failure,
                                exc.user_text, code=exc.code, retry_after=exc.retry_after)
        except TimeoutError as exc:
            if not timeout.expired():
                return self._unexpected(exc, session, server, envelope, redactor)
            step = session.step if session else "starting"
            detail = f"deadline of {spec.timeout_seconds:g}s exceeded while {step}"
            if session is not None and session.waits:
                detail += f" (after waiting out throttling: {'; '.join(session.waits)})"
            if step.startswith(("sending the message", "sending the draft")):
                # The request left; Graph may have accepted it. A retry keeps the
                # internetMessageId, so receivers can spot the copy.
                detail += "; Graph may have accepted the message"
            return self._finish(session, server, envelope, redactor, Outcome.TRANSIENT,
                                Failure.TIMEOUT, detail)
        except Exception as exc:
            return self._unexpected(exc, session, server, envelope, redactor)

    async def probe(self, server: OutgoingServer) -> Health:
        """Fetch a token and read the mailbox (``GET /users/{m}?$select=id,mail``)."""
        redactor = Redactor()
        session: GraphSession | None = None
        try:
            async with asyncio.timeout(server.spec.timeout_seconds):
                session = self._session(server, redactor)
                session.step = "fetching an access token"
                await session.authorize()
                detail = await read_mailbox(session)
        except MailFailure as exc:  # its step: token, api, or tcp / tls for the network
            return Health(HealthStatus.UNREACHABLE, session.target.address if session else None,
                          redactor(exc.user_text), exc.failure, str(exc.step))
        except TimeoutError:
            return Health(HealthStatus.UNREACHABLE,
                          session.target.address if session else None,
                          f"timed out while {session.step if session else 'starting'}",
                          Failure.TIMEOUT, "api")
        return Health(HealthStatus.REACHABLE, session.target.address, f"token accepted, {detail}")

    async def aclose(self) -> None:
        for mailbox in self._mailboxes.values():
            await mailbox.aclose()
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    def lane_width(self, server: OutgoingServer) -> int:
        """The worker's lane for this server (``dispatch.lanes.SelfLimiting``): twice the
        mailbox limit. The limit itself is kept here, per mailbox; the extra sends wait
        composed for a slot, or wait out a ``Retry-After`` without holding one."""
        return LANE_FACTOR * (server.spec.max_concurrency or DEFAULT_CONCURRENCY)

    def mailbox_stats(self) -> dict[str, MailboxStats]:
        """Per mailbox (``endpoint mailbox``): the limit, requests in flight now, the most
        ever in flight, and throttling answers waited out (metrics, tests)."""
        return {f"{k[0]} {k[1]}": MailboxStats(m.size, m.in_flight, m.max_in_flight,
                                               m.throttled)
                for k, m in self._mailboxes.items()}

    # -- the send ---------------------------------------------------------

    def _session(self, server: OutgoingServer, redactor: Redactor) -> GraphSession:
        spec = server.spec
        target = graph_target(server)
        size = spec.max_concurrency or DEFAULT_CONCURRENCY
        key = (target.endpoint.lower(), target.mailbox.lower(), size)
        slots = self._mailboxes.get(key)
        if slots is None:
            slots = self._mailboxes[key] = MailboxSlots(size)
        proxy = proxy_for(server, self._proxies, target.host, redactor)
        client = self._clients.get((target.endpoint.lower(), proxy))
        if client is None:
            client = self._clients[(target.endpoint.lower(), proxy)] = open_client(
                self._tls, proxy, self._connect_timeout)

        def waited() -> None:
            slots.throttled += 1

        deadline = asyncio.get_running_loop().time() + spec.timeout_seconds
        return GraphSession(server, target, client, self._token_provider, redactor, SENDING,
                            wire=slots.request, deadline=deadline, on_wait=waited)

    async def _send(self, session: GraphSession, envelope: Envelope) -> SendResult:
        session.step = "fetching an access token"
        await session.authorize()
        message = graph_message(envelope)
        if message.needs_upload:
            return await self._send_draft(session, envelope, message)
        if message.mime is not None and mime_request_size(message.mime) <= MAX_REQUEST_BYTES:
            # Threading headers Graph's JSON cannot carry: send the MIME form.
            body = base64.b64encode(message.mime)
            content_type = "text/plain"
        else:
            if message.other_headers:
                log.info("%s: headers %s cannot be sent through Graph's JSON message and "
                         "the MIME form is too large; sending without them",
                         envelope.message_id, ", ".join(n for n, _ in message.other_headers))
            body = orjson.dumps(message.send_mail_body(session.server.spec.save_to_sent_items))
            content_type = "application/json"
            if len(body) > MAX_REQUEST_BYTES:
                return await self._send_draft(session, envelope, message)
        session.step = "sending the message (sendMail)"
        answer = await session.request("POST", f"{session.target.users}/sendMail", ok=(202, 413),
                                       content=body, headers={"Content-Type": content_type})
        assert answer is not None
        if answer.status_code == 413:
            return await self._send_draft(session, envelope, message)
        return self._accepted(session, envelope, answer, "sendMail")

    async def _send_draft(self, session: GraphSession, envelope: Envelope,
                          message: GraphMessage) -> SendResult:
        """Draft, upload sessions for the large attachments, then send the draft."""
        draft, large = message.draft_body()
        session.step = "creating a draft"
        answer = await session.request("POST", f"{session.target.users}/messages", ok=(201,),
                                       json=draft)
        assert answer is not None
        url = f"{session.target.users}/messages/{quote(str(answer.json()['id']), safe='')}"
        sent = False
        try:
            for attachment in large:
                await self._upload(session, url, attachment)
            session.step = "sending the draft"
            answer = await session.request("POST", f"{url}/send", ok=(202,), content=b"")
            sent = True
        finally:
            if not sent:
                await self._discard(session, url)
        assert answer is not None
        uploaded = ", ".join(a.name for a in large)
        return self._accepted(session, envelope, answer,
                              f"draft with upload sessions for {uploaded}")

    async def _upload(self, session: GraphSession, draft_url: str,
                      attachment: GraphAttachment) -> None:
        size = len(attachment.data)
        session.step = f"creating an upload session for {attachment.name}"
        item = {"AttachmentItem": {"attachmentType": "file", "name": attachment.name,
                                   "size": size, "contentType": attachment.content_type}}
        answer = await session.request("POST", f"{draft_url}/attachments/createUploadSession",
                                       ok=(201,), json=item)
        assert answer is not None
        upload_url = str(answer.json()["uploadUrl"])
        # The URL is a credential of its own (pre-authenticated): never shown anywhere.
        session.redactor.add(upload_url)
        session.redactor.add(urlsplit(upload_url).query)
        for offset in range(0, size, self._chunk):
            piece = attachment.data[offset:offset + self._chunk]
            last = offset + len(piece) - 1
            session.step = f"uploading {attachment.name} (bytes {offset}-{last} of {size})"
            await session.request(
                "PUT", upload_url, content=piece, authorized=False,
                ok=(200, 201) if last + 1 == size else (200, 202),
                headers={"Content-Range": f"bytes {offset}-{last}/{size}",
                         "Content-Type": "application/octet-stream"})

    async def _discard(self, session: GraphSession, draft_url: str) -> None:
        """Best effort: a failed send must not leave a draft behind in the mailbox."""
        try:
            async with asyncio.timeout(_DRAFT_CLEANUP_S):
                await session.wire(session.client, "DELETE", draft_url, None,
                                   {"Authorization": f"Bearer {session.token}"},
                                   _DRAFT_CLEANUP_S)
        except (*NETWORK_ERRORS, TimeoutError) as exc:
            log.warning("could not delete the unsent draft in %s: %s", session.target.mailbox,
                        session.redactor(describe(exc)))

    # -- results ----------------------------------------------------------

    def _accepted(self, session: GraphSession, envelope: Envelope, answer: GraphAnswer,
                  how: str) -> SendResult:
        request_id = answer.headers.get("request-id", "")
        reply = f"{answer.status_code} Accepted" + (f" request-id {request_id}"
                                                   if request_id else "")
        detail = f"accepted by Graph for {len(envelope.rcpt_to)} recipients ({how})"
        if session.waits:
            detail += f"; waited out throttling: {'; '.join(session.waits)}"
        recipients = every_recipient(envelope, Outcome.SENT, answer.status_code, "accepted")
        return self._finish(session, session.server, envelope, session.redactor, Outcome.SENT,
                            None, detail, recipients=recipients, server_reply=reply)

    def _finish(self, session: GraphSession | None, server: OutgoingServer, envelope: Envelope,
                redactor: Redactor, outcome: Outcome, failure: Failure | None, detail: str, *,
                recipients: tuple[RecipientResult, ...] = (), code: int | None = None,
                server_reply: str = "", retry_after: float | None = None) -> SendResult:
        return logged_result(log, envelope, server, redactor, outcome, failure, detail,
                             recipients=recipients, code=code, server_reply=server_reply,
                             host=session.target.address if session else None,
                             retry_after=retry_after)

    def _unexpected(self, exc: BaseException, session: GraphSession | None,
                    server: OutgoingServer, envelope: Envelope, redactor: Redactor) -> SendResult:
        log_unexpected(log, server, exc, redactor)
        step = session.step if session else "starting"
        return self._finish(session, server, envelope, redactor, Outcome.TRANSIENT,
                            Failure.PROTOCOL, f"unexpected error while {step}: {describe(exc)}")
