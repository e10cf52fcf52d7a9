"""The newest SENT audit line per outgoing server, for many servers in one query
(the console's Servers screen, SPEC X6).

Asking ``audit.search(status=SENT, server=..., limit=1)`` once per server costs a
round trip each: with hundreds of servers the page spends its time there. Here
each wanted (namespace, server) is one ``MAX(created_at)`` probe of the
``(namespace, server, status, created_at)`` index (migration 0011), all the
probes glued into one statement with ``UNION ALL``: one round trip, and no walk
over the audit rows however many there are.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import CompoundSelect, Select, func, literal, select, union_all

from reconciler.state import schema as t
from reconciler.state.base import AuditStatus
from reconciler.state.location import StoreArea

# SQLite refuses a compound SELECT of more than 500 parts by default.
CHUNK = 250

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
                for position, newest in conn.execute(_probes(chunk)):
                    if newest is not None:
                        out[chunk[position]] = newest
        return out


def _probes(chunk: list[ServerName]) -> Select[Any] | CompoundSelect:
    c = t.audit.c
    probes = [select(literal(i).label("position"), func.max(c.created_at).label("newest"))
              .where(c.namespace == namespace, c.server == server,
                     c.status == AuditStatus.SENT.value)
              for i, (namespace, server) in enumerate(chunk)]
    return probes[0] if len(probes) == 1 else union_all(*probes)
