"""The console's first page: what needs attention, and where each screen is."""

from __future__ import annotations

from collections import Counter

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from reconciler.console.deps import ConsoleDeps
from reconciler.console.outbox import scope
from reconciler.console.render import page
from reconciler.console.servers import Viewer, cards
from reconciler.state.base import OutboxState


def router(deps: ConsoleDeps) -> APIRouter:
    api = APIRouter()

    @api.get("/")
    async def home(request: Request, principal: Viewer) -> HTMLResponse:
        def read() -> tuple[Counter[str], dict[OutboxState, int], str | None]:
            _all, where = scope(principal, None)
            states = Counter(card.state for card in cards(deps.store, principal, activity=False))
            return states, deps.store.outbox.count(where), \
                ", ".join(where.namespaces) if where.namespaces is not None else None

        states, counts, namespace = await anyio.to_thread.run_sync(read)
        return page(request, "home.html", principal, server_states=sorted(states.items()),
                    counts=counts, namespace=namespace)

    return api
