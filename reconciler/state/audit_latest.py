"""The newest SENT audit line per outgoing server, for many servers in one query
(the console's Servers screen, SPEC X6).

Asking ``audit.search(status=SENT, server=..., limit=1)`` once per server costs a
round trip each: with hundreds of servers the page spends its time there. Here
each wanted (namespace, server) is one ``MAX(created_at)`` probe of the
``(namespace, server, status, created_at)`` index (migration 0011), all of them
in one statement: one round trip, and no walk over the audit rows however many
there are.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, String, bindparam, func, literal, select, union_all

from reconciler.state import schema as t
from reconciler.state.base import AuditStatus
from reconciler.state.location import StoreArea

# SQLite refuses a compound SELECT of more than 500 parts by default.
CHUNK = 250
# Statements are built for chunk sizes rounded up to this (the last pair repeats):
# building a statement of a hundred probes costs more than running it, so a few
# sizes are built once and reused with new parameters.
STEP = 25

ServerName = tuple[str, str]  # (namespace, server)


class LatestSends(StoreArea):
    """Part of ``store.audit`` (SqlAudit inherits it)."""

    def last_sent(self, servers: Collection[ServerName]) -> dict[ServerName, datetime]:
        """When each of ``servers`` last sent a message (its newest SENT audit line);
        a server that never sent is left out."""
        wanted = sorted(set(servers))
        out: dict[ServerName, datetime] = {}
        with self._read() as conn:
            for start in range(0, len(wanted), CHUNK):
                chunk = wanted[start:start + CHUNK]
                size = -(-len(chunk) // STEP) * STEP
                padded = chunk + chunk[-1:] * (size - len(chunk))
                params = {f"{side}{i}": name for i, pair in enumerate(padded)
                          for side, name in zip("ns", pair, strict=True)}
                for position, newest in conn.execute(_probes(size), params):
                    if newest is not None and position < len(chunk):
                        out[chunk[position]] = newest
        return out


@lru_cache(maxsize=CHUNK // STEP)
def _probes(size: int) -> Select[Any]:
    c = t.audit.c
    # The wanted servers as a derived table of constant rows, and one correlated MAX
    # over them: PostgreSQL plans that subquery once (a UNION of a hundred MAX
    # queries took it 80 ms to plan), and the MAX standing alone in its SELECT is
    # answered from the end of the index on both databases.
    wanted = union_all(*(
        select(literal(i).label("position"), bindparam(f"n{i}", type_=String).label("ns"),
               bindparam(f"s{i}", type_=String).label("srv"))
        for i in range(size))).subquery("wanted")
    newest = (select(func.max(c.created_at))
              .where(c.namespace == wanted.c.ns, c.server == wanted.c.srv,
                     c.status == AuditStatus.SENT.value)
              .scalar_subquery())
    return select(wanted.c.position, newest.label("newest"))
