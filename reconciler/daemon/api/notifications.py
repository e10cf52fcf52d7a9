"""``/v1/notifications``: submit a notification (O1) and follow what became of it.

``POST`` is answered in front of FastAPI by :mod:`.intake_route`; the route here
documents it in ``/openapi.json`` and answers when the fast path steps aside,
running the same code.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import Response

from reconciler.daemon.api.guard import Caller, Guard
from reconciler.daemon.api.intake_route import IntakeRoute, ReplyResponse
from reconciler.daemon.api.params import ROW_ID_MAX
from reconciler.daemon.api.schemas import (
    ERRORS,
    Accepted,
    NotificationStatus,
    Problem,
    ValidationProblem,
)
from reconciler.state.base import Store
from reconciler.state.delivery_events import EVENT_TYPES, delivery_event


def router(store: Store, route: IntakeRoute, guard: Guard) -> APIRouter:
    api = APIRouter(tags=["notifications"])

    @api.post(
        "/v1/notifications", dependencies=[Depends(guard.sender)], status_code=202,
        response_model=Accepted,
        summary="Submit a notification",
        responses={**ERRORS,
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
    async def submit(request: Request,
                     principal: Caller) -> Response:
        # Reached when the fast path steps aside (see intake_route); the same code.
        return ReplyResponse(await route.accept(request.scope, await request.body(),
                                                principal))

    @api.get("/v1/notifications/{id}", dependencies=[Depends(guard.viewer)],
             response_model=NotificationStatus,
             summary="What became of a notification",
             responses={**ERRORS, 404: {"model": Problem, "description": "No such id."}})
    async def notification_status(
        id: Annotated[int, Path(ge=1, le=ROW_ID_MAX,
                                description="The id intake answered with.")],
        principal: Caller,
    ) -> NotificationStatus:
        message = await anyio.to_thread.run_sync(store.outbox.get, id)
        # Another namespace's notification is as absent as one never accepted.
        if message is None or not principal.sees(message.namespace):
            raise HTTPException(404, f"there is no notification {id} (never accepted, or "
                                "purged after it was finished)")
        entries = await anyio.to_thread.run_sync(lambda: store.audit.search(
            outbox_id=id, status=list(EVENT_TYPES), limit=None))
        return NotificationStatus.from_message(message, [
            delivery_event(e, message.updated_at)
            for e in sorted(entries, key=lambda e: e.id or 0)])

    return api
