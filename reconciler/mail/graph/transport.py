"""Microsoft Graph transport (SPEC O5, O7) on aiohttp (httpx behind a proxy).

- ``POST {graphEndpoint}/v1.0/users/{mailbox}/sendMail`` with the JSON message
  (``transports.graph_message``); 202 means accepted. Attachments above 3 MB together
  (or a request above Graph's 4 MB limit, or a 413) go the long way: create a draft,
  one upload session per large attachment with chunks of at most 4 MB (a multiple of
  320 KiB, as Graph requires) and ``Content-Range``, then ``POST .../send``.
- One HTTP/1.1 keep-alive client per endpoint and proxy: an ``aiohttp.ClientSession``
  when the server goes direct (a sixth of httpx's CPU per request, and a surge is bound
  by how fast a finished request frees its mailbox slot: docs/dispatch.md), an
  ``httpx.AsyncClient`` through a ``ProxyServer`` (HTTPS and SOCKS5 proxies, which
  aiohttp cannot do on its own). Certificates always verified against the system CAs
  plus the optional extra CA bundle (``ca_file`` or ``RECONCILE_TLS_CA_FILE``), like the
  SMTP transport. Environment proxy variables are ignored: the ``proxy`` of the server
  is what runs.
- **At most ``maxConcurrency`` requests in flight per mailbox** (Graph allows 4). A
  request holds its mailbox slot only while it is on the wire.
- **Throttling is waited out here, not in the outbox.** 429, 503 and 504 with a
  ``Retry-After`` (seconds or an HTTP date) are retried inside the send after that
  wait, with the slot released meanwhile so the mailbox's other requests keep going.
  Only when the wait would pass the send's deadline (``timeoutSeconds``) does the
  attempt end TRANSIENT, and the worker's backoff takes over. A surge is then bound
  by Graph's throughput, not by exponential backoff.
- 401: the token is invalidated (``invalidate_token``) and fetched again, once; a
  second 401 is a permanent authentication failure. 400, 403 and 404 are permanent
  (with the fix in the reason); 408, 429 and 5xx transient; network errors transient;
  an untrusted certificate permanent.
- Graph's error body ``{"error": {"code", "message"}}`` goes into the reason, redacted:
  the access token, proxy password and upload URLs never leave the transport.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import httpx
import orjson
from yarl import URL

from reconciler.config.models.auth import OAuth2Auth
from reconciler.config.models.outgoing_server import (
    OutgoingProtocol,
    OutgoingServer,
    OutgoingServerSpec,
)
from reconciler.config.models.proxy_server import ProxyServerSpec, ProxyType
from reconciler.config.secrets import SecretError
from reconciler.credentials.gate import CredentialNotBound, require_client_at
from reconciler.mail.envelope import Envelope
from reconciler.mail.graph.message import (
    MAX_REQUEST_BYTES,
    GraphAttachment,
    GraphMessage,
    graph_message,
    mime_request_size,
)
from reconciler.mail.outcome import (
    Failure,
    Health,
    HealthStatus,
    Outcome,
    RecipientResult,
    SendResult,
    token_outcome,
)
from reconciler.mail.proxies import proxy_userinfo
from reconciler.mail.results import (
    describe,
    every_recipient,
    log_unexpected,
    logged_result,
    unsendable,
)
from reconciler.mail.transport import Redactor, Transport
from reconciler.oauth.source import TokenError, TokenProvider, fetch_token, invalidate_token
from reconciler.runtime.tls import ssl_cause, transport_tls

log = logging.getLogger(__name__)

API_VERSION = "v1.0"
DEFAULT_CONCURRENCY = 4  # Graph's concurrent requests per mailbox
LANE_FACTOR = 2  # sends the worker may hand over per mailbox slot (see lane_width)
UPLOAD_CHUNK = 12 * 320 * 1024  # 3.75 MiB: a multiple of 320 KiB below the 4 MB limit
RETRY_AFTER_STATUS = frozenset({429, 503, 504})
_RECIPIENT_CODES = frozenset({"ErrorInvalidRecipients", "ErrorInvalidRecipientsTooMany"})
_DRAFT_CLEANUP_S = 5.0
USER_AGENT = "reconciler-graph/1"

# The ProxyServer a server names, looked up in the config it was routed with.
ProxyLookup = Callable[[OutgoingServer], ProxyServerSpec | None]


@dataclass(frozen=True, slots=True)
class GraphAnswer:
    """One HTTP answer, whichever client fetched it (its body read in full)."""

    status_code: int
    headers: Mapping[str, str]  # case-insensitive
    content: bytes
    reason_phrase: str

    def json(self) -> Any:
        return orjson.loads(self.content)


class _Client(Protocol):
    async def request(self, method: str, url: str, content: bytes | None,
                      headers: dict[str, str], timeout: float) -> GraphAnswer: ...

    async def aclose(self) -> None: ...


class _DirectClient:
    """aiohttp, straight to Graph. No per-request timeout: the send's deadline
    (``asyncio.timeout``) bounds it; the session bounds connecting."""

    def __init__(self, tls: ssl.SSLContext, connect_timeout: float) -> None:
        self._session = aiohttp.ClientSession(
            # No connection cap: the mailboxes' limits are the cap; keep-alive for them all.
            connector=aiohttp.TCPConnector(ssl=tls, limit=0, keepalive_timeout=60.0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
            headers={"User-Agent": USER_AGENT}, trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar())  # Graph sets none we would send back

    async def request(self, method: str, url: str, content: bytes | None,
                      headers: dict[str, str], timeout: float) -> GraphAnswer:
        # encoded=True: the URL is sent as built (mailbox and draft ids already quoted,
        # upload URLs exactly as Graph gave them).
        async with self._session.request(method, URL(url, encoded=True), data=content,
                                         headers=headers, allow_redirects=False) as response:
            body = await response.read()
            return GraphAnswer(response.status, response.headers, body, response.reason or "")

    async def aclose(self) -> None:
        await self._session.close()


class _ProxiedClient:
    """httpx through the server's ProxyServer (HTTP, HTTPS or SOCKS5)."""

    def __init__(self, tls: ssl.SSLContext, proxy: str, connect_timeout: float) -> None:
        self._connect_timeout = connect_timeout
        self._client = httpx.AsyncClient(
            verify=tls, http2=False, proxy=proxy, trust_env=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64,
                                keepalive_expiry=60.0),
            headers={"User-Agent": USER_AGENT})

    async def request(self, method: str, url: str, content: bytes | None,
                      headers: dict[str, str], timeout: float) -> GraphAnswer:
        response = await self._client.request(
            method, url, content=content, headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(self._connect_timeout, timeout)))
        return GraphAnswer(response.status_code, response.headers, response.content,
                           response.reason_phrase)

    async def aclose(self) -> None:
        await self._client.aclose()


NETWORK_ERRORS = (httpx.HTTPError, aiohttp.ClientError)


class _Failed(Exception):
    """The attempt failed for a reason already classified."""

    def __init__(self, outcome: Outcome, failure: Failure, detail: str,
                 code: int | None = None) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.failure = failure
        self.detail = detail
        self.code = code


@dataclass(slots=True)
class _Queued:
    answer: asyncio.Future[GraphAnswer]
    client: _Client
    method: str
    url: str
    content: bytes | None
    headers: dict[str, str]
    timeout: float


class _Mailbox:
    """The in-flight limit of one mailbox, and the counters that show it was kept.

    ``size`` sender tasks, each one request at a time, take requests from one queue in
    order. A sender that reads an answer writes the next queued request in the same
    step; with a semaphore the freed slot went to a waiting send that the busy event
    loop woke a few ms later, and Graph's pace in a surge was 70/s of 80/s (75/s this
    way, docs/dispatch.md)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_flight = 0
        self.max_in_flight = 0
        self.throttled = 0  # 429/503/504 answers with a Retry-After that was waited out
        self._queue: asyncio.Queue[_Queued] | None = None
        self._senders: list[asyncio.Task[None]] = []
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def request(self, client: _Client, method: str, url: str, content: bytes | None,
                      headers: dict[str, str], timeout: float) -> GraphAnswer:
        """One request within the limit; cancelling the caller cancels the request."""
        loop = asyncio.get_running_loop()
        if self._queue is None:  # on the loop of the first send: tasks are loop-bound
            self._loop = loop
            self._queue = asyncio.Queue()
            self._senders = [asyncio.create_task(self._sender(), name=f"graph-sender-{i}")
                             for i in range(self.size)]
        elif loop is not self._loop:
            raise RuntimeError("a GraphTransport belongs to the event loop of its first send")
        answer: asyncio.Future[GraphAnswer] = loop.create_future()
        self._queue.put_nowait(_Queued(answer, client, method, url, content, headers, timeout))
        return await answer

    async def _sender(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        current: list[_Queued] = []  # the request this sender has on the wire

        def abandon(answer: asyncio.Future[GraphAnswer]) -> None:
            # The send gave up (its deadline): stop its request, not the next one.
            if answer.cancelled() and current and current[0].answer is answer:
                task.cancel()

        while True:
            try:
                await self._serve(current, abandon)
            except asyncio.CancelledError:
                if self._closing:
                    raise
                task.uncancel()  # that request is dropped; the sender goes on

    async def _serve(self, current: list[_Queued],
                     abandon: Callable[[asyncio.Future[GraphAnswer]], None]) -> None:
        assert self._queue is not None
        item = await self._queue.get()
        if item.answer.done():  # its send was cancelled while it waited
            return
        current.append(item)
        item.answer.add_done_callback(abandon)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            result = await item.client.request(item.method, item.url, item.content,
                                               item.headers, item.timeout)
        except Exception as exc:  # the send classifies it
            if not item.answer.done():
                item.answer.set_exception(exc)
        else:
            if not item.answer.done():
                item.answer.set_result(result)
        finally:
            self.in_flight -= 1
            current.clear()
            item.answer.remove_done_callback(abandon)
            if not item.answer.done():  # the sender is closing under it
                item.answer.cancel()

    async def aclose(self) -> None:
        self._closing = True
        senders, self._senders = self._senders, []
        for sender in senders:
            sender.cancel()
        await asyncio.gather(*senders, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class MailboxStats:
    size: int
    in_flight: int
    max_in_flight: int
    throttled: int


@dataclass
class _Call:
    """One send (or probe): where it goes, its token, its deadline and progress."""

    server: OutgoingServer
    client: _Client
    users: str  # {endpoint}/v1.0/users/{mailbox}
    mailbox: _Mailbox
    redactor: Redactor
    deadline: float
    host: str
    token: str = ""
    refreshed: bool = False
    step: str = "starting"
    waits: list[str] = field(default_factory=list)
    retry_after: float | None = None  # a wait Graph asked for that the deadline did not allow

    def remaining(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()


class GraphTransport(Transport):
    protocol = "graph"

    def __init__(
        self,
        *,
        ca_file: str | Path | None = None,
        token_provider: TokenProvider | None = None,
        proxies: ProxyLookup | None = None,
        connect_timeout: float = 15.0,
        upload_chunk: int = UPLOAD_CHUNK,
    ) -> None:
        if upload_chunk <= 0 or upload_chunk % (320 * 1024) or upload_chunk > MAX_REQUEST_BYTES:
            raise ValueError("upload_chunk must be a multiple of 320 KiB of at most 4 MB")
        self._tls = transport_tls(ca_file)
        self._token_provider = token_provider
        self._proxies = proxies
        self._connect_timeout = connect_timeout
        self._chunk = upload_chunk
        self._clients: dict[tuple[str, str | None], _Client] = {}
        self._mailboxes: dict[tuple[str, str, int], _Mailbox] = {}

    # -- public API -------------------------------------------------------

    async def send(self, envelope: Envelope, server: OutgoingServer) -> SendResult:
        spec = server.spec
        refused = unsendable(envelope, server, OutgoingProtocol.GRAPH, "Microsoft Graph")
        if refused is not None:
            return refused
        redactor = Redactor()
        timeout = asyncio.timeout(spec.timeout_seconds)
        call: _Call | None = None
        try:
            async with timeout:
                call = self._call(server, redactor)
                return await self._send(call, envelope)
        except _Failed as exc:
            return self._finish(call, server, envelope, redactor, exc.outcome, exc.failure,
                                exc.detail, code=exc.code)
        except TimeoutError as exc:
            if not timeout.expired():
                return self._unexpected(exc, call, server, envelope, redactor)
            step = call.step if call else "starting"
            detail = f"deadline of {spec.timeout_seconds:g}s exceeded while {step}"
            if call is not None and call.waits:
                detail += f" (after waiting out throttling: {'; '.join(call.waits)})"
            if step.startswith(("sending the message", "sending the draft")):
                # The request left; Graph may have accepted it. A retry keeps the
                # internetMessageId, so receivers can spot the copy.
                detail += "; Graph may have accepted the message"
            return self._finish(call, server, envelope, redactor, Outcome.TRANSIENT,
                                Failure.TIMEOUT, detail)
        except NETWORK_ERRORS as exc:
            outcome, failure, detail = _network_failure(exc, call)
            return self._finish(call, server, envelope, redactor, outcome, failure, detail)
        except Exception as exc:
            return self._unexpected(exc, call, server, envelope, redactor)

    async def probe(self, server: OutgoingServer) -> Health:
        """Fetch a token and read the mailbox (``GET /users/{m}?$select=id,mail``)."""
        redactor = Redactor()
        call: _Call | None = None
        try:
            async with asyncio.timeout(server.spec.timeout_seconds):
                call = self._call(server, redactor)
                call.step = "fetching an access token"
                call.token = await self._token(call)
                call.step = "reading the mailbox"
                response = await self._request(call, "GET", call.users,
                                               params={"$select": "id,mail"})
        except _Failed as exc:
            step = "api" if call is not None and call.token else "token"
            return Health(HealthStatus.UNREACHABLE, call.host if call else None,
                          redactor(exc.detail), exc.failure, step)
        except TimeoutError:
            return Health(HealthStatus.UNREACHABLE, call.host if call else None,
                          f"timed out while {call.step if call else 'starting'}",
                          Failure.TIMEOUT, "api")
        except NETWORK_ERRORS as exc:
            _, failure, detail = _network_failure(exc, call)
            return Health(HealthStatus.UNREACHABLE, call.host if call else None,
                          redactor(detail), failure, "connect")
        if response.status_code != 200:
            _, failure, detail = _classify(response, call, "reading the mailbox")
            return Health(HealthStatus.UNREACHABLE, call.host, redactor(detail), failure, "api")
        return Health(HealthStatus.REACHABLE, call.host,
                      f"token accepted, mailbox {mailbox_of(server.spec)} readable")

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

    def _call(self, server: OutgoingServer, redactor: Redactor) -> _Call:
        spec = server.spec
        endpoint = str(spec.graph_endpoint or "").rstrip("/")
        if not endpoint:
            raise _Failed(Outcome.PERMANENT, Failure.CONFIG,
                          f"server {server.metadata.name} has no graphEndpoint")
        parts = urlsplit(endpoint)
        if parts.scheme != "https" or not parts.hostname:
            raise _Failed(Outcome.PERMANENT, Failure.CONFIG,
                          f"graphEndpoint {endpoint} is not an https:// URL")
        mailbox = mailbox_of(spec)
        size = spec.max_concurrency or DEFAULT_CONCURRENCY
        key = (endpoint.lower(), mailbox.lower(), size)
        slots = self._mailboxes.get(key)
        if slots is None:
            slots = self._mailboxes[key] = _Mailbox(size)
        host = f"{parts.hostname}:{parts.port or 443}"
        client = self._client(endpoint, self._proxy_url(server, parts.hostname, redactor))
        deadline = asyncio.get_running_loop().time() + spec.timeout_seconds
        return _Call(server, client, users_url(spec), slots, redactor, deadline, host)

    async def _send(self, call: _Call, envelope: Envelope) -> SendResult:
        spec = call.server.spec
        call.step = "fetching an access token"
        call.token = await self._token(call)
        message = graph_message(envelope)
        if message.needs_upload:
            return await self._send_draft(call, envelope, message)
        if message.mime is not None and mime_request_size(message.mime) <= MAX_REQUEST_BYTES:
            # Threading headers Graph's JSON cannot carry: send the MIME form.
            body = base64.b64encode(message.mime)
            content_type = "text/plain"
        else:
            if message.other_headers:
                log.info("%s: headers %s cannot be sent through Graph's JSON message and "
                         "the MIME form is too large; sending without them",
                         envelope.message_id, ", ".join(n for n, _ in message.other_headers))
            body = orjson.dumps(message.send_mail_body(spec.save_to_sent_items))
            content_type = "application/json"
            if len(body) > MAX_REQUEST_BYTES:
                return await self._send_draft(call, envelope, message)
        call.step = "sending the message (sendMail)"
        response = await self._request(call, "POST", f"{call.users}/sendMail", content=body,
                                       headers={"Content-Type": content_type})
        if response.status_code == 413:
            return await self._send_draft(call, envelope, message)
        if response.status_code != 202:
            raise _Failed(*_classify(response, call, call.step), code=response.status_code)
        return self._accepted(call, envelope, response, "sendMail")

    async def _send_draft(self, call: _Call, envelope: Envelope,
                          message: GraphMessage) -> SendResult:
        """Draft, upload sessions for the large attachments, then send the draft."""
        draft, large = message.draft_body()
        call.step = "creating a draft"
        response = await self._request(call, "POST", f"{call.users}/messages",
                                       content=orjson.dumps(draft),
                                       headers={"Content-Type": "application/json"})
        if response.status_code != 201:
            raise _Failed(*_classify(response, call, call.step), code=response.status_code)
        draft_id = str(response.json()["id"])
        url = f"{call.users}/messages/{quote(draft_id, safe='')}"
        sent = False
        try:
            for attachment in large:
                await self._upload(call, url, attachment)
            call.step = "sending the draft"
            response = await self._request(call, "POST", f"{url}/send", content=b"")
            if response.status_code != 202:
                raise _Failed(*_classify(response, call, call.step), code=response.status_code)
            sent = True
        finally:
            if not sent:
                await self._discard(call, url)
        uploaded = ", ".join(a.name for a in large)
        return self._accepted(call, envelope, response, f"draft with upload sessions for "
                              f"{uploaded}")

    async def _upload(self, call: _Call, draft_url: str, attachment: GraphAttachment) -> None:
        size = len(attachment.data)
        call.step = f"creating an upload session for {attachment.name}"
        item = {"AttachmentItem": {"attachmentType": "file", "name": attachment.name,
                                   "size": size, "contentType": attachment.content_type}}
        response = await self._request(call, "POST",
                                       f"{draft_url}/attachments/createUploadSession",
                                       content=orjson.dumps(item),
                                       headers={"Content-Type": "application/json"})
        if response.status_code != 201:
            raise _Failed(*_classify(response, call, call.step), code=response.status_code)
        upload_url = str(response.json()["uploadUrl"])
        # The URL is a credential of its own (pre-authenticated): never shown anywhere.
        call.redactor.add(upload_url)
        call.redactor.add(urlsplit(upload_url).query)
        for offset in range(0, size, self._chunk):
            piece = attachment.data[offset:offset + self._chunk]
            last = offset + len(piece) - 1
            call.step = f"uploading {attachment.name} (bytes {offset}-{last} of {size})"
            response = await self._request(
                call, "PUT", upload_url, content=piece, authorized=False,
                headers={"Content-Range": f"bytes {offset}-{last}/{size}",
                         "Content-Type": "application/octet-stream"})
            expected = (200, 201) if last + 1 == size else (200, 202)
            if response.status_code not in expected:
                raise _Failed(*_classify(response, call, call.step), code=response.status_code)

    async def _discard(self, call: _Call, draft_url: str) -> None:
        """Best effort: a failed send must not leave a draft behind in the mailbox."""
        try:
            async with asyncio.timeout(_DRAFT_CLEANUP_S):
                await call.mailbox.request(call.client, "DELETE", draft_url, None,
                                           self._headers(call), _DRAFT_CLEANUP_S)
        except (*NETWORK_ERRORS, TimeoutError) as exc:
            log.warning("could not delete the unsent draft in %s: %s",
                        mailbox_of(call.server.spec), call.redactor(describe(exc)))

    # -- one request --------------------------------------------------------

    async def _request(self, call: _Call, method: str, url: str, *, authorized: bool = True,
                       content: bytes | None = None, headers: dict[str, str] | None = None,
                       params: dict[str, str] | None = None) -> GraphAnswer:
        """Send one request within the mailbox's limit; refresh a refused token once and
        wait out throttling while the deadline allows; return the final answer."""
        if params:
            url = f"{url}?{urlencode(params)}"
        while True:
            request_headers = {**(headers or {}), **(self._headers(call) if authorized else {})}
            response = await call.mailbox.request(call.client, method, url, content,
                                                  request_headers, max(call.remaining(), 0.001))
            status = response.status_code
            if status == 401 and authorized and not call.refreshed:
                call.refreshed = True
                self._trace(call, "401 from Graph while %s; fetching a new token", call.step)
                await invalidate_token(self._token_provider, call.server, call.token)
                call.token = await self._token(call)
                continue
            if status in RETRY_AFTER_STATUS:
                wait = retry_after(response.headers.get("retry-after"))
                if wait is not None and wait < call.remaining():
                    call.mailbox.throttled += 1
                    code, _ = graph_error(response)
                    call.waits.append(f"{status} {code or ''} Retry-After {wait:g}s".strip())
                    self._trace(call, "%s from Graph while %s; waiting %.3gs (Retry-After)",
                                status, call.step, wait)
                    await asyncio.sleep(wait)
                    continue
                call.retry_after = wait  # too long for this attempt: the next one waits
            return response

    def _headers(self, call: _Call) -> dict[str, str]:
        return {"Authorization": f"Bearer {call.token}"}

    async def _token(self, call: _Call) -> str:
        server = call.server
        if not isinstance(server.spec.auth, OAuth2Auth):
            raise _Failed(Outcome.PERMANENT, Failure.CONFIG,
                          "Microsoft Graph accepts only OAuth2: set auth type oauth2")
        if self._token_provider is None:
            raise _Failed(Outcome.PERMANENT, Failure.CONFIG,
                          "OAuth2 server but no token provider is configured")
        try:
            require_client_at(server.spec.auth, call.users)
        except CredentialNotBound as exc:
            raise _Failed(Outcome.PERMANENT, Failure.CONFIG, str(exc)) from None
        try:
            token = await fetch_token(self._token_provider, server)
        except TokenError as exc:
            raise _Failed(token_outcome(exc), Failure.AUTH, f"no access token: {exc}") from None
        call.redactor.add(token)
        call.redactor.add(f"Bearer {token}")
        return token

    # -- clients and proxies --------------------------------------------------

    def _client(self, endpoint: str, proxy: str | None) -> _Client:
        key = (endpoint.lower(), proxy)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = (
                _DirectClient(self._tls, self._connect_timeout) if proxy is None
                else _ProxiedClient(self._tls, proxy, self._connect_timeout))
        return client

    def _proxy_url(self, server: OutgoingServer, host: str, redactor: Redactor) -> str | None:
        name = server.spec.proxy
        if not name:
            return None
        found = self._proxies(server) if self._proxies is not None else None
        if found is None:
            raise _Failed(Outcome.PERMANENT, Failure.CONFIG,
                          f"server {server.metadata.name} uses ProxyServer {name}, which this "
                          "daemon cannot find")
        if any(_host_matches(host, entry) for entry in found.no_proxy):
            return None
        if found.type == ProxyType.SOCKS5:
            try:
                import socksio  # noqa: F401  # httpx needs it for SOCKS
            except ImportError:
                raise _Failed(Outcome.PERMANENT, Failure.CONFIG,
                              f"ProxyServer {name} is SOCKS5, which needs the socksio package "
                              "(pip install 'httpx[socks]')") from None
        try:
            userinfo = proxy_userinfo(found, redactor)
        except SecretError as exc:
            raise _Failed(Outcome.PERMANENT, Failure.CONFIG,
                          f"cannot read the password of ProxyServer {name}: {exc}") from None
        scheme = str(found.type)
        return f"{scheme}://{userinfo}{found.host}:{found.port}"

    # -- results ----------------------------------------------------------

    def _accepted(self, call: _Call, envelope: Envelope, response: GraphAnswer,
                  how: str) -> SendResult:
        request_id = response.headers.get("request-id", "")
        reply = f"{response.status_code} Accepted" + (f" request-id {request_id}"
                                                     if request_id else "")
        detail = f"accepted by Graph for {len(envelope.rcpt_to)} recipients ({how})"
        if call.waits:
            detail += f"; waited out throttling: {'; '.join(call.waits)}"
        recipients = every_recipient(envelope, Outcome.SENT, response.status_code, "accepted")
        return self._finish(call, call.server, envelope, call.redactor, Outcome.SENT, None,
                            detail, recipients=recipients, server_reply=reply)

    def _finish(
        self,
        call: _Call | None,
        server: OutgoingServer,
        envelope: Envelope,
        redactor: Redactor,
        outcome: Outcome,
        failure: Failure | None,
        detail: str,
        *,
        recipients: tuple[RecipientResult, ...] = (),
        code: int | None = None,
        server_reply: str = "",
    ) -> SendResult:
        asked = call.retry_after if call and outcome == Outcome.TRANSIENT else None
        return logged_result(log, envelope, server, redactor, outcome, failure, detail,
                             recipients=recipients, code=code, server_reply=server_reply,
                             host=call.host if call else None, retry_after=asked)

    def _unexpected(self, exc: BaseException, call: _Call | None, server: OutgoingServer,
                    envelope: Envelope, redactor: Redactor) -> SendResult:
        log_unexpected(log, server, exc, redactor)
        step = call.step if call else "starting"
        return self._finish(call, server, envelope, redactor, Outcome.TRANSIENT,
                            Failure.PROTOCOL, f"unexpected error while {step}: {describe(exc)}")

    def _trace(self, call: _Call, msg: str, *args: object) -> None:
        log.log(logging.INFO if call.server.spec.debug else logging.DEBUG, msg, *args)


# -- classification -------------------------------------------------------


def retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds to wait: delay-seconds or an HTTP date; None if unusable."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(seconds, 0.0)


def graph_error(response: GraphAnswer | httpx.Response) -> tuple[str, str]:
    """(code, message) of Graph's error body; empty strings when there is none."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return "", response.reason_phrase
    code = str(error.get("code") or "")
    message = " ".join(str(error.get("message") or "").split())[:300]
    return code, message


def _classify(response: GraphAnswer, call: _Call | None,
              step: str) -> tuple[Outcome, Failure, str]:
    """An error answer -> outcome, failure and a reason that says what to fix."""
    status = response.status_code
    code, message = graph_error(response)
    said = f"{status} {code}: {message}" if code else f"{status} {message}"
    mailbox = mailbox_of(call.server.spec) if call else "the mailbox"
    where = f" (while {step})"
    if status == 400:
        failure = Failure.RECIPIENTS if code in _RECIPIENT_CODES else Failure.REJECTED
        return Outcome.PERMANENT, failure, f"Graph refused the request: {said}{where}"
    if status == 401:
        again = " even with a freshly fetched token" if call and call.refreshed else ""
        return (Outcome.PERMANENT, Failure.AUTH,
                f"Graph refused the access token{again}: {said}{where}. Check that the app "
                "registration's tenant and national cloud match graphEndpoint and that the "
                "token is for Microsoft Graph; re-authorise with `reconcile auth login` if the "
                "grant was revoked")
    if status == 403:
        return (Outcome.PERMANENT, Failure.AUTH,
                f"Graph denied access to mailbox {mailbox}: {said}{where}. Grant the app the "
                "Mail.Send permission (application permission with admin consent for client "
                "credentials, or Mail.Send delegated/shared) and check that no application "
                "access policy excludes this mailbox")
    if status == 404:
        return (Outcome.PERMANENT, Failure.CONFIG,
                f"Graph does not know mailbox {mailbox}: {said}{where}. Check spec.mailbox "
                "(or email) names an existing mailbox in the app's tenant")
    if status == 413:
        return Outcome.PERMANENT, Failure.REJECTED, f"the request is too large: {said}{where}"
    if status in (408, 429) or status >= 500:
        what = "Graph is throttling this mailbox" if status == 429 else "Graph is unavailable"
        return Outcome.TRANSIENT, Failure.REJECTED, f"{what}: {said}{where}"
    return Outcome.PERMANENT, Failure.REJECTED, f"Graph refused the request: {said}{where}"


def _network_failure(exc: Exception, call: _Call | None) -> tuple[Outcome, Failure, str]:
    where = call.host if call else "Graph"
    step = call.step if call else "starting"
    if isinstance(exc, aiohttp.ClientError):
        return _aiohttp_failure(exc, where, step)
    cert = ssl_cause(exc)
    if isinstance(cert, ssl.SSLCertVerificationError):
        return (Outcome.PERMANENT, Failure.TLS_VERIFY,
                f"TLS certificate of {where} not trusted: {cert.verify_message or cert}")
    if cert is not None:
        return Outcome.PERMANENT, Failure.TLS, f"TLS handshake with {where} failed: {cert}"
    if isinstance(exc, httpx.ProxyError):
        return Outcome.TRANSIENT, Failure.CONNECT, f"the proxy refused the connection: {exc}"
    if isinstance(exc, httpx.TimeoutException):
        return Outcome.TRANSIENT, Failure.TIMEOUT, f"timed out while {step} ({where})"
    if isinstance(exc, httpx.ConnectError):
        return Outcome.TRANSIENT, Failure.CONNECT, f"cannot connect to {where}: {describe(exc)}"
    if isinstance(exc, httpx.TransportError):
        return (Outcome.TRANSIENT, Failure.CONNECT,
                f"connection to {where} lost while {step}: {describe(exc)}")
    return Outcome.TRANSIENT, Failure.PROTOCOL, f"{where}: {describe(exc)}"


def _aiohttp_failure(exc: aiohttp.ClientError, where: str,
                     step: str) -> tuple[Outcome, Failure, str]:
    """The same verdicts as httpx's errors get, for aiohttp's."""
    cert = exc.certificate_error if isinstance(
        exc, aiohttp.ClientConnectorCertificateError) else ssl_cause(exc)
    if isinstance(cert, ssl.SSLCertVerificationError):
        return (Outcome.PERMANENT, Failure.TLS_VERIFY,
                f"TLS certificate of {where} not trusted: {cert.verify_message or cert}")
    if cert is not None or isinstance(exc, aiohttp.ClientSSLError):
        return Outcome.PERMANENT, Failure.TLS, f"TLS handshake with {where} failed: {cert or exc}"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return Outcome.TRANSIENT, Failure.TIMEOUT, f"timed out while {step} ({where})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return (Outcome.TRANSIENT, Failure.CONNECT,
                f"cannot connect to {where}: {describe(exc.os_error)}")
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return (Outcome.TRANSIENT, Failure.CONNECT,
                f"connection to {where} lost while {step}: {describe(exc)}")
    return Outcome.TRANSIENT, Failure.PROTOCOL, f"{where}: {describe(exc)}"


def _host_matches(host: str, entry: str) -> bool:
    host, entry = host.lower().rstrip("."), entry.lower().strip().lstrip("*").rstrip(".")
    return host == entry.lstrip(".") or (entry.startswith(".") and host.endswith(entry))


def mailbox_of(spec: OutgoingServerSpec) -> str:
    return str(spec.mailbox or spec.email)


def users_url(spec: OutgoingServerSpec) -> str:
    """``{graphEndpoint}/v1.0/users/{mailbox}``: where every mail call of the server goes."""
    endpoint = str(spec.graph_endpoint or "").rstrip("/")
    return f"{endpoint}/{API_VERSION}/users/{quote(mailbox_of(spec), safe='@')}"
