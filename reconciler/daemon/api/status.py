"""``GET /v1/status``: this daemon's view of config, outbox, intake, resource
statuses and incoming fetching."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query

from reconciler.daemon.api.schemas import (
    ERRORS,
    DaemonStatus,
    IncomingServerStatus,
    IntakeCounters,
    ResourceStatus,
)
from reconciler.daemon.intake import GroupCommitter
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.settings import DaemonSettings
from reconciler.state.base import Store
from reconciler.state.contract import Incoming


def router(store: Store, settings: DaemonSettings, config: ConfigHolder,
           intake: GroupCommitter, incoming: Incoming,
           app_version: str) -> APIRouter:
    api = APIRouter(tags=["operations"])

    @api.get("/v1/status", response_model=DaemonStatus, summary="This daemon's status",
             responses=ERRORS)
    async def daemon_status(
        finished: Annotated[bool, Query(
            description="Also count sent/failed/ignored messages (reads the whole "
            "outbox).")] = False,
    ) -> DaemonStatus:
        live = config.current

        def read() -> DaemonStatus:
            return DaemonStatus(
                version=app_version,
                worker_id=settings.worker_id,
                config_revision=live.revision,
                namespaces=sorted(live.namespaces),
                outbox=store.outbox.depth(finished=finished),
                statuses=[ResourceStatus.from_store(key, value)
                          for key, value in sorted(store.statuses().items())],
                intake=IntakeCounters(**vars(intake.stats)),
                incoming=[IncomingServerStatus.from_state(s)
                          for s in incoming.server_states()],
                ticket_events=incoming.event_counts(),
            )

        return await anyio.to_thread.run_sync(read)

    return api
