"""``GET /v1/audit``: search the email audit (O8), newest first."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Query

from reconciler.daemon.api.guard import Caller, Guard, scope_of
from reconciler.daemon.api.params import ROW_ID_MAX, SearchText, UtcTime
from reconciler.daemon.api.schemas import ERRORS, AuditItem
from reconciler.state.base import AuditDirection, AuditStatus, Store

_TIME = "an ISO 8601 date-time (UTC without a zone) or date (its midnight, UTC)."


def router(store: Store, guard: Guard) -> APIRouter:
    api = APIRouter(tags=["audit"])

    @api.get("/v1/audit", dependencies=[Depends(guard.viewer)], response_model=list[AuditItem],
             summary="Search the email audit, newest first", responses=ERRORS)
    async def audit(
        principal: Caller,
        status: Annotated[list[AuditStatus] | None, Query(
            description="Only these statuses (repeat the parameter for several).")] = None,
        recipient: Annotated[SearchText | None, Query(
            description="Whole address, case-insensitive.")] = None,
        server: Annotated[SearchText | None, Query(description="Server name.")] = None,
        since: Annotated[UtcTime | None, Query(description=f"At or after: {_TIME}")] = None,
        until: Annotated[UtcTime | None, Query(description=f"At or before: {_TIME}")] = None,
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
                namespace=namespace, namespaces=scope_of(principal), outbox_id=outbox_id,
                message_id=message_id, limit=limit, offset=offset)
            return [AuditItem.from_entry(e) for e in found]

        return await anyio.to_thread.run_sync(search)

    return api
