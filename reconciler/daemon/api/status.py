"""``GET /v1/status``: this daemon's view of config, outbox, intake, resource
statuses and incoming fetching.

A token limited to namespaces sees those namespaces only: their outbox counts,
resource statuses, incoming servers and ticket events.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Query

from reconciler.daemon.api.guard import Caller, Guard, scope_of
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
from reconciler.state.base import OutboxState, Store
from reconciler.state.contract import Incoming
from reconciler.state.outbox_control import QueueFilter


def router(store: Store, settings: DaemonSettings, config: ConfigHolder,
           intake: GroupCommitter, incoming: Incoming,
           app_version: str, guard: Guard) -> APIRouter:
    api = APIRouter(tags=["operations"])

    @api.get("/v1/status", dependencies=[Depends(guard.viewer)], response_model=DaemonStatus,
             summary="This daemon's status",
             responses=ERRORS)
    async def daemon_status(
        principal: Caller,
        finished: Annotated[bool, Query(
            description="Also count sent/failed/ignored messages (reads the whole "
            "outbox).")] = False,
    ) -> DaemonStatus:
        live = config.current
        seen = scope_of(principal)

        def read() -> DaemonStatus:
            return DaemonStatus(
                version=app_version,
                worker_id=settings.worker_id,
                config_revision=live.revision,
                namespaces=principal.visible(sorted(live.namespaces)),
                outbox=_depth(store, finished, seen),
                statuses=[ResourceStatus.from_store(key, value)
                          for key, value in sorted(store.statuses().items())
                          if principal.sees(key.namespace)],
                # the whole daemon's submissions: not for a namespace-limited token
                intake=IntakeCounters(**vars(intake.stats)) if seen is None else None,
                incoming=[IncomingServerStatus.from_state(s)
                          for s in incoming.server_states() if principal.sees(s.namespace)],
                ticket_events=incoming.event_counts(seen),
            )

        return await anyio.to_thread.run_sync(read)

    return api


def _depth(store: Store, finished: bool, seen: tuple[str, ...] | None) -> dict[OutboxState, int]:
    """The outbox's counts per state, of the namespaces ``seen`` (None: all)."""
    if seen is None:
        return store.outbox.depth(finished=finished)
    states = tuple(s for s in OutboxState if finished or not s.terminal)
    counts = store.outbox.count(QueueFilter(states=states, namespaces=seen))
    return {s: counts[s] for s in states}
