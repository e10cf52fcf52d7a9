"""Incoming screen (SPEC X6, I6, I7): each mailbox's fetch state and its error folder,
with "Retry" for operators: the error folder's mails go back to the fetched folder,
unread, through the same code as `reconcile incoming retry`."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from reconciler.console.deps import ConsoleDeps
from reconciler.console.errors import NotFound
from reconciler.console.filters import scope
from reconciler.console.guards import Operator, Viewer
from reconciler.console.render import page
from reconciler.console.session import csrf_checked
from reconciler.incoming import retry as error_folder
from reconciler.runtime.access import Principal, Role
from reconciler.state.contract import ServerState, StoredError


def _states(deps: ConsoleDeps, principal: Principal) -> list[tuple[ServerState,
                                                                   list[StoredError]]]:
    states = [s for s in deps.store.incoming.server_states() if principal.sees(s.namespace)]
    waiting: dict[tuple[str, str], list[StoredError]] = {}
    for e in deps.store.incoming.waiting_errors(scope(principal)):
        waiting.setdefault((e.namespace, e.server), []).append(e)
    return [(s, waiting.get((s.namespace, s.name), [])) for s in states]


def router(deps: ConsoleDeps) -> APIRouter:
    routes = APIRouter()

    def show(request: Request, principal: Principal, *, message: str | None = None,
             failed: bool = False) -> HTMLResponse:
        return page(request, "incoming/list.html", principal,
                    status_code=409 if failed else 200, servers=_states(deps, principal),
                    message=message, failed=failed, can_retry=principal.has(Role.OPERATOR))

    @routes.get("/incoming", response_class=HTMLResponse)
    def incoming_page(request: Request, principal: Viewer) -> HTMLResponse:
        return show(request, principal)

    @routes.post("/incoming/{namespace}/{server}/retry", response_class=HTMLResponse,
                 dependencies=[Depends(csrf_checked)])
    async def retry(namespace: str, server: str, request: Request,
                    principal: Operator) -> HTMLResponse:
        if not principal.sees(namespace):
            raise NotFound(f"incoming server {namespace}/{server}")
        try:
            job = await asyncio.to_thread(
                error_folder.prepare, deps.store, namespace, server,
                ca_file=deps.settings.ca_file, token_key_ref=deps.settings.token_key_ref)
        except error_folder.RetryRefused as exc:
            raise NotFound(str(exc)) from None
        try:
            message = await error_folder.move_back(job)
        except error_folder.RetryRefused as exc:
            return await asyncio.to_thread(show, request, principal, message=str(exc),
                                           failed=True)
        return await asyncio.to_thread(show, request, principal, message=message)

    return routes
