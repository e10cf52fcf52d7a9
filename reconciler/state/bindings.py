"""The credential_bindings table (SPEC S2): read by plan and the daemon, written by
apply revisions inside their own commit transaction (see ``SqlStore.commit``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, delete, insert, select, tuple_

from reconciler.config.endpoints import KINDS, Pair, pairs_of
from reconciler.state import schema as t
from reconciler.state.revisions import Change

cb = t.credential_bindings


def read_pairs(conn: Connection) -> frozenset[Pair]:
    """Every bound (credential, endpoint), whichever resource bound it."""
    return frozenset((c, e) for c, e in conn.execute(select(cb.c.credential, cb.c.endpoint)))


def rebind(conn: Connection, changes: Iterable[Change], revision: int) -> None:
    """Bind each changed resource to exactly what its new version presents.

    Called only for apply revisions, after apply refused every move that was not
    approved; an out-of-band revision leaves the bindings as they were.
    """
    touched = [c for c in changes if c.key.kind in KINDS]
    if not touched:
        return
    keys = [tuple(c.key) for c in touched]
    for i in range(0, len(keys), 500):
        conn.execute(delete(cb).where(
            tuple_(cb.c.kind, cb.c.namespace, cb.c.name).in_(keys[i:i + 500])))
    rows: list[dict[str, Any]] = []
    for change in touched:
        if change.after is None:
            continue
        for credential, endpoint in sorted(pairs_of(change.key.kind, change.after.spec)):
            rows.append({"kind": change.key.kind, "namespace": change.key.namespace,
                         "name": change.key.name, "credential": credential,
                         "endpoint": endpoint, "revision": revision})
    if rows:
        conn.execute(insert(cb), rows)
