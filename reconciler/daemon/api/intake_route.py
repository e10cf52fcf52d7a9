"""The intake route, ``POST /v1/notifications``, answered in front of FastAPI.

Through the framework a request passed RefusalLog, BodySizeLimit, Starlette's
exception wrappers, routing and FastAPI's dependency solving before the route
ran, and left through a JSONResponse and four wrapped ``send`` functions: a
py-spy profile put about half of the event loop's time per intake request
there. The route needs none of it, so :class:`DaemonApi` (the FastAPI app
that ``factory.create_api`` returns and uvicorn serves) answers exactly
``POST /v1/notifications`` with :class:`IntakeRoute` and passes every other
request (other paths, other methods, lifespan) to FastAPI unchanged.

The FastAPI route stays registered: it documents the route in
``/openapi.json`` and answers when the fast path is off
(``create_api(fast_intake=False)``), when FastAPI's native OpenTelemetry is
on (its spans then cover intake as before), or under a root path. Both run
the same code: :func:`~.guard.check_bearer` and :func:`~.guard.require` (also the
guard of every other ``/v1`` route), :meth:`IntakeRoute.accept` and the replies
built here.

The answers are the same, byte for byte, and come in the same order:

1. a declared ``Content-Length`` over the limit: 413 before anything else
   (the reply of :mod:`reconciler.daemon.api.body_limit`);
2. no or a wrong bearer token, read as ``HTTPBearer`` reads it: 401 with
   ``WWW-Authenticate``, before a byte of the body is read (so no
   ``100 Continue`` either); a token without the sender role: 403 naming it;
3. the body, counted while it arrives: 413 with ``Connection: close`` once
   over the limit; a client gone meanwhile raises Starlette's
   ``ClientDisconnect``;
4. :meth:`IntakeRoute.accept`: 422 naming the fields, 403 naming a namespace
   the token is not limited to, 503 before the first config load, 422 for an
   unknown namespace, 422 naming each attachment over the limit of a server
   that refuses them, 503 when the store is down, else
   202 (naming each attachment that will be left out, if any) or 200 for a
   known idempotency key, with ``Location``.

Refused answers get their log line from :func:`refusals.log_refusal` before
they leave, as RefusalLog writes it. An unexpected error answers the plain
500 of Starlette's ServerErrorMiddleware and is raised on for uvicorn to log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, NamedTuple

import anyio.to_thread
from fastapi import FastAPI, HTTPException
from fastapi.security.utils import get_authorization_scheme_param
from prometheus_client import Counter
from pydantic import ValidationError
from starlette.datastructures import State
from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from reconciler.daemon.api.body_limit import BodyTooLarge, parse_length, too_large
from reconciler.daemon.api.guard import check_bearer, require
from reconciler.daemon.api.problems import field_problem, field_problems
from reconciler.daemon.api.refusals import REFUSED, invalid_fields_reason, log_refusal, refuse
from reconciler.daemon.intake import GroupCommitter
from reconciler.dispatch.oversize import routed_oversized
from reconciler.mail.envelope import Notification
from reconciler.runtime.access import Principal, Role
from reconciler.runtime.api_tokens import BearerTokens
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.state.base import EnqueueRequest, OutboxState, Store, StoreError

# The API's logger (the package's), shared by every module of the API.
log = logging.getLogger("reconciler.daemon.api")

PATH = "/v1/notifications"
# Parsing a body this large on the event loop would stall every other request.
PARSE_IN_THREAD_BYTES = 256 * 1024
RETRY_AFTER_S = "5"

_JSON = (b"content-type", b"application/json")
_LOCATION = PATH.encode() + b"/%d"
_ACCEPTED = (b'{"id":%d,"duplicate":false,"status":'
             + json.dumps(OutboxState.QUEUED.value).encode() + b"}")


class Reply(NamedTuple):
    """One complete answer: status, raw headers (without uvicorn's date and
    server) and body. A tuple: built once per request, cheaper than a dataclass."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class ReplyResponse(Response):
    """A :class:`Reply` as a Starlette response, for the FastAPI side."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.body, reply.status)
        # The reply's headers are complete (length and type included), in order.
        self.raw_headers = list(reply.headers)


def dumps(content: Any) -> bytes:
    """JSON as Starlette's JSONResponse renders it."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


def json_reply(status: int, body: bytes,
               extra: Iterable[tuple[bytes, bytes]] = ()) -> Reply:
    """Headers in JSONResponse's order: the given ones, length, type."""
    return Reply(status, [*extra, (b"content-length", str(len(body)).encode("latin-1")), _JSON],
                 body)


def error_reply(exc: HTTPException) -> Reply:
    """What FastAPI's handler answers for ``exc`` (every status used here has a body)."""
    extra = [(name.lower().encode("latin-1"), value.encode("latin-1"))
             for name, value in (exc.headers or {}).items()]
    return json_reply(exc.status_code, dumps({"detail": exc.detail}), extra)


def store_unavailable(exc: Exception) -> Reply:
    """503 for a request that failed on the store outside intake's own writes."""
    log.warning("API request failed on the store: %s", exc)
    return json_reply(503, dumps({"detail": "the state store is unavailable; retry later"}),
                      [(b"retry-after", RETRY_AFTER_S.encode("latin-1"))])


def bearer_credentials(authorization: bytes | None) -> str | None:
    """The token of an ``Authorization`` header value as ``HTTPBearer(auto_error=False)``
    reads it: None when absent, empty or not the Bearer scheme."""
    value = None if authorization is None else authorization.decode("latin-1")
    scheme, credentials = get_authorization_scheme_param(value)
    if not (value and scheme and credentials) or scheme.lower() != "bearer":
        return None
    return credentials


class _Invalid(HTTPException):
    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(422, problems)


async def _parse(body: bytes) -> Notification:
    try:
        if len(body) > PARSE_IN_THREAD_BYTES:
            return await anyio.to_thread.run_sync(Notification.model_validate_json, body)
        return Notification.model_validate_json(body)
    except ValidationError as exc:
        raise _Invalid(field_problems(exc.errors(include_url=False), ("body",))) from None


class IntakeRoute:
    """``POST /v1/notifications``: :meth:`handle` as plain ASGI, :meth:`accept` for
    both sides."""

    def __init__(self, store: Store, intake: GroupCommitter, config: ConfigHolder,
                 metrics: DaemonMetrics, tokens: BearerTokens, state: State,
                 max_body_bytes: int) -> None:
        self._store = store
        self._intake = intake
        self._config = config
        self._metrics = metrics
        self._tokens = tokens
        self._state = state  # the app's: the daemon sets state.wake_worker after start-up
        self._max_body_bytes = max_body_bytes
        self._too_large = Reply(413, *too_large(max_body_bytes))
        # labels() takes a lock and builds a key per call; namespaces are few.
        self._accepted: dict[str, Counter] = {}

    async def accept(self, scope: Scope, body: bytes, principal: Principal) -> Reply:
        """Parse, check and store one notification from ``principal`` (a sender); the
        answer to give.

        Raises HTTPException (403/422/503) and StoreError for the caller to turn
        into answers, as FastAPI's handlers do.
        """
        try:
            notification = await _parse(body)
        except _Invalid as exc:
            refuse(scope, invalid_fields_reason(exc.detail))
            raise
        namespace = notification.namespace
        if not principal.sees(namespace):
            # Before the config is asked: the answer tells nothing about the namespace.
            refuse(scope, f"{principal.name} may not submit to this namespace")
            raise HTTPException(403, f"this token may not submit to namespace {namespace!r}")
        live = self._config.current
        if live.revision < 0:
            raise HTTPException(503, "the daemon has not loaded its configuration yet; "
                                "retry in a moment", headers={"Retry-After": RETRY_AFTER_S})
        config = live.namespaces.get(namespace)
        if config is None or not config.servers:
            # A namespace with settings or incoming servers only would accept the
            # notification and fail it in the worker: nothing there can send it.
            refuse(scope, "unknown namespace")
            why = ("is not configured" if config is None else "has no outgoing server")
            return json_reply(422, dumps({"detail": [field_problem(
                ("body", "namespace"),
                f"namespace {namespace!r} {why} in the live config "
                f"(revision {live.revision})", "unknown_namespace")]}))
        oversized = None
        if notification.attachments:
            # Routed now, with the config the worker will most likely send with, so the
            # client learns here (not only in the audit) what will be left out.
            oversized = routed_oversized(config, notification)
            if oversized is not None and oversized.refused:
                refuse(scope, "attachments over the server's limit")
                return json_reply(422, dumps({"detail": [
                    field_problem(("body", "attachments", i), oversized.refusal(item),
                                  "attachment_too_large")
                    for i, item in oversized.dropped]}))
        try:
            result = await self._intake.submit(
                EnqueueRequest(notification, namespace, notification.idempotency_key))
        except StoreError as exc:
            log.warning("intake could not store a notification: %s", exc)
            raise HTTPException(503, "the outbox store is unavailable; the notification was "
                                "NOT accepted, retry later",
                                headers={"Retry-After": RETRY_AFTER_S}) from None
        location = (b"location", _LOCATION % result.id)
        if result.duplicate:
            found = await anyio.to_thread.run_sync(self._store.outbox.get, result.id)
            state = found.state if found is not None else OutboxState.QUEUED
            return json_reply(200, dumps({"id": result.id, "duplicate": True,
                                          "status": state.value}), (location,))
        counter = self._accepted.get(namespace)
        if counter is None:
            counter = self._accepted[namespace] = self._metrics.accepted.labels(
                namespace=namespace)
        counter.inc()
        # The daemon sets this hook so its worker claims now rather than after
        # its poll interval; an API served on its own has none.
        wake = getattr(self._state, "wake_worker", None)
        if wake is not None:
            wake()
        if oversized is not None:
            return json_reply(202, dumps({
                "id": result.id, "duplicate": False, "status": OutboxState.QUEUED.value,
                "droppedAttachments": oversized.to_json()}), (location,))
        return json_reply(202, _ACCEPTED % result.id, (location,))

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one ``POST /v1/notifications`` as the middleware stack would."""
        try:
            reply = await self._answer(scope, receive)
        except Exception:
            # As Starlette's ServerErrorMiddleware (debug off): the response has
            # not started, so a plain 500, and uvicorn logs the error.
            await PlainTextResponse("Internal Server Error", status_code=500)(
                scope, receive, send)
            raise
        if reply.status in REFUSED:
            log_refusal(scope, reply.status)
        await send({"type": "http.response.start", "status": reply.status,
                    "headers": reply.headers})
        await send({"type": "http.response.body", "body": reply.body})

    async def _answer(self, scope: Scope, receive: Receive) -> Reply:
        authorization = length = None
        for name, value in scope["headers"]:
            # The first of each, as Starlette's Headers.get and BodySizeLimit take it.
            if name == b"authorization":
                if authorization is None:
                    authorization = value
            elif name == b"content-length" and length is None:
                length = value
        if length is not None:
            declared = parse_length(length)
            if declared is not None and declared > self._max_body_bytes:
                return self._too_large
        try:
            principal = check_bearer(self._tokens, scope, bearer_credentials(authorization))
            require(principal, Role.SENDER, scope)
            return await self.accept(scope, await self._body(receive), principal)
        except HTTPException as exc:
            return error_reply(exc)
        except StoreError as exc:
            return store_unavailable(exc)
        except BodyTooLarge:
            return self._too_large

    async def _body(self, receive: Receive) -> bytes:
        """The whole body as Starlette's ``Request.body`` reads it, counted as
        BodySizeLimit counts it."""
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > self._max_body_bytes:
                    raise BodyTooLarge
                if chunk:
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            elif message["type"] == "http.disconnect":
                raise ClientDisconnect


class DaemonApi(FastAPI):
    """The daemon's FastAPI app; ``intake_route``, when set, answers
    ``POST /v1/notifications`` before the middleware stack."""

    intake_route: IntakeRoute | None = None
    _traced: bool | None = None  # FastAPI's native OpenTelemetry, once known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.intake_route
        if (route is not None and scope["type"] == "http" and scope["path"] == PATH
                and scope["method"] == "POST" and not scope.get("root_path")):
            if self._traced is None:
                self._traced = _native_telemetry_on(self)
            if not self._traced:
                await route.handle(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _native_telemetry_on(app: FastAPI) -> bool:
    """Whether FastAPI traces requests itself (an OpenTelemetry provider is set up;
    the daemon sets none). Then intake goes through FastAPI so its spans stay.

    Asked once, at the first intake request: providers are set once per process,
    by instrumentation at start-up, and asking costs more per request (provider
    and environment look-ups) than anything else the fast path does besides
    parsing. Not a public attribute: without it nothing is traced, so "off".
    """
    telemetry = getattr(app, "_native_telemetry", None)
    return telemetry is not None and bool(telemetry.enabled())
