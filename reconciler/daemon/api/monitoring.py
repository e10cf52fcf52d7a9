"""``/metrics`` and ``/healthz``: open, like most exporters and liveness probes.

They show counts, never message content or recipients; bind the daemon to a
private interface or put it behind a proxy when that matters.
"""

from __future__ import annotations

import logging

import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from reconciler.daemon.api.schemas import Health
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.state.base import Store, StoreError

log = logging.getLogger("reconciler.daemon.api")


def router(store: Store, metrics: DaemonMetrics, config: ConfigHolder) -> APIRouter:
    api = APIRouter(tags=["operations"])

    @api.get("/metrics", summary="Prometheus metrics (no token)", response_class=Response,
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

    @api.get("/healthz", response_model=Health, summary="Liveness (no token)")
    async def healthz() -> Health:
        return Health(status="ok")

    return api
