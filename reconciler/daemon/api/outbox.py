"""``/v1/outbox``: queue control for operators (O13), what ``reconcile outbox`` does.

Listing and showing need the viewer role, actions the operator role; a token limited
to namespaces sees and acts on its namespaces' messages only (another's is a 404).
Actions are audited with the token that asked (its name, or reference, printable).
Retry, release and requeue wake this daemon's workers, so the mail goes now
rather than at the next poll. Hold and cancel never touch a message being
sent right now: the answer says so (409 when nothing else was done) and the
caller tries again once the attempt has ended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from reconciler.daemon.api.guard import Caller, Guard, scope_of
from reconciler.daemon.api.params import ROW_ID_MAX, SearchText, UtcTime, json_body
from reconciler.daemon.api.queue_models import (
    ActionRequest,
    ActionResult,
    QueueItem,
    QueueListing,
    QueueMessage,
)
from reconciler.daemon.api.schemas import ERRORS, Problem
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.queue_control import (
    Action,
    QueueError,
    perform,
    requeue_target,
    selection,
)
from reconciler.state.base import OutboxState, Store
from reconciler.state.outbox_control import QueueFilter

TAG = {"name": "outbox", "description": "Queue control for operators (O13): list, show, "
       "retry, hold, release, cancel, requeue."}
# Request bodies the routes read themselves, for the OpenAPI document (factory._openapi).
BODIES = {"ActionRequest": ActionRequest.model_json_schema()}
_WAKES = frozenset({Action.RETRY, Action.RELEASE, Action.REQUEUE})


def router(store: Store, guard: Guard, config: ConfigHolder,
           app_state: Any) -> APIRouter:
    api = APIRouter(tags=["outbox"])

    @api.get("/v1/outbox", dependencies=[Depends(guard.viewer)], response_model=QueueListing,
             responses=ERRORS,
             summary="Messages in the outbox, oldest first, with counts by state")
    async def listing(
        principal: Caller,
        state: Annotated[list[OutboxState] | None, Query(
            description="Only these states; default every unfinished one.")] = None,
        server: Annotated[SearchText | None, Query()] = None,
        namespace: Annotated[SearchText | None, Query()] = None,
        older_than: Annotated[UtcTime | None, Query(
            alias="acceptedBefore", description="Accepted at or before this time.")] = None,
        recipient: Annotated[SearchText | None, Query(description="to/cc/bcc address, "
                                                      "any case.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=ROW_ID_MAX)] = 0,
    ) -> QueueListing:
        where = QueueFilter(states=tuple(state or (s for s in OutboxState if not s.terminal)),
                            server=server, namespace=namespace,
                            namespaces=scope_of(principal), created_before=older_than,
                            recipient=recipient)

        def read() -> QueueListing:
            found = store.outbox.search(where, limit=limit, offset=offset)
            return QueueListing(messages=[QueueItem.of(m) for m in found],
                                counts=store.outbox.count(where))

        return await anyio.to_thread.run_sync(read)

    @api.get("/v1/outbox/{id}", dependencies=[Depends(guard.viewer)],
             response_model=QueueMessage, summary="One message in full: "
             "routing decision, attempts and operator actions",
             responses={**ERRORS, 404: {"model": Problem, "description": "No such id."}})
    async def show(id: Annotated[int, Path(ge=1, le=ROW_ID_MAX)],
                   principal: Caller) -> QueueMessage:
        def read() -> QueueMessage | None:
            message = store.outbox.get(id)
            # Another namespace's message is as absent as one never accepted.
            if message is None or not principal.sees(message.namespace):
                return None
            return QueueMessage.with_audit(message, store.audit.search(outbox_id=id,
                                                                       limit=None))

        view = await anyio.to_thread.run_sync(read)
        if view is None:
            raise HTTPException(404, f"there is no outbox message {id} (never accepted, or "
                                "purged after it was finished)")
        return view

    @api.post("/v1/outbox/actions/{action}", dependencies=[Depends(guard.operator)],
              response_model=ActionResult,
              summary="Hold, release, retry, cancel or requeue messages",
              responses={**ERRORS, 404: {"model": Problem, "description": "The named "
                         "namespace is not one this token may act on."},
                         409: {"model": Problem, "description": "Nothing was "
                         "changed: each named message is in a state the action does not "
                         "apply to (being sent right now, already sent, ...); or the "
                         "request cannot be carried out as asked (no messages named, a "
                         "cancel without a reason, a requeue target missing or disabled)."}},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/ActionRequest"}}}}})
    async def act(
        action: Action, request: Request,
        principal: Caller,
    ) -> ActionResult:
        # Read here, after the token check, like the events ack (see there).
        body = json_body(ActionRequest, await request.body())
        if body.namespace is not None and not principal.sees(body.namespace):
            # As for a namespace that does not exist: nothing to act on, nothing told.
            raise HTTPException(404, f"there is no namespace {body.namespace!r} this token "
                                "may act on")
        actor = principal.name

        def run() -> ActionResult:
            where = replace(selection(action, body.ids, server=body.server,
                                      namespace=body.namespace,
                                      all_deferred=body.all_deferred, all_held=body.all_held),
                            namespaces=scope_of(principal))
            to = (requeue_target(store, config.current, where, body.to_server)
                  if action is Action.REQUEUE and body.to_server else None)
            result = perform(store, action, where, actor=actor, reason=body.reason, to=to)
            return ActionResult.of(action, actor, result)

        try:
            result = await anyio.to_thread.run_sync(run)
        except QueueError as exc:
            raise HTTPException(409, str(exc)) from None
        wake: Callable[[], None] | None = getattr(app_state, "wake_worker", None)
        if result.changed and action in _WAKES and wake is not None:
            wake()
        if result.refused and not result.changed:
            raise HTTPException(409, "; ".join(r.detail for r in result.refused))
        return result

    return api

