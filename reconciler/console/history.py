"""View History screen (SPEC X6, P4): revisions, one revision's redacted diff side by
side, the config as of a revision as YAML, and the hash-chain verification.

A namespace-scoped principal sees only revisions that touched its namespaces,
and of those only its own resources; a revision with none of them is "not
found", as if it did not exist. The chain check reads every revision, so its
result is kept per head (and for a minute, ``console.cache``) rather than
recomputed per page.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from reconciler.console.cache import PerHead
from reconciler.console.deps import ConsoleDeps
from reconciler.console.errors import NotFound
from reconciler.console.filters import PAGE, cursor, scope
from reconciler.console.guards import Auditor
from reconciler.console.links import commit_url, pull_url, repo_base
from reconciler.console.render import page
from reconciler.history import queries
from reconciler.plan.render import SIGN, shown_fields, title, value
from reconciler.runtime.access import Principal
from reconciler.state import Change, Revision
from reconciler.state.base import UnknownRevision

CHAIN_TTL_S = 60.0


def side_by_side(change: Change) -> list[tuple[str, str, str]]:
    """(field, old, new) per changed field, values as the plan shows them (redacted)."""
    return [(f.path, value(f.before), value(f.after))
            for f in shown_fields(change, show_derived=True)]


def router(deps: ConsoleDeps) -> APIRouter:
    routes = APIRouter()
    chain = PerHead(lambda store: store.verify(), CHAIN_TTL_S)
    base = repo_base(deps.settings.sync_repo)

    @routes.get("/history", response_class=HTMLResponse)
    def history_list(request: Request,
                     principal: Auditor) -> HTMLResponse:
        rows = deps.store.revision_summaries(before=cursor(request.query_params.get("before")),
                                             limit=PAGE + 1, namespaces=scope(principal))
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        check, checked_at = chain.get(deps.store)
        return page(request, "history/list.html", principal, rows=rows,
                    next_before=rows[-1].number if more else None,
                    chain=check, checked_at=checked_at, scoped=principal.namespaces is not None,
                    commit_url=lambda sha: commit_url(base, sha),
                    pull_url=lambda n: pull_url(base, n))

    def visible_revision(number: int, principal: Principal) -> tuple[Revision, list[Change]]:
        try:
            rev = deps.store.revision(number)
        except UnknownRevision:
            raise NotFound(f"revision {number}") from None
        changes = [c for c in rev.changes if principal.sees(c.key.namespace)]
        if principal.namespaces is not None and not changes:
            raise NotFound(f"revision {number}")
        return rev, changes

    @routes.get("/history/{number}", response_class=HTMLResponse)
    def revision_page(number: int, request: Request,
                      principal: Auditor) -> HTMLResponse:
        rev, changes = visible_revision(number, principal)
        return page(request, "history/revision.html", principal, rev=rev, changes=changes,
                    sign=SIGN, title=title, side_by_side=side_by_side,
                    commit_url=lambda sha: commit_url(base, sha),
                    pull_url=lambda n: pull_url(base, n))

    @routes.get("/history/{number}/config.yaml")
    def config_yaml(number: int,
                    principal: Auditor) -> Response:
        visible_revision(number, principal)
        # The store keeps secret references only (as git does): nothing to strip here.
        documents = [d for d in queries.as_of_documents(deps.store, number)
                     if principal.sees(d["metadata"]["namespace"])]
        body = (f"# live config as of revision {number}: {len(documents)} resources\n"
                + queries.yaml_stream(documents))
        return Response(body, media_type="application/yaml", headers={
            "Content-Disposition": f'attachment; filename="config-r{number}.yaml"'})

    return routes

