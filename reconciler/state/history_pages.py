"""Revision summaries for a paged history list (the console's View History, SPEC X6).

``Store.revisions`` loads every change with its before/after bodies; a list of
fifty revisions needs none of that, only who, when, why and which resources,
so this reads the revision rows alone and walks them by number (keyset), an
index range scan however long the history is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import Connection, select

from reconciler.state import chain, codec
from reconciler.state import schema as t
from reconciler.state.revisions import RevisionSummary


def summaries(conn: Connection, *, before: int | None, limit: int,
              namespaces: Sequence[str] | None) -> list[RevisionSummary]:
    r, rv = t.revisions, t.resource_versions
    q = select(r).order_by(r.c.number.desc()).limit(limit)
    if before is not None:
        q = q.where(r.c.number < before)
    if namespaces is not None:
        # the (namespace, revision) index answers this without reading any body
        q = q.where(r.c.number.in_(
            select(rv.c.revision).where(rv.c.namespace.in_(list(namespaces)))))
    out = []
    for row in conn.execute(q):
        keys = tuple(chain.record_key(c) for c in json.loads(row.changes))
        if namespaces is not None:
            keys = tuple(k for k in keys if k.namespace in namespaces)
        out.append(RevisionSummary(row.number, row.created_at, codec.meta_from_row(row), keys))
    return out
