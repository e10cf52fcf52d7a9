"""A local Microsoft Graph for tests: the mail endpoints the transport and the probe use,
speaking Graph's wire format over HTTPS (a trustme certificate), on 127.0.0.1.

What it answers, as Graph does:

- ``POST /v1.0/users/{m}/sendMail``: a JSON ``{"message": ..., "saveToSentItems": ...}``
  or a MIME message (``Content-Type: text/plain``, base64 body); ``202 Accepted`` with
  ``request-id`` / ``client-request-id`` headers and no body.
- drafts for large attachments: ``POST /users/{m}/messages`` (201 with an id),
  ``POST .../messages/{id}/attachments/createUploadSession`` (201 with an
  ``uploadUrl``), ``PUT`` chunks to that URL (``Content-Range`` checked; 200 with
  ``nextExpectedRanges`` until the last chunk, then 201), ``POST .../messages/{id}/send``
  (202), ``DELETE .../messages/{id}`` (204).
- ``GET /v1.0/users/{m}`` (the health probe's call).
- a bearer token check: 401 with ``WWW-Authenticate`` and ``InvalidAuthenticationToken``;
  403 ``ErrorAccessDenied`` for mailboxes the app may not use; 404 for unknown mailboxes;
  413 for a request body above 4 MB.
- at most ``max_concurrent`` requests in flight per mailbox: the next one gets 429
  ``ApplicationThrottled`` with ``Retry-After``; ``throttle_every`` injects such a 429
  on every Nth mail request; :meth:`GraphPeer.fail_next` scripts any error.

Everything received is recorded (:class:`SentMail`: the message JSON or parsed MIME,
attachment bytes, how it came), and the most requests ever in flight per mailbox.

Room to grow: the incoming-mail fetcher (issue 6) will want folder listings,
``$value``, ``move`` and delta queries. Those belong in :meth:`GraphPeer.routes` next to
the sending ones, with the mailbox contents on :class:`MailboxState`.
"""

from __future__ import annotations

import asyncio
import base64
import email
import json
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from peers.smtp import HOST, PeerCerts, outgoing_server

MAX_REQUEST_BYTES = 4 * 1024 * 1024  # Graph refuses larger request bodies with 413
TOKEN = "graph-peer-token-0123456789"
DEFAULT_RETRY_AFTER = "1"
_GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"  # Microsoft Graph's own app id

Handler = Callable[[Request], Awaitable[Response]]


def graph_error(status: int, code: str, message: str, *,
                headers: dict[str, str] | None = None) -> Response:
    """Graph's error body: ``{"error": {"code", "message", "innerError"}}``."""
    request_id = str(uuid.uuid4())
    body = {"error": {"code": code, "message": message,
                      "innerError": {"date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                     "request-id": request_id,
                                     "client-request-id": request_id}}}
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass
class SentMail:
    """One message the peer accepted for sending."""

    mailbox: str
    via: str  # "json", "mime" or "draft"
    message: dict[str, Any]  # the Graph message resource (JSON) as received
    save_to_sent_items: bool | None
    attachments: dict[str, bytes] = field(default_factory=dict)  # name -> bytes
    mime: EmailMessage | None = None
    at: float = field(default_factory=time.monotonic)  # when it was accepted

    @property
    def subject(self) -> str:
        if self.mime is not None:
            return str(self.mime["Subject"])
        return str(self.message.get("subject", ""))

    def header(self, name: str) -> str | None:
        """An ``internetMessageHeaders`` value (JSON) or a MIME header."""
        if self.mime is not None:
            value = self.mime[name]
            return None if value is None else str(value)
        for item in self.message.get("internetMessageHeaders") or []:
            if str(item.get("name", "")).lower() == name.lower():
                return str(item.get("value"))
        return None

    def addresses(self, kind: str) -> list[str]:
        """``to``, ``cc``, ``bcc`` or ``replyTo`` addresses of the message."""
        key = "replyTo" if kind == "replyTo" else f"{kind}Recipients"
        return [r["emailAddress"]["address"] for r in self.message.get(key) or []]


@dataclass
class Fault:
    status: int
    code: str
    message: str
    retry_after: str | None = None
    path: str = ""  # only requests whose path contains this


@dataclass
class _Upload:
    mailbox: str
    message_id: str
    name: str
    size: int
    content_type: str
    data: bytearray = field(default_factory=bytearray)


@dataclass
class MailboxState:
    """One mailbox: its drafts (and, later, its folders for the fetcher)."""

    address: str
    drafts: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> message JSON
    draft_attachments: dict[str, dict[str, bytes]] = field(default_factory=dict)


class GraphPeer:
    """Start with :meth:`start` (a uvicorn thread), stop with :meth:`stop`."""

    def __init__(
        self,
        certs: PeerCerts,
        *,
        mailboxes: tuple[str, ...] = ("desk@corp.example",),
        token: str = TOKEN,
        max_concurrent: int = 4,
        service_time: float = 0.0,
        retry_after: str = DEFAULT_RETRY_AFTER,
        throttle_every: int = 0,
        forbidden: tuple[str, ...] = (),
        accept: Callable[[str], object] | None = None,
    ) -> None:
        self.certs = certs
        self.valid_tokens = {token}
        # Tokens an identity-provider peer issued (e.g. OAuthPeer.valid_access), so the
        # whole OAuth path can be tested end to end.
        self.accept = accept
        self.max_concurrent = max_concurrent
        self.service_time = service_time
        self.retry_after = retry_after
        self.throttle_every = throttle_every
        self.forbidden = {m.lower() for m in forbidden}
        self.mailboxes = {m.lower(): MailboxState(m) for m in mailboxes}
        from peers.graph_mailbox import MailStore  # folders and mail for the fetcher

        self.store = MailStore()
        self.sent: list[SentMail] = []
        self.requests: list[tuple[str, str, int]] = []  # method, path, status
        self.tokens_seen: list[str] = []
        self.max_in_flight: dict[str, int] = {}
        self.throttled = 0
        self._faults: list[Fault] = []
        self._in_flight: dict[str, int] = {}
        self._mail_requests = 0
        self._uploads: dict[str, _Upload] = {}
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- the test's side ---------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """What goes into ``graphEndpoint``."""
        return f"https://{HOST}:{self.port}"

    def fail_next(self, status: int, code: str, message: str = "", *, times: int = 1,
                  retry_after: str | None = None, path: str = "") -> None:
        """Answer the next ``times`` mail requests (whose path contains ``path``) with an
        error."""
        with self._lock:
            self._faults += [Fault(status, code, message or code, retry_after, path)] * times

    def server(self, name: str = "graph", mailbox: str = "desk@corp.example",
               **spec: Any) -> Any:
        """An OutgoingServer (protocol graph) pointing at this peer."""
        body: dict[str, Any] = {
            "email": mailbox, "senderName": "IT Help Desk", "replyTo": "support@corp.example",
            "protocol": "graph", "graphEndpoint": self.endpoint, "mailbox": mailbox,
            "security": "tls", "port": self.port, "maxConcurrency": 4, "timeoutSeconds": 10,
            "auth": {"type": "oauth2", "provider": "microsoft", "grant": "clientCredentials",
                     "clientId": "11111111-2222-3333-4444-555555555555", "tenant": "corp"},
        }
        body.update(spec)
        return outgoing_server(name, body)

    def status_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        with self._lock:
            for _, _, status in self.requests:
                counts[status] = counts.get(status, 0) + 1
        return counts

    # -- running -----------------------------------------------------------------

    def start(self) -> GraphPeer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
        self.port = int(sock.getsockname()[1])
        pem = Path(self.certs.ca_file).with_name(f"graph-peer-{id(self)}.pem")
        self.certs.server_cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
        config = uvicorn.Config(self.app(), ssl_certfile=str(pem), log_config=None,
                                access_log=False, lifespan="off", timeout_keep_alive=30,
                                limit_concurrency=None)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="graph-peer", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the Graph peer did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> GraphPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def app(self) -> Starlette:
        return Starlette(routes=self.routes())

    def routes(self) -> list[Route]:
        """Every endpoint, in one place; the fetcher's folder endpoints go here later."""
        users = "/v1.0/users/{mailbox}"
        return [
            Route(users, self._mail(self._get_user), methods=["GET"]),
            Route(f"{users}/sendMail", self._mail(self._send_mail), methods=["POST"]),
            Route(f"{users}/messages", self._mail(self._create_draft), methods=["POST"]),
            Route(f"{users}/messages/{{id}}", self._mail(self._delete_draft),
                  methods=["DELETE"]),
            Route(f"{users}/messages/{{id}}/send", self._mail(self._send_draft),
                  methods=["POST"]),
            Route(f"{users}/messages/{{id}}/attachments/createUploadSession",
                  self._mail(self._create_upload), methods=["POST"]),
            Route("/upload/{session}", self._upload_chunk, methods=["PUT"]),
            *self.store.routes(self),  # the fetcher's: peers/graph_mailbox.py
        ]

    # -- the common part of every mailbox request ---------------------------------

    def _mail(self, handler: Handler) -> Handler:
        """Authorisation, mailbox lookup, faults, size limit, concurrency and service time
        around a mailbox endpoint."""

        async def wrapped(request: Request) -> Response:
            response = await self._guarded(request, handler)
            request_id = str(uuid.uuid4())
            response.headers["request-id"] = request_id
            response.headers["client-request-id"] = (
                request.headers.get("client-request-id") or request_id)
            with self._lock:
                self.requests.append((request.method, request.url.path, response.status_code))
            return response

        return wrapped

    async def _guarded(self, request: Request, handler: Handler) -> Response:
        # The service time is Graph's whole time for the request, this peer's own work
        # included: that is not the client's delay (bench/graph_surge.py's minimum).
        started = time.monotonic()
        authorization = request.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            self.tokens_seen.append(token)
        known = token in self.valid_tokens or (self.accept is not None and self.accept(token))
        if scheme.lower() != "bearer" or not known:
            problem = ("Lifetime validation failed, the token is expired." if token
                       else "Access token is empty.")
            return graph_error(401, "InvalidAuthenticationToken", problem, headers={
                "WWW-Authenticate": (
                    'Bearer realm="", authorization_uri="https://login.microsoftonline.com/'
                    f'common/oauth2/authorize", client_id="{_GRAPH_APP_ID}"')})
        mailbox = request.path_params["mailbox"].lower()
        state = self.mailboxes.get(mailbox)
        if state is None:
            return graph_error(404, "ErrorInvalidUser",
                               f"The requested user '{request.path_params['mailbox']}' is "
                               "invalid.")
        if mailbox in self.forbidden:
            return graph_error(403, "ErrorAccessDenied",
                               "Access is denied. Check credentials and try again.")
        body = await request.body()
        if len(body) > MAX_REQUEST_BYTES:
            return graph_error(413, "ErrorRequestEntityTooLarge",
                               "The request payload exceeds the maximum allowed size.")
        fault = self._take_fault(request)
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            return graph_error(fault.status, fault.code, fault.message, headers=headers)
        with self._lock:
            busy = self._in_flight.get(mailbox, 0)
            if busy >= self.max_concurrent:
                self.throttled += 1
                throttled = True
            else:
                throttled = False
                self._in_flight[mailbox] = busy + 1
                self.max_in_flight[mailbox] = max(self.max_in_flight.get(mailbox, 0), busy + 1)
        if throttled:
            return self._throttle("Application is over its MailboxConcurrency limit.")
        request.state.due = started + self.service_time
        try:
            response = await handler(request)
            await _until_due(request)  # endpoints that accept nothing
            return response
        finally:
            with self._lock:
                self._in_flight[mailbox] -= 1

    async def _accept(self, request: Request, sent: SentMail) -> None:
        # Accepted when Graph answers, at the end of its service time: the parsing
        # and checks above are Graph's work inside that time, not the client's delay.
        await _until_due(request)
        sent.at = time.monotonic()
        with self._lock:
            self.sent.append(sent)

    def _take_fault(self, request: Request) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.path in request.url.path:
                    return self._faults.pop(index)
            if request.method == "POST" and self.throttle_every:
                self._mail_requests += 1
                if self._mail_requests % self.throttle_every == 0:
                    self.throttled += 1
                    return Fault(429, "ApplicationThrottled",
                                 "Application is over its MailboxConcurrency limit.",
                                 self.retry_after)
        return None

    def _throttle(self, message: str) -> Response:
        return graph_error(429, "ApplicationThrottled", message,
                           headers={"Retry-After": self.retry_after})

    # -- the endpoints ---------------------------------------------------------------------

    async def _get_user(self, request: Request) -> Response:
        state = self.mailboxes[request.path_params["mailbox"].lower()]
        return JSONResponse({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata"
                             "#users(id,mail)/$entity",
                             "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, state.address)),
                             "mail": state.address})

    async def _send_mail(self, request: Request) -> Response:
        mailbox = request.path_params["mailbox"].lower()
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        body = await request.body()
        if content_type == "text/plain":
            try:
                mime = email.message_from_bytes(base64.b64decode(body, validate=True),
                                                policy=default_policy)
            except ValueError:
                return graph_error(400, "ErrorMimeContentInvalidBase64String",
                                   "Invalid base64 string for MIME content.")
            assert isinstance(mime, EmailMessage)
            attachments = {part.get_filename() or "": part.get_content()
                           for part in mime.iter_attachments()}
            sent = SentMail(mailbox, "mime", _mime_as_message(mime), None, attachments, mime)
        elif content_type == "application/json":
            try:
                payload = json.loads(body)
                message = payload["message"]
            except (ValueError, KeyError, TypeError):
                return graph_error(400, "ErrorInvalidRequest",
                                   "Cannot read the request body.")
            problem = _check_message(message)
            if problem is not None:
                return problem
            sent = SentMail(mailbox, "json", message, payload.get("saveToSentItems"),
                            _inline_attachments(message))
        else:
            return graph_error(415, "UnsupportedMediaType",
                               f"Content type {content_type!r} is not supported.")
        await self._accept(request, sent)
        return Response(status_code=202)

    async def _create_draft(self, request: Request) -> Response:
        state = self.mailboxes[request.path_params["mailbox"].lower()]
        try:
            message = json.loads(await request.body())
        except ValueError:
            return graph_error(400, "ErrorInvalidRequest", "Cannot read the request body.")
        problem = _check_message(message)
        if problem is not None:
            return problem
        draft_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        with self._lock:
            state.drafts[draft_id] = message
            state.draft_attachments[draft_id] = _inline_attachments(message)
        return JSONResponse({**message, "id": draft_id, "isDraft": True}, status_code=201)

    async def _delete_draft(self, request: Request) -> Response:
        state = self.mailboxes[request.path_params["mailbox"].lower()]
        with self._lock:
            found = state.drafts.pop(request.path_params["id"], None)
            state.draft_attachments.pop(request.path_params["id"], None)
        if found is None:
            return graph_error(404, "ErrorItemNotFound",
                               "The specified object was not found in the store.")
        return Response(status_code=204)

    async def _create_upload(self, request: Request) -> Response:
        state = self.mailboxes[request.path_params["mailbox"].lower()]
        draft_id = request.path_params["id"]
        if draft_id not in state.drafts:
            return graph_error(404, "ErrorItemNotFound",
                               "The specified object was not found in the store.")
        try:
            item = json.loads(await request.body())["AttachmentItem"]
            size = int(item["size"])
            name = str(item["name"])
        except (ValueError, KeyError, TypeError):
            return graph_error(400, "ErrorInvalidRequest", "AttachmentItem is missing.")
        if item.get("attachmentType") != "file":
            return graph_error(400, "ErrorInvalidRequest", "attachmentType must be file.")
        session = uuid.uuid4().hex
        with self._lock:
            self._uploads[session] = _Upload(state.address.lower(), draft_id, name, size,
                                             str(item.get("contentType") or ""))
        # Real upload URLs carry their own credential in the query string.
        url = f"{self.endpoint}/upload/{session}?authtoken=upload-secret-{session[:8]}"
        return JSONResponse({"uploadUrl": url, "expirationDateTime": "2099-01-01T00:00:00Z",
                             "nextExpectedRanges": ["0-"]}, status_code=201)

    async def _upload_chunk(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(("PUT", "/upload", 0))
        session = self._uploads.get(request.path_params["session"])
        if session is None:
            return graph_error(404, "ErrorItemNotFound", "The upload session was not found.")
        if "authorization" in request.headers:
            # Upload URLs are pre-authenticated; Graph refuses a bearer token on them.
            return graph_error(401, "InvalidAuthenticationToken",
                               "Authorization header is not allowed on an upload URL.")
        body = await request.body()
        first, last, total = _content_range(request.headers.get("content-range", ""))
        if (first != len(session.data) or total != session.size or last - first + 1 != len(body)
                or len(body) > MAX_REQUEST_BYTES):
            return graph_error(416, "InvalidRange",
                               f"Expected range {len(session.data)}- of {session.size}.")
        session.data += body
        if len(session.data) < session.size:
            return JSONResponse({"expirationDateTime": "2099-01-01T00:00:00Z",
                                 "nextExpectedRanges": [f"{len(session.data)}-"]})
        state = self.mailboxes[session.mailbox]
        with self._lock:
            state.draft_attachments[session.message_id][session.name] = bytes(session.data)
            self._uploads.pop(request.path_params["session"], None)
        return Response(status_code=201, headers={
            "Location": f"{self.endpoint}/v1.0/users/{session.mailbox}/messages/"
                        f"{session.message_id}/attachments/{uuid.uuid4().hex}"})

    async def _send_draft(self, request: Request) -> Response:
        mailbox = request.path_params["mailbox"].lower()
        state = self.mailboxes[mailbox]
        with self._lock:
            message = state.drafts.pop(request.path_params["id"], None)
            attachments = state.draft_attachments.pop(request.path_params["id"], {})
        if message is None:
            return graph_error(404, "ErrorItemNotFound",
                               "The specified object was not found in the store.")
        await self._accept(request, SentMail(mailbox, "draft", message, True, attachments))
        return Response(status_code=202)


# -- helpers ---------------------------------------------------------------------------------


@contextmanager
def graph_peers(certs: PeerCerts) -> Iterator[Callable[..., GraphPeer]]:
    """Start GraphPeers on demand, each configured as a test needs (``make(**kwargs)``
    takes :class:`GraphPeer`'s arguments); all are stopped on the way out."""
    started: list[GraphPeer] = []

    def make(**kwargs: Any) -> GraphPeer:
        peer = GraphPeer(certs, **kwargs).start()
        started.append(peer)
        return peer

    try:
        yield make
    finally:
        for peer in started:
            peer.stop()


async def _until_due(request: Request) -> None:
    """Wait out what is left of the request's service time (none once it has passed)."""
    left = request.state.due - time.monotonic()
    if left > 0:
        await asyncio.sleep(left)


def _check_message(message: Any) -> Response | None:
    """What Graph refuses with 400 before sending: no or malformed recipients."""
    if not isinstance(message, dict):
        return graph_error(400, "ErrorInvalidRequest", "The message is missing.")
    recipients = [r for key in ("toRecipients", "ccRecipients", "bccRecipients")
                  for r in message.get(key) or []]
    for recipient in recipients:
        address = str((recipient.get("emailAddress") or {}).get("address", ""))
        if "@" not in address or address.startswith("invalid"):
            return graph_error(400, "ErrorInvalidRecipients",
                               f"At least one recipient is not valid., Recipient '{address}' "
                               "is not resolved. All recipients must be resolved before a "
                               "message can be submitted.")
    for header in message.get("internetMessageHeaders") or []:
        if not str(header.get("name", "")).lower().startswith("x-"):
            return graph_error(400, "InvalidInternetMessageHeader",
                               f"The internet message header name '{header.get('name')}' "
                               "should start with 'x-' or 'X-'.")
    return None


def _inline_attachments(message: dict[str, Any]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for item in message.get("attachments") or []:
        if item.get("@odata.type") == "#microsoft.graph.fileAttachment":
            out[str(item["name"])] = base64.b64decode(item["contentBytes"])
    return out


def _mime_as_message(mime: EmailMessage) -> dict[str, Any]:
    """The parts of a MIME message the tests look at, in the JSON message's shape."""

    def boxes(header: str) -> list[dict[str, Any]]:
        value = mime[header]
        if value is None:
            return []
        return [{"emailAddress": {"address": a.addr_spec, "name": a.display_name}}
                for a in value.addresses]

    return {"subject": str(mime["Subject"] or ""), "toRecipients": boxes("To"),
            "ccRecipients": boxes("Cc"), "bccRecipients": boxes("Bcc"),
            "replyTo": boxes("Reply-To"), "internetMessageId": str(mime["Message-ID"] or "")}


def _content_range(value: str) -> tuple[int, int, int]:
    """``bytes 0-327679/5242880`` -> (0, 327679, 5242880); (-1, -1, -1) when malformed."""
    try:
        unit, _, spec = value.partition(" ")
        span, _, total = spec.partition("/")
        first, _, last = span.partition("-")
        if unit != "bytes":
            raise ValueError(unit)
        return int(first), int(last), int(total)
    except ValueError:
        return -1, -1, -1
