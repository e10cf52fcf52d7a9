"""``/v1/events``: the desk pulls ticket events from the store (SPEC I8).

Pull with a cursor: ``GET /v1/events?after=<last id seen>&limit=N`` answers
events oldest first and ``next``, the cursor for the following call. The
desk stores its cursor where it stores the tickets, so a crash of either
side loses nothing and a repeated call is harmless (ids are stable; an event
is the same JSON every time). ``POST /v1/events/ack {"through": ID}`` tells
the daemon everything up to ID is safe with the desk: those events count as
delivered (``reconcile incoming status``) and become eligible for retention.
``GET /v1/events`` without ``after`` starts after the last acknowledged
event, so a desk without a cursor of its own can rely on acks alone.

Attachment bytes are not in the event; ``GET /v1/events/{id}/attachments/{sha256}``
serves each kept file.

Reading needs the viewer role, the ack the operator role (it changes what the daemon
keeps: acknowledged events become eligible for retention). A token limited to
namespaces sees, counts and acknowledges its namespaces' events only.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from reconciler.daemon.api.guard import Caller, Guard, scope_of
from reconciler.daemon.api.params import ROW_ID_MAX, JsonInt, SearchText, json_body
from reconciler.daemon.api.schemas import ERRORS, ApiModel, Problem
from reconciler.state.contract import Incoming, StoredEvent

TAG = {"name": "events", "description": "Ticket events from incoming mail (I8)."}


class EventItem(ApiModel):
    """One ticket event as stored."""

    id: int = Field(description="Increasing; the cursor for `after`.")
    namespace: str
    server: str = Field(description="The IncomingServer that fetched the mail (for a "
                        "delivery event: the OutgoingServer that sent it).")
    kind: str = Field(description="create, reply or command; delivery: what became of a "
                      "recipient of a notification (with --events-webhook, O14).")
    created_at: str
    state: str = Field(description="pending, delivered (webhook took it or it was "
                       "acknowledged) or rejected (the webhook refused it for good).")
    attempts: int
    delivered_at: str | None
    last_error: str | None
    event: dict[str, Any] = Field(
        description="The ticket event (schemas/events/ticket-event.json) or delivery "
        "event (schemas/events/delivery-event.json).")

    @classmethod
    def of(cls, stored: StoredEvent) -> EventItem:
        return cls.model_validate(stored.to_json())


class EventPage(ApiModel):
    events: list[EventItem]
    next: int = Field(description="Pass as `after` to continue.")
    more: bool = Field(description="True when `limit` cut the page short.")


class Ack(BaseModel):
    model_config = ConfigDict(extra="forbid")

    through: JsonInt = Field(ge=0, le=ROW_ID_MAX, description="Every event with an id up to "
                         "this one is safe with the desk.")
    namespace: SearchText | None = Field(default=None,
                                         description="Only this namespace's events.")


class Acked(ApiModel):
    acknowledged: int = Field(description="Pending events now marked delivered.")


def router(events: Incoming, guard: Guard) -> APIRouter:
    api = APIRouter(tags=["events"])

    @api.get("/v1/events", dependencies=[Depends(guard.viewer)], response_model=EventPage,
             response_model_by_alias=True,
             summary="Ticket events, oldest first", responses=ERRORS)
    async def list_events(
        principal: Caller,
        after: Annotated[int | None, Query(ge=0, le=ROW_ID_MAX, description=(
            "Events with a greater id. Default: after the last acknowledged event."))] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        namespace: Annotated[SearchText | None, Query()] = None,
        state: Annotated[str | None, Query(pattern="^(pending|delivered|rejected)$")] = None,
    ) -> EventPage:
        seen = scope_of(principal)

        def read() -> EventPage:
            start = after if after is not None else _acked_through(events, namespace, seen)
            found = events.events(after=start, limit=limit + 1, namespace=namespace,
                                  state=state, namespaces=seen)
            page = found[:limit]
            return EventPage(events=[EventItem.of(e) for e in page],
                             next=page[-1].id if page else start, more=len(found) > limit)

        return await anyio.to_thread.run_sync(read)

    @api.post("/v1/events/ack", dependencies=[Depends(guard.operator)], response_model=Acked,
              response_model_by_alias=True,
              summary="Acknowledge events up to an id",
              responses={**ERRORS, 413: {"model": Problem,
                                         "description": "Body over the size limit."}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": {"$ref": "#/components/schemas/Ack"}}}}})
    async def acknowledge(request: Request,
                          principal: Caller) -> Acked:
        # The body is read here, after the token check: as a parameter FastAPI would
        # parse it first, so a caller without a token learnt about their JSON (a 400
        # for bytes that are not UTF-8) instead of getting the 401.
        body = _ack(await request.body())
        count = await anyio.to_thread.run_sync(
            lambda: events.acknowledge(body.through, namespace=body.namespace,
                                       namespaces=scope_of(principal)))
        return Acked(acknowledged=count)

    @api.get("/v1/events/{id}/attachments/{sha256}", dependencies=[Depends(guard.viewer)],
             response_class=Response,
             summary="The bytes of one attachment an event lists",
             responses={**ERRORS,
                        404: {"model": Problem, "description": "No such event or attachment."},
                        200: {"content": {"application/octet-stream": {}}}})
    async def attachment(
        id: Annotated[int, Path(ge=1, le=ROW_ID_MAX)],
        sha256: Annotated[str, Path(pattern="^[0-9a-f]{64}$")],
        principal: Caller,
    ) -> Response:
        def read() -> bytes | None:
            if principal.namespaces is not None:
                event = events.event(id)
                if event is None or not principal.sees(event.namespace):
                    return None  # another namespace's event is as absent as none
            return events.attachment(id, sha256)

        data = await anyio.to_thread.run_sync(read)
        if data is None:
            raise HTTPException(404, f"event {id} has no attachment {sha256}")
        return Response(data, media_type="application/octet-stream")

    return api


def _ack(body: bytes) -> Ack:
    """The body as an :class:`Ack`; 422 naming the fields (or ``json_invalid``) as
    intake answers for its body."""
    return json_body(Ack, body)


def _acked_through(events: Incoming, namespace: str | None,
                   seen: tuple[str, ...] | None) -> int:
    """The id before the first event not yet delivered (what `after` defaults to)."""
    first_open = events.events(after=0, limit=1, namespace=namespace, state="pending",
                               namespaces=seen)
    if first_open:
        return first_open[0].id - 1
    return events.last_event_id(namespace, seen)
