"""``store.leases``: one leader per role among daemons sharing a store (SPEC X4).

PostgreSQL: a session-level advisory lock held on a dedicated connection. The
lock lives exactly as long as that connection, so a daemon that crashes or
loses its network gives it up without any lease to expire; the next daemon to
ask gets it. The lock key is derived from the role and the store's lineage, so
stores in different schemas of one database do not block each other.

SQLite: one daemon per store file, so it always leads.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging

from sqlalchemy import Connection, Engine, create_engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from reconciler.state.contract import Leadership
from reconciler.state.location import PG_CONNECT_TIMEOUT_S, Location

log = logging.getLogger(__name__)


def lock_key(role: str, lineage: str) -> int:
    """The signed 64-bit advisory lock key of ``role`` in this store."""
    digest = hashlib.sha256(f"reconcile {role} {lineage}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AlwaysLeader:
    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        return None


class PgAdvisoryLeader:
    def __init__(self, loc: Location, role: str, key: int) -> None:
        # NullPool: the one connection we hold is the lock; nothing to share or recycle.
        self._engine: Engine = create_engine(
            loc.url, poolclass=NullPool,
            connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S,
                          "application_name": f"reconcile-{role.replace(' ', '-')}"})
        self._role = role
        self._key = key
        self._conn: Connection | None = None

    def acquire(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                return True
            except SQLAlchemyError as exc:
                # The session is gone, and the lock with it: someone else may lead now.
                log.warning("lost the %s lock (%s)", self._role, type(exc).__name__)
                self._drop()
        try:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            log.warning("cannot reach the store to take the %s lock (%s)", self._role,
                        type(exc).__name__)
            return False
        try:
            got = bool(conn.execute(select(func.pg_try_advisory_lock(self._key))).scalar())
        except SQLAlchemyError as exc:
            log.warning("cannot take the %s lock (%s)", self._role, type(exc).__name__)
            conn.close()
            return False
        if not got:
            conn.close()
            return False
        log.info("this daemon now holds the %s lock", self._role)
        self._conn = conn
        return True

    def release(self) -> None:
        if self._conn is not None:
            # closing the session below releases the lock even if this fails
            with contextlib.suppress(SQLAlchemyError):
                self._conn.execute(select(func.pg_advisory_unlock(self._key)))
            self._drop()
        self._engine.dispose()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except SQLAlchemyError:
                conn.invalidate()


class SqlLeases:
    def __init__(self, loc: Location, lineage: str) -> None:
        self._loc = loc
        self._lineage = lineage

    def leader(self, role: str) -> Leadership:
        if self._loc.sqlite_path is not None:
            return AlwaysLeader()
        return PgAdvisoryLeader(self._loc, role, lock_key(role, self._lineage))
