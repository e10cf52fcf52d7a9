"""Who leads health checks when several daemons share one store (SPEC X4).

PostgreSQL: a session-level advisory lock held on a dedicated connection. The
lock lives exactly as long as that connection, so a daemon that crashes or
loses its network gives it up without any lease to expire; the next daemon
to ask gets it. The lock key is derived from the store's lineage, so stores
in different schemas of one database do not block each other.

SQLite: one daemon per store file, so it always leads.

Calls block (database I/O): the monitor runs them in a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from typing import Protocol

from sqlalchemy import Connection, Engine, create_engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from reconciler.state.location import PG_CONNECT_TIMEOUT_S, parse_location

log = logging.getLogger(__name__)


class Leadership(Protocol):
    def acquire(self) -> bool:
        """True while this process leads; tries to become leader when it does not."""
        ...

    def release(self) -> None: ...


class AlwaysLeader:
    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        return None


def lock_key(lineage: str) -> int:
    """A signed 64-bit advisory lock key for this store's health leader."""
    digest = hashlib.sha256(f"reconcile health leader {lineage}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PgAdvisoryLeader:
    def __init__(self, url: str, key: int) -> None:
        location = parse_location(url)
        # NullPool: the one connection we hold is the lock; nothing to share or recycle.
        self._engine: Engine = create_engine(
            location.url, poolclass=NullPool,
            connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S,
                          "application_name": "reconcile-health-leader"})
        self._key = key
        self._conn: Connection | None = None

    @property
    def leading(self) -> bool:
        return self._conn is not None

    def acquire(self) -> bool:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                return True
            except SQLAlchemyError as exc:
                # The session is gone, and the lock with it: someone else may lead now.
                log.warning("lost the health-check leader lock (%s)", type(exc).__name__)
                self._drop()
        try:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            log.warning("cannot reach the store to lead health checks (%s)", type(exc).__name__)
            return False
        try:
            got = bool(conn.execute(select(func.pg_try_advisory_lock(self._key))).scalar())
        except SQLAlchemyError as exc:
            log.warning("cannot take the health-check leader lock (%s)", type(exc).__name__)
            conn.close()
            return False
        if not got:
            conn.close()
            return False
        log.info("this daemon now leads health checks")
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


def leadership_for(store_url: str, lineage: str) -> Leadership:
    if parse_location(store_url).sqlite_path is not None:
        return AlwaysLeader()
    return PgAdvisoryLeader(store_url, lock_key(lineage))
