"""The Outbox screen: counts by state, the deferred and held messages with their last
error (a page at a time), one message with its audit, and the operator's retry /
hold / release / cancel, through the same rules as ``reconcile outbox`` and
``/v1/outbox`` (``runtime.queue_control``), audited with the signed-in name.

A principal limited to some namespaces sees all of them together (the store
filters by that namespace set) or picks one; pages are keyset (``after`` the
last id shown), so a deep page costs what the first does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from reconciler.console.deps import ConsoleDeps
from reconciler.console.errors import NotFound
from reconciler.console.render import page
from reconciler.console.session import csrf_checked, form, needs
from reconciler.runtime.access import Principal, Role
from reconciler.runtime.queue_control import Action, QueueError, perform, refusal
from reconciler.state.base import OutboxMessage, OutboxState
from reconciler.state.outbox_control import QueueFilter

PAGE_SIZE = 50
LISTED = {"deferred": (OutboxState.RETRY_WAIT,), "held": (OutboxState.HELD,),
          "queued": (OutboxState.QUEUED,)}
ACTIONS = {a.value: a for a in (Action.RETRY, Action.HOLD, Action.RELEASE, Action.CANCEL)}
_WAKES = frozenset({Action.RETRY, Action.RELEASE})
ROW_ID_MAX = 2**63 - 1


@dataclass(frozen=True)
class View:
    """What the outbox page shows: the filter, counts and one page of messages."""

    namespace: str | None  # None: every namespace the principal sees
    namespaces: list[str]
    show: str
    after: int | None  # the page starts after this id; None: the first page
    counts: dict[OutboxState, int]
    messages: list[OutboxMessage]
    next_after: int | None  # where the next page starts; None: this is the last


def visible_namespaces(deps: ConsoleDeps, principal: Principal) -> list[str]:
    known = set(deps.config.current.namespaces) | set(principal.namespaces or ())
    return principal.visible(sorted(known))


def scope(principal: Principal, given: str | None) -> tuple[str | None, QueueFilter]:
    """The namespace shown (None: all the principal sees) and the queue filter for it."""
    if given and principal.sees(given):
        return given, QueueFilter(namespaces=(given,))
    mine = None if principal.namespaces is None else tuple(sorted(principal.namespaces))
    return None, QueueFilter(namespaces=mine)


def _number(text: str | None, default: int = 0) -> int:
    return int(text) if text and text.isdigit() and int(text) <= ROW_ID_MAX else default


def read_view(deps: ConsoleDeps, principal: Principal, params: dict[str, str]) -> View:
    namespace, where = scope(principal, params.get("namespace"))
    show = params.get("show") if params.get("show") in LISTED else "deferred"
    after = _number(params.get("after")) or None
    outbox = deps.store.outbox
    counts = outbox.count(where)
    found = outbox.page(QueueFilter(states=LISTED[show], namespaces=where.namespaces),
                        after=after, limit=PAGE_SIZE + 1)
    shown = found[:PAGE_SIZE]
    return View(namespace, visible_namespaces(deps, principal), show, after, counts, shown,
                shown[-1].id if len(found) > PAGE_SIZE else None)


def visible_message(deps: ConsoleDeps, principal: Principal, id_text: str) -> OutboxMessage:
    message = deps.store.outbox.get(_number(id_text)) if _number(id_text) else None
    if message is None or not principal.sees(message.namespace):
        raise NotFound(f"outbox message {id_text}")
    return message


def act(deps: ConsoleDeps, principal: Principal, message: OutboxMessage, action: Action,
        reason: str) -> tuple[bool, str]:
    """Run the action on one message: (changed, what to tell the operator)."""
    where = QueueFilter(ids=(message.id,), namespace=message.namespace)
    try:
        result = perform(deps.store, action, where, actor=principal.name, reason=reason)
    except QueueError as exc:
        return False, str(exc)
    if result.changed:
        return True, f"message {message.id}: {action.value} done (by {principal.name})"
    state = result.refused[0][1] if result.refused else None
    return False, refusal(action, message.id, state)


# Module level: FastAPI resolves the (string) annotations in the module's namespace.
Viewer = Annotated[Principal, Depends(needs(Role.VIEWER))]
Operator = Annotated[Principal, Depends(needs(Role.OPERATOR))]


def router(deps: ConsoleDeps) -> APIRouter:
    api = APIRouter()

    async def listing(request: Request, principal: Principal, params: dict[str, str], *,
                      notice: str = "", status_code: int = 200) -> HTMLResponse:
        view = await anyio.to_thread.run_sync(read_view, deps, principal, params)
        return page(request, "outbox.html", principal, view=view, notice=notice,
                    states=list(OutboxState), actions=list(ACTIONS),
                    page_size=PAGE_SIZE, status_code=status_code,
                    can_act=principal.has(Role.OPERATOR))

    @api.get("/outbox")
    async def outbox(request: Request, principal: Viewer) -> HTMLResponse:
        return await listing(request, principal, dict(request.query_params))

    @api.get("/outbox/{id}")
    async def message(request: Request, principal: Viewer, id: str) -> HTMLResponse:
        def read() -> tuple[OutboxMessage, list[Any]]:
            found = visible_message(deps, principal, id)
            return found, deps.store.audit.search(outbox_id=found.id, limit=100)

        found, audit = await anyio.to_thread.run_sync(read)
        return page(request, "outbox_message.html", principal, message=found, audit=audit,
                    actions=list(ACTIONS), can_act=principal.has(Role.OPERATOR))

    @api.post("/outbox/{id}/{action}", dependencies=[Depends(csrf_checked)])
    async def action(request: Request, principal: Operator, id: str,
                     action: str) -> HTMLResponse:
        chosen = ACTIONS.get(action)
        if chosen is None:
            raise NotFound(f"outbox action {action!r}")
        fields = await form(request)

        def run() -> tuple[bool, str]:
            return act(deps, principal, visible_message(deps, principal, id), chosen,
                       fields.get("reason", ""))

        changed, notice = await anyio.to_thread.run_sync(run)
        wake: Callable[[], None] | None = getattr(deps.app_state, "wake_worker", None)
        if changed and chosen in _WAKES and wake is not None:
            wake()
        params = {k: fields[k] for k in ("namespace", "show", "after") if k in fields}
        return await listing(request, principal, params, notice=notice,
                             status_code=200 if changed else 409)

    return api
