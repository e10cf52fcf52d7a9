"""Email audit screen (SPEC X6, O8): search the audit, page through it, export CSV.

Every query runs in SQL with the principal's namespaces as a filter, walking
the audit by id (``Audit.page``): a page costs the same on row 50 as on row
90,000. The CSV export streams the same filter in batches, so its memory does
not grow with the audit.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from reconciler.console.deps import ConsoleDeps
from reconciler.console.filters import PAGE, BadFilter, cursor, moment, scope, text
from reconciler.console.guards import Viewer
from reconciler.console.render import page
from reconciler.runtime.access import Principal
from reconciler.state.base import AuditDirection, AuditEntry, AuditStatus

CSV_BATCH = 1000
CSV_COLUMNS = ("id", "created_at", "direction", "status", "namespace", "server", "host",
               "attempt", "recipient", "message_id", "outbox_id", "module", "reason")
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class AuditQuery:
    """The form's fields as given (to refill it) and as the store takes them."""

    form: dict[str, str]
    filters: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def of(cls, params: Any) -> AuditQuery:
        form = {k: params.get(k, "") for k in
                ("status", "recipient", "server", "namespace", "direction", "since", "until")}
        query = cls(form)
        try:
            query.filters = _filters(form)
        except BadFilter as exc:
            query.error = str(exc)
        return query


def _filters(form: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {k: text(form[k]) for k in ("recipient", "server", "namespace")}
    status, direction = text(form["status"]), text(form["direction"])
    if status is not None and status not in AuditStatus.__members__.values():
        raise BadFilter(f"status: {status!r} is not an audit status; pick one of the list")
    if direction is not None and direction not in AuditDirection.__members__.values():
        raise BadFilter(f"direction: {direction!r} is neither outgoing nor incoming")
    out.update(status=status, direction=direction, since=moment("from", form["since"]),
               until=moment("to", form["until"]))
    return {k: v for k, v in out.items() if v is not None}


def csv_cell(value: Any) -> str:
    """A value as a CSV cell a spreadsheet shows and never evaluates."""
    cell = "" if value is None else str(value)
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def csv_rows(deps: ConsoleDeps, query: AuditQuery, principal: Principal) -> Iterator[str]:
    out = io.StringIO()
    writer = csv.writer(out)

    def flushed() -> str:
        chunk = out.getvalue()
        out.seek(0)
        out.truncate()
        return chunk

    writer.writerow(CSV_COLUMNS)
    yield flushed()
    before = None
    while batch := deps.store.audit.page(before=before, limit=CSV_BATCH,
                                         namespaces=scope(principal), **query.filters):
        for entry in batch:
            writer.writerow([csv_cell(_column(entry, c)) for c in CSV_COLUMNS])
        yield flushed()
        before = batch[-1].id


def _column(entry: AuditEntry, column: str) -> Any:
    if column == "created_at":
        return entry.created_at.isoformat() if entry.created_at else None
    if column == "direction":
        return entry.direction.value
    value = getattr(entry, column)
    return value.value if isinstance(value, AuditStatus) else value


def router(deps: ConsoleDeps) -> APIRouter:
    routes = APIRouter()

    @routes.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request,
                   principal: Viewer) -> HTMLResponse:
        query = AuditQuery.of(request.query_params)
        rows: list[AuditEntry] = []
        if query.error is None:
            rows = deps.store.audit.page(before=cursor(request.query_params.get("before")),
                                         limit=PAGE + 1, namespaces=scope(principal),
                                         **query.filters)
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        return page(request, "audit/list.html", principal,
                    status_code=400 if query.error else 200, query=query, rows=rows,
                    next_before=rows[-1].id if more else None,
                    statuses=[s.value for s in AuditStatus],
                    form_query=_encoded(query.form))

    @routes.get("/audit.csv")
    def audit_csv(request: Request,
                  principal: Viewer) -> Any:
        query = AuditQuery.of(request.query_params)
        if query.error is not None:
            return page(request, "audit/list.html", principal, status_code=400, query=query,
                        rows=[], next_before=None, statuses=[s.value for s in AuditStatus],
                        form_query=_encoded(query.form))
        return StreamingResponse(
            csv_rows(deps, query, principal), media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="email-audit.csv"'})

    return routes


def _encoded(form: dict[str, str]) -> str:
    return urlencode({k: v for k, v in form.items() if v})
