"""The daemon's HTTP API (SPEC O1, O8, X3): intake, notification state, audit,
status, metrics and liveness.

``create_api(...)`` builds the FastAPI application; the daemon serves it with
uvicorn inside its own event loop. Everything under ``/v1`` needs a bearer
token (one of ``DaemonSettings.api_tokens``, resolved once here: a reference
that cannot be resolved stops the daemon with :class:`ApiTokenError`).
``/metrics`` and ``/healthz`` are open, like most exporters and liveness
probes: they show counts, never message content or recipients; bind the
daemon to a private interface or put it behind a proxy when that matters.

Intake answers 202 only after the notification is committed (group commit,
see :mod:`reconciler.daemon.intake`). A repeated idempotency key answers 200
with the first notification's id and ``duplicate: true``. After a commit the
API calls ``app.state.wake_worker()`` when the daemon has set it.

Intake itself is answered in front of the FastAPI stack, which cost more CPU
than the route's own work (:mod:`reconciler.daemon.intake_route`); the route
stays registered here for the OpenAPI document and runs the same code.

Nothing here logs a request body or a token.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Protocol

import anyio.to_thread
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from reconciler.config.desired import ResourceKey
from reconciler.daemon.auth import ApiTokenError, BearerTokens
from reconciler.daemon.intake import MAX_BATCH, GroupCommitter
from reconciler.daemon.intake_route import (
    PARSE_IN_THREAD_BYTES,
    RETRY_AFTER_S,
    DaemonApi,
    IntakeRoute,
    ReplyResponse,
    check_bearer,
    store_unavailable,
)
from reconciler.daemon.limits import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from reconciler.daemon.params import ROW_ID_MAX, SearchText, UtcTime
from reconciler.daemon.problems import NOTIFICATION_FIELDS, validation_handler
from reconciler.daemon.refusals import RefusalLog
from reconciler.daemon.schemas import (
    Accepted,
    AuditItem,
    DaemonStatus,
    Health,
    IncomingServerStatus,
    IntakeCounters,
    NotificationStatus,
    Problem,
    ResourceStatus,
    ValidationProblem,
)
from reconciler.mail.envelope import Notification
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.settings import DaemonSettings
from reconciler.state.base import (
    Audit,
    AuditDirection,
    AuditStatus,
    Outbox,
    StoreError,
)

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_BODY_BYTES", "PARSE_IN_THREAD_BYTES", "RETRY_AFTER_S", "ApiStore",
           "ApiTokenError", "create_api"]

TITLE = "reconcile dispatch API"

_DESCRIPTION = """\
Submit the service desk's notifications to the dispatch daemon and follow
what becomes of them.

* Every `/v1` endpoint needs `Authorization: Bearer <token>`; a missing or
  wrong token gets 401 with `WWW-Authenticate: Bearer`.
* `POST /v1/notifications` answers **202 only after the notification is
  stored durably**; a repeated `idempotencyKey` (per namespace) answers 200
  with the id stored first and `duplicate: true`, storing nothing new.
* Bodies larger than the configured limit (50 MiB by default) get 413.
* A field or parameter that is wrong gets 422 naming it, a body that is not
  JSON included (`json_invalid`); ids, offsets and cursors go up to
  2^63 - 1, the largest the store holds.
* `/metrics` (Prometheus text) and `/healthz` need no token: they show counts,
  never message content.
"""

# Module level: FastAPI resolves the (string) annotations of dependencies in
# the module's namespace, not in create_api's.
_BEARER = HTTPBearer(auto_error=False, description="One of the daemon's API tokens.")

_TAGS = [
    {"name": "notifications", "description": "Intake and state of notifications (O1)."},
    {"name": "audit", "description": "The email audit (O8)."},
    {"name": "operations", "description": "Daemon status, metrics (X3) and liveness."},
]


class ApiStore(Protocol):
    """What the API needs of the store (``SqlStore`` has it all)."""

    @property
    def outbox(self) -> Outbox: ...

    @property
    def audit(self) -> Audit: ...

    def statuses(self) -> dict[ResourceKey, dict[str, Any]]: ...


def _package_version() -> str:
    try:
        return version("reconciler")
    except PackageNotFoundError:
        return "0+unknown"


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No or wrong bearer token."},
    422: {"model": ValidationProblem, "description": "A field is wrong; each one is named."},
    503: {"model": Problem, "description": "The state store is unavailable; retry later."},
}


def create_api(
    store: ApiStore,
    settings: DaemonSettings,
    metrics: DaemonMetrics,
    config: ConfigHolder,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    intake_window: float = 0.0,
    intake_concurrency: int = 1,
    intake_max_batch: int = MAX_BATCH,
    fast_intake: bool = True,
) -> FastAPI:
    """The daemon's API application.

    Raises :class:`ApiTokenError` when a token reference cannot be resolved.
    ``intake_window`` holds the first submission of a group commit for that
    many seconds (0: no wait, batches form while a commit runs; measured
    better than 1-2 ms in ``bench/intake.py``); ``intake_concurrency`` is how
    many intake transactions may run at once (1: measured no slower on
    PostgreSQL than 2 or 4, with bigger batches); ``intake_max_batch`` caps
    one transaction (1 turns group commit off, for comparison).
    ``fast_intake=False`` lets intake go through the FastAPI stack like every
    other route (same answers, more CPU; for comparison).
    """
    tokens = BearerTokens(settings.api_tokens)
    if not tokens:
        log.warning("no API tokens are configured: every /v1 request will get 401")
    intake = GroupCommitter(store.outbox, window=intake_window, concurrency=intake_concurrency,
                            max_batch=intake_max_batch)
    app_version = _package_version()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        # uvicorn has finished the requests in flight; write anything left over
        await intake.aclose()

    app = DaemonApi(title=TITLE, version=app_version, description=_DESCRIPTION,
                    openapi_tags=_TAGS, lifespan=lifespan)
    app.state.intake = intake
    # The daemon may set its hook later; None until then spares every intake
    # request the AttributeError that looking up a missing one costs.
    app.state.wake_worker = None
    route = IntakeRoute(store, intake, config, metrics, tokens, app.state, max_body_bytes)
    if fast_intake:
        app.intake_route = route
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(RefusalLog)  # added last: outermost, so it sees the 413s too
    app.add_exception_handler(RequestValidationError, validation_handler)
    app.add_exception_handler(StoreError, _store_unavailable)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    # async although it never awaits: FastAPI runs a plain def dependency in
    # the threadpool, a thread hop per request for a few microseconds of work.
    async def authorized(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    ) -> None:
        check_bearer(tokens, request.scope, None if credentials is None else
                     credentials.credentials)

    guarded = [Depends(authorized)]

    @app.post(
        "/v1/notifications", tags=["notifications"], status_code=202, dependencies=guarded,
        response_model=Accepted, summary="Submit a notification",
        responses={**_ERRORS,
                   200: {"model": Accepted, "description": "Duplicate idempotency key: the "
                         "notification stored first; nothing new was stored."},
                   202: {"description": "Stored durably; it will be sent. "
                         "`droppedAttachments` names each attachment that will be left out "
                         "for being over the server's limit."},
                   422: {"model": ValidationProblem, "description": "A field is wrong, the "
                         "namespace is unknown or has no outgoing server, or an attachment "
                         "is over the limit of a server that refuses oversize attachments; "
                         "each is named."},
                   413: {"model": Problem, "description": "Body over the size limit."}},
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Notification"}}}}},
    )
    async def submit(request: Request) -> Response:
        # Reached when the fast path steps aside (see intake_route); the same code.
        return ReplyResponse(await route.accept(request.scope, await request.body()))

    @app.get("/v1/notifications/{id}", tags=["notifications"], dependencies=guarded,
             response_model=NotificationStatus, summary="What became of a notification",
             responses={**_ERRORS, 404: {"model": Problem, "description": "No such id."}})
    async def notification_status(
        id: Annotated[int, Path(ge=1, le=ROW_ID_MAX,
                                description="The id intake answered with.")],
    ) -> NotificationStatus:
        message = await anyio.to_thread.run_sync(store.outbox.get, id)
        if message is None:
            raise HTTPException(404, f"there is no notification {id} (never accepted, or "
                                "purged after it was finished)")
        return NotificationStatus.from_message(message)

    @app.get("/v1/audit", tags=["audit"], dependencies=guarded, response_model=list[AuditItem],
             summary="Search the email audit, newest first", responses=_ERRORS)
    async def audit(
        status: Annotated[list[AuditStatus] | None, Query(
            description="Only these statuses (repeat the parameter for several).")] = None,
        recipient: Annotated[SearchText | None, Query(
            description="Whole address, case-insensitive.")] = None,
        server: Annotated[SearchText | None, Query(description="Server name.")] = None,
        since: Annotated[UtcTime | None, Query(
            description="At or after: an ISO 8601 date-time (UTC without a zone) or "
            "date (its midnight, UTC).")] = None,
        until: Annotated[UtcTime | None, Query(
            description="At or before: an ISO 8601 date-time (UTC without a zone) or "
            "date (its midnight, UTC).")] = None,
        direction: AuditDirection | None = None,
        namespace: Annotated[SearchText | None, Query()] = None,
        outbox_id: Annotated[int | None, Query(alias="outboxId", ge=1, le=ROW_ID_MAX)] = None,
        message_id: Annotated[SearchText | None, Query(alias="messageId")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=ROW_ID_MAX)] = 0,
    ) -> list[AuditItem]:
        def search() -> list[AuditItem]:
            found = store.audit.search(
                status=status or None, recipient=recipient, server=server,
                since=since, until=until, direction=direction,
                namespace=namespace, outbox_id=outbox_id, message_id=message_id,
                limit=limit, offset=offset)
            return [AuditItem.from_entry(e) for e in found]

        return await anyio.to_thread.run_sync(search)

    @app.get("/v1/status", tags=["operations"], dependencies=guarded,
             response_model=DaemonStatus, summary="This daemon's status", responses=_ERRORS)
    async def daemon_status(
        finished: Annotated[bool, Query(
            description="Also count sent/failed/ignored messages (reads the whole "
            "outbox).")] = False,
    ) -> DaemonStatus:
        live = config.current

        def read() -> DaemonStatus:
            depth = store.outbox.depth(finished=finished)
            statuses = store.statuses()
            incoming: list[IncomingServerStatus] = []
            events: dict[str, int] = {}
            if hasattr(store, "connections"):  # the SQL store keeps incoming state (I6)
                from reconciler.incoming.store import IncomingStore

                fetching = IncomingStore.of_store(store)
                incoming = [IncomingServerStatus.from_state(s)
                            for s in fetching.server_states()]
                events = fetching.event_counts()
            return DaemonStatus(
                version=app_version,
                worker_id=settings.worker_id,
                config_revision=live.revision,
                namespaces=sorted(live.namespaces),
                outbox={state: count for state, count in depth.items()},
                statuses=[ResourceStatus.from_store(key, value)
                          for key, value in sorted(statuses.items())],
                intake=IntakeCounters(**vars(intake.stats)),
                incoming=incoming,
                ticket_events=events,
            )

        return await anyio.to_thread.run_sync(read)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics (no token)",
             response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}},
                              "description": "Prometheus text exposition format."}})
    async def prometheus() -> Response:
        try:
            depth = await anyio.to_thread.run_sync(store.outbox.depth)
        except StoreError as exc:
            # Drop the gauge rather than show a stale depth; the other metrics
            # still help while the store is away.
            log.warning("metrics: cannot read the outbox depth: %s", exc)
            metrics.queue_depth.clear()
        else:
            for state, count in depth.items():
                metrics.queue_depth.labels(state=state.value).set(count)
        if config.current.revision >= 0:
            metrics.config_revision.set(config.current.revision)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    if hasattr(store, "connections"):  # the SQL store: incoming ticket events (I8)
        from reconciler.daemon.api_incoming import add_event_routes

        add_event_routes(app, store, guarded, _ERRORS)

    @app.get("/healthz", tags=["operations"], response_model=Health,
             summary="Liveness (no token)")
    async def healthz() -> Health:
        return Health(status="ok")

    return app


async def _store_unavailable(_request: Request, exc: Exception) -> Response:
    return ReplyResponse(store_unavailable(exc))


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the bodies the routes read themselves: intake's
    (pydantic's JSON mode decodes base64 attachments; FastAPI's path does not) and
    those in ``app.state.body_schemas`` (the events ack)."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, description=app.description,
                           routes=app.routes, tags=app.openapi_tags)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    body = Notification.model_json_schema(by_alias=True,
                                          ref_template="#/components/schemas/{model}")
    schemas.update(body.pop("$defs", {}))
    body["description"] = "One notification to send (SPEC O1)."
    for name, text in NOTIFICATION_FIELDS.items():
        body["properties"][name].setdefault("description", text)
    schemas["Notification"] = body
    schemas.update(getattr(app.state, "body_schemas", {}))
    app.openapi_schema = document
    return document
