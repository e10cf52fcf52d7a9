"""Microsoft Graph transport (SPEC O5, O7) on httpx.

- ``POST {graphEndpoint}/v1.0/users/{mailbox}/sendMail`` with the JSON message
  (``transports.graph_message``); 202 means accepted. Attachments above 3 MB together
  (or a request above Graph's 4 MB limit, or a 413) go the long way: create a draft,
  one upload session per large attachment with chunks of at most 4 MB (a multiple of
  320 KiB, as Graph requires) and ``Content-Range``, then ``POST .../send``.
- One ``httpx.AsyncClient`` (HTTP/1.1 keep-alive pool) per endpoint and proxy;
  certificates always verified against the system CAs plus the optional extra CA
  bundle (``ca_file`` or ``RECONCILE_TLS_CA_FILE``), like the SMTP transport.
  Environment proxy variables are ignored: the ``proxy`` of the server is what runs.
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
import contextlib
import email.utils
import logging
import os
import ssl
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpcore  # noqa: F401  # httpx imports it on the first client: ~0.1 s of the first send
import httpx
import orjson

from reconciler.config.models.auth import OAuth2Auth
from reconciler.config.models.outgoing_server import (
    OutgoingProtocol,
    OutgoingServer,
    OutgoingServerSpec,
)
from reconciler.config.models.proxy_server import ProxyServerSpec, ProxyType
from reconciler.config.secrets import SecretError, resolve
from reconciler.dispatch.envelope import Envelope
from reconciler.dispatch.outcome import (
    Failure,
    Health,
    HealthStatus,
    Outcome,
    RecipientResult,
    SendResult,
)
from reconciler.dispatch.transports.base import (
    Redactor,
    TokenError,
    TokenProvider,
    Transport,
    fetch_token,
    invalidate_token,
)
from reconciler.dispatch.transports.graph_message import (
    MAX_REQUEST_BYTES,
    GraphAttachment,
    GraphMessage,
    graph_message,
    mime_request_size,
)
from reconciler.dispatch.transports.smtp import (  # same rules as SMTP
    CA_FILE_ENV,
    _describe,
    _ssl_cause,
    tls_context,
)

log = logging.getLogger(__name__)

API_VERSION = "v1.0"
DEFAULT_CONCURRENCY = 4  # Graph's concurrent requests per mailbox
LANE_FACTOR = 2  # sends the worker may hand over per mailbox slot (see lane_width)
UPLOAD_CHUNK = 12 * 320 * 1024  # 3.75 MiB: a multiple of 320 KiB below the 4 MB limit
RETRY_AFTER_STATUS = frozenset({429, 503, 504})
_RECIPIENT_CODES = frozenset({"ErrorInvalidRecipients", "ErrorInvalidRecipientsTooMany"})
_DRAFT_CLEANUP_S = 5.0

# The ProxyServer a server names, looked up in the config it was routed with.
ProxyLookup = Callable[[OutgoingServer], ProxyServerSpec | None]


class _Failed(Exception):
    """The attempt failed for a reason already classified."""

    def __init__(self, outcome: Outcome, failure: Failure, detail: str,
                 code: int | None = None) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.failure = failure
        self.detail = detail
        self.code = code


class _Mailbox:
    """The in-flight limit of one mailbox, and the counters that show it was kept."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._semaphore = asyncio.Semaphore(size)
        self.in_flight = 0
        self.max_in_flight = 0
        self.throttled = 0  # 429/503/504 answers with a Retry-After that was waited out

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._semaphore:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                yield
            finally:
                self.in_flight -= 1


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
    client: httpx.AsyncClient
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
        self._tls = tls_context(ca_file or os.environ.get(CA_FILE_ENV) or None)
        self._token_provider = token_provider
        self._proxies = proxies
        self._connect_timeout = connect_timeout
        self._chunk = upload_chunk
        self._clients: dict[tuple[str, str | None], httpx.AsyncClient] = {}
        self._mailboxes: dict[tuple[str, str, int], _Mailbox] = {}

    # -- public API -------------------------------------------------------

    async def send(self, envelope: Envelope, server: OutgoingServer) -> SendResult:
        spec = server.spec
        if spec.protocol != OutgoingProtocol.GRAPH:
            return _config_result(f"server {server.metadata.name} does not use Microsoft Graph")
        if not envelope.rcpt_to:
            return SendResult(Outcome.IGNORED, "no recipients; nothing was sent")
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
        except httpx.HTTPError as exc:
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
        except httpx.HTTPError as exc:
            _, failure, detail = _network_failure(exc, call)
            return Health(HealthStatus.UNREACHABLE, call.host if call else None,
                          redactor(detail), failure, "connect")
        if response.status_code != 200:
            _, failure, detail = _classify(response, call, "reading the mailbox")
            return Health(HealthStatus.UNREACHABLE, call.host, redactor(detail), failure, "api")
        return Health(HealthStatus.REACHABLE, call.host,
                      f"token accepted, mailbox {mailbox_of(server.spec)} readable")

    async def aclose(self) -> None:
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
                async with call.mailbox.slot():
                    await call.client.delete(draft_url, headers=self._headers(call))
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("could not delete the unsent draft in %s: %s",
                        mailbox_of(call.server.spec), call.redactor(_describe(exc)))

    # -- one request --------------------------------------------------------

    async def _request(self, call: _Call, method: str, url: str, *, authorized: bool = True,
                       **kwargs: Any) -> httpx.Response:
        """Send one request within the mailbox's limit; refresh a refused token once and
        wait out throttling while the deadline allows; return the final answer."""
        headers = kwargs.pop("headers", None) or {}
        while True:
            request_headers = {**headers, **(self._headers(call) if authorized else {})}
            # Built before taking the mailbox slot: the slot is Graph's time, and a slot
            # held while Python assembles the request is a slot Graph is not using.
            request = call.client.build_request(method, url, headers=request_headers,
                                                **kwargs)
            async with call.mailbox.slot():
                left = max(call.remaining(), 0.001)
                request.extensions["timeout"] = httpx.Timeout(
                    left, connect=min(self._connect_timeout, left)).as_dict()
                response = await call.client.send(request)
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
            token = await fetch_token(self._token_provider, server)
        except TokenError as exc:
            outcome = Outcome.PERMANENT if exc.permanent else Outcome.TRANSIENT
            raise _Failed(outcome, Failure.AUTH, f"no access token: {exc}") from None
        call.redactor.add(token)
        call.redactor.add(f"Bearer {token}")
        return token

    # -- clients and proxies --------------------------------------------------

    def _client(self, endpoint: str, proxy: str | None) -> httpx.AsyncClient:
        key = (endpoint.lower(), proxy)
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(
                verify=self._tls, http2=False, proxy=proxy, trust_env=False,
                # Keep-alive for every slot of every mailbox on this endpoint.
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64,
                                    keepalive_expiry=60.0),
                headers={"User-Agent": "reconciler-graph/1"},
            )
            self._clients[key] = client
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
        userinfo = ""
        if found.username:
            password = ""
            if found.password is not None:
                try:
                    password = resolve(found.password)
                except SecretError as exc:
                    raise _Failed(Outcome.PERMANENT, Failure.CONFIG,
                                  f"cannot read the password of ProxyServer {name}: "
                                  f"{exc}") from None
                redactor.add(password)
                redactor.add(quote(password, safe=""))
            userinfo = f"{quote(found.username, safe='')}:{quote(password, safe='')}@"
        scheme = str(found.type)
        return f"{scheme}://{userinfo}{found.host}:{found.port}"

    # -- results ----------------------------------------------------------

    def _accepted(self, call: _Call, envelope: Envelope, response: httpx.Response,
                  how: str) -> SendResult:
        request_id = response.headers.get("request-id", "")
        reply = f"{response.status_code} Accepted" + (f" request-id {request_id}"
                                                     if request_id else "")
        detail = f"accepted by Graph for {len(envelope.rcpt_to)} recipients ({how})"
        if call.waits:
            detail += f"; waited out throttling: {'; '.join(call.waits)}"
        recipients = tuple(RecipientResult(a, Outcome.SENT, response.status_code, "accepted")
                           for a in envelope.rcpt_to)
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
        if not recipients and outcome != Outcome.SENT:
            recipients = tuple(RecipientResult(a, outcome, code, "") for a in envelope.rcpt_to)
        asked = call.retry_after if call and outcome == Outcome.TRANSIENT else None
        result = SendResult(outcome=outcome, detail=redactor(detail), recipients=recipients,
                            host=call.host if call else None, failure=failure,
                            server_reply=redactor(server_reply), retry_after=asked)
        level = logging.INFO if outcome == Outcome.SENT else logging.WARNING
        log.log(level, "%s %s via %s (%s): %s", envelope.message_id, outcome, result.host,
                server.display, result.detail)
        return result

    def _unexpected(self, exc: BaseException, call: _Call | None, server: OutgoingServer,
                    envelope: Envelope, redactor: Redactor) -> SendResult:
        log.error("unexpected error sending via %s: %s", server.display,
                  redactor("".join(traceback.format_exception(exc))))
        step = call.step if call else "starting"
        return self._finish(call, server, envelope, redactor, Outcome.TRANSIENT,
                            Failure.PROTOCOL, f"unexpected error while {step}: {_describe(exc)}")

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


def graph_error(response: httpx.Response) -> tuple[str, str]:
    """(code, message) of Graph's error body; empty strings when there is none."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return "", response.reason_phrase
    code = str(error.get("code") or "")
    message = " ".join(str(error.get("message") or "").split())[:300]
    return code, message


def _classify(response: httpx.Response, call: _Call | None,
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


def _network_failure(exc: httpx.HTTPError, call: _Call | None) -> tuple[Outcome, Failure, str]:
    where = call.host if call else "Graph"
    step = call.step if call else "starting"
    cert = _ssl_cause(exc)
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
        return Outcome.TRANSIENT, Failure.CONNECT, f"cannot connect to {where}: {_describe(exc)}"
    if isinstance(exc, httpx.TransportError):
        return (Outcome.TRANSIENT, Failure.CONNECT,
                f"connection to {where} lost while {step}: {_describe(exc)}")
    return Outcome.TRANSIENT, Failure.PROTOCOL, f"{where}: {_describe(exc)}"


def _host_matches(host: str, entry: str) -> bool:
    host, entry = host.lower().rstrip("."), entry.lower().strip().lstrip("*").rstrip(".")
    return host == entry.lstrip(".") or (entry.startswith(".") and host.endswith(entry))


def mailbox_of(spec: OutgoingServerSpec) -> str:
    return str(spec.mailbox or spec.email)


def users_url(spec: OutgoingServerSpec) -> str:
    """``{graphEndpoint}/v1.0/users/{mailbox}``: where every mail call of the server goes."""
    endpoint = str(spec.graph_endpoint or "").rstrip("/")
    return f"{endpoint}/{API_VERSION}/users/{quote(mailbox_of(spec), safe='@')}"


def _config_result(detail: str) -> SendResult:
    return SendResult(Outcome.PERMANENT, detail, failure=Failure.CONFIG)
