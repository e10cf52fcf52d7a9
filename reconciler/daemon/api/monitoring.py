"""``/metrics`` and ``/healthz``.

``/healthz`` is always open (liveness probes carry no token). ``/metrics`` shows
counts, never message content or recipients, but its labels name every
namespace and server: by default it needs a viewer token of every namespace
whenever any token is configured (``metrics.requireToken`` in the access file
turns that on or off; Prometheus sends the token with ``authorization:``).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from reconciler.daemon.api.guard import Guard
from reconciler.daemon.api.schemas import ERRORS, Health
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.state.base import Store, StoreError

log = logging.getLogger("reconciler.daemon.api")


def router(store: Store, metrics: DaemonMetrics, config: ConfigHolder,
           guard: Guard | None) -> APIRouter:
    """``guard``: the token check of /metrics, None to leave it open."""
    api = APIRouter(tags=["operations"])
    answers: dict[int | str, dict[str, Any]] = {
        200: {"content": {CONTENT_TYPE_LATEST: {}},
              "description": "Prometheus text exposition format."}}
    if guard is not None:
        answers.update({401: ERRORS[401], 403: ERRORS[403]})

    @api.get("/metrics", response_class=Response, responses=answers,
             summary="Prometheus metrics" + (" (no token)" if guard is None else ""),
             dependencies=[] if guard is None else [Depends(guard.viewer_everywhere)])
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

    @api.get("/healthz", response_model=Health, summary="Liveness (no token)")
    async def healthz() -> Health:
        return Health(status="ok")

    return api
