"""``create_api(...)``: the daemon's FastAPI application, built from one router per
area (see the package doc), each route behind the bearer-token guard of the role it
needs (:mod:`.guard`).

Tokens are resolved once, here (``DaemonSettings.api_tokens`` and ``api_access``): a
reference that cannot be resolved stops the daemon with :class:`ApiTokenError`. After a commit,
intake calls ``app.state.wake_worker()`` when the daemon has set it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response

from reconciler.console.app import mount as mount_console
from reconciler.console.deps import ConsoleDeps
from reconciler.daemon.api import audit, events, monitoring, notifications, outbox, status
from reconciler.daemon.api import sync as sync_api
from reconciler.daemon.api.body_limit import DEFAULT_MAX_BODY_BYTES, BodySizeLimit
from reconciler.daemon.api.guard import Guard
from reconciler.daemon.api.intake_route import (
    DaemonApi,
    IntakeRoute,
    ReplyResponse,
    store_unavailable,
)
from reconciler.daemon.api.problems import NOTIFICATION_FIELDS, validation_handler
from reconciler.daemon.api.refusals import RefusalLog
from reconciler.daemon.intake import MAX_BATCH, GroupCommitter
from reconciler.mail.envelope import Notification
from reconciler.runtime.api_tokens import BearerTokens
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.settings import DaemonSettings
from reconciler.state.base import Store, StoreError

log = logging.getLogger("reconciler.daemon.api")

TITLE = "reconcile dispatch API"

_DESCRIPTION = """\
Submit the service desk's notifications to the dispatch daemon and follow
what becomes of them.

* Every `/v1` endpoint needs `Authorization: Bearer <token>`; a missing or
  wrong token gets 401 with `WWW-Authenticate: Bearer`.
* A token holds roles: `sender` submits notifications, `viewer` / `auditor`
  read, `operator` also acts on the outbox and acknowledges events, `admin`
  does everything; a token without the role an endpoint needs gets 403 naming
  it. A token limited to namespaces sees only their rows; an item of another
  namespace answers 404.
* `POST /v1/notifications` answers **202 only after the notification is
  stored durably**; a repeated `idempotencyKey` (per namespace) answers 200
  with the id stored first and `duplicate: true`, storing nothing new.
* Bodies larger than the configured limit (50 MiB by default) get 413.
* A field or parameter that is wrong gets 422 naming it, a body that is not
  JSON included (`json_invalid`); ids, offsets and cursors go up to
  2^63 - 1, the largest the store holds.
* `/healthz` needs no token. `/metrics` (Prometheus text: counts, never message
  content) needs a viewer token of every namespace when any token is configured,
  unless the daemon's access file sets `metrics.requireToken: false`.
"""

_TAGS = [
    {"name": "notifications", "description": "Intake and state of notifications (O1)."},
    {"name": "audit", "description": "The email audit (O8)."},
    {"name": "operations", "description": "Daemon status, metrics (X3) and liveness."},
]


def create_api(
    store: Store,
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
    tokens = BearerTokens(settings.api_tokens, settings.api_access)
    if not tokens:
        log.warning("no API tokens are configured: every /v1 request will get 401")
    intake = GroupCommitter(store.outbox, window=intake_window, concurrency=intake_concurrency,
                            max_batch=intake_max_batch)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        # uvicorn has finished the requests in flight; write anything left over
        await intake.aclose()

    app = DaemonApi(title=TITLE, version=_package_version(), description=_DESCRIPTION,
                    openapi_tags=list(_TAGS), lifespan=lifespan)
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

    # Each route declares the role it needs; the guard checks token, role and scope.
    guard = Guard(tokens)
    app.include_router(notifications.router(store, route, guard))
    app.include_router(audit.router(store, guard))
    # Incoming mail's fetch state (I6) and ticket events (I8), from the store contract.
    incoming = store.incoming
    app.include_router(status.router(store, settings, config, intake, incoming, app.version,
                                     guard))
    app.include_router(monitoring.router(store, metrics, config,
                                         guard if settings.metrics_need_token else None))
    app.include_router(events.router(incoming, guard))
    app.include_router(sync_api.status_router(store, guard))
    app.state.sync_wake = None  # the daemon sets it when this process syncs
    app.include_router(sync_api.webhook_router(store, settings, lambda: app.state.sync_wake))
    app.include_router(outbox.router(store, guard, config, app.state))
    if settings.console:  # SPEC X6, docs/console.md
        mount_console(app, ConsoleDeps(store, settings, config, metrics, app.state), tokens)
    app.openapi_tags = [*_TAGS, events.TAG, sync_api.TAG, outbox.TAG]
    # The ack body is read by the route itself, so the document takes its schema from
    # here: inline, FastAPI would turn its integer bounds into floats, and 2**63 - 1
    # does not survive that.
    bodies: dict[str, Any] = {"Ack": events.Ack.model_json_schema(), **outbox.BODIES}
    app.openapi = lambda: _openapi(app, bodies)  # type: ignore[method-assign]
    return app


def _package_version() -> str:
    try:
        return version("reconciler")
    except PackageNotFoundError:
        return "0+unknown"


async def _store_unavailable(_request: Request, exc: Exception) -> Response:
    return ReplyResponse(store_unavailable(exc))


def _openapi(app: FastAPI, bodies: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document plus the bodies the routes read themselves: intake's
    (pydantic's JSON mode decodes base64 attachments; FastAPI's path does not) and
    ``bodies`` (the events ack)."""
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
    schemas.update(bodies)
    app.openapi_schema = document
    return document


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon handles SIGTERM/SIGINT and sets should_exit itself.
        yield


def server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    """uvicorn serving ``app`` in the caller's event loop, leaving signals to it."""
    return _Server(uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="on",
                                  # One log line per request cost ~5% of the CPU per
                                  # message; the API logs refusals and failures itself.
                                  access_log=False))
