"""Sync & drift screen (SPEC X6, X5, P5): where the continuous sync stands, its last
commits, and the resources changed outside git since git last wrote them.

"Sync now" does what `reconcile sync now` and the push webhook do: it records the
request in the store (every daemon's syncer sees it) and wakes this process's
syncer when it runs one. Suspending and resuming write a revision naming the
actor, which the CLI does; the screen shows those commands.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from reconciler.console.cache import PerHead
from reconciler.console.deps import ConsoleDeps
from reconciler.console.guards import Operator, Viewer
from reconciler.console.links import commit_url, repo_base
from reconciler.console.render import page
from reconciler.console.session import csrf_checked
from reconciler.runtime.access import Forbidden, Role
from reconciler.sync.drift import find_drift

DRIFT_TTL_S = 15.0  # a direct database edit (no new revision) shows up this late at most


def router(deps: ConsoleDeps) -> APIRouter:
    routes = APIRouter()
    base = repo_base(deps.settings.sync_repo)
    drift = PerHead(find_drift, DRIFT_TTL_S)

    @routes.get("/sync", response_class=HTMLResponse)
    def sync_page(request: Request, principal: Viewer) -> HTMLResponse:
        record = deps.store.sync.get()
        if principal.namespaces is not None:  # its reason may name any namespace's resource
            record = replace(record, reason="")
        report, checked_at = drift.get(deps.store)
        drifted = [i for i in report.items if principal.sees(i.change.key.namespace)]
        return page(request, "sync/status.html", principal, record=record, report=report,
                    drifted=drifted, checked_at=checked_at,
                    configured=deps.settings.sync_repo is not None,
                    can_sync=principal.namespaces is None and principal.has(Role.OPERATOR),
                    requested=request.query_params.get("requested") == "1",
                    commit_url=lambda sha: commit_url(base, sha))

    @routes.post("/sync/now", dependencies=[Depends(csrf_checked)])
    def sync_now(request: Request, principal: Operator) -> RedirectResponse:
        if principal.namespaces is not None:
            # a sync applies every namespace: not for a principal limited to some
            raise Forbidden(Role.ADMIN, principal)
        deps.store.sync.update(requested_at=datetime.now(UTC), override_window=False)
        if (wake := getattr(deps.app_state, "sync_wake", None)) is not None:
            wake()
        root = request.scope.get("root_path", "")
        return RedirectResponse(f"{root}/console/sync?requested=1", status_code=303)

    return routes
