"""Turning a store location into a configured SQLAlchemy engine, and DB errors
into messages a user can act on.

SQLite needs care to be a correct multi-process store: the stdlib driver's
own transaction handling is switched off and we emit ``BEGIN`` ourselves
(the documented pysqlite workaround), so reads get a real snapshot and
writers take the write lock up front with ``BEGIN IMMEDIATE`` instead of
failing later on lock upgrade. WAL lets readers (the daemon) continue while
an apply writes.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError

from reconciler.state.base import StoreError, StoreMissing, StoreUnavailable

BUSY_TIMEOUT_S = 30.0
_LOCK_POLL_S = (0.0001, 0.0005)  # first and longest pause between write-lock tries
PG_CONNECT_TIMEOUT_S = 10
_BEGIN_OPTION = "reconciler_sqlite_begin"
# Named in "no store" messages: the two ways a user points reconcile at a store.
STORE_SETTINGS = "--store / RECONCILE_STORE"
# Alembic's bookkeeping table: present in every store reconcile has initialised.
_VERSION_TABLE = "alembic_version"


@dataclass(frozen=True, slots=True)
class Location:
    url: URL
    display: str  # printable: no password
    sqlite_path: Path | None


def parse_location(location: str) -> Location:
    """``sqlite:///path``, a plain path (SQLite) or ``postgresql://...``."""
    text = os.fspath(location).strip()
    if not text:
        raise StoreError("the store location is empty; give a file path or a postgresql:// URL")
    if "://" not in text:
        return _sqlite(Path(text).expanduser())
    try:
        url = make_url(text)
    except ArgumentError:
        raise StoreError(
            f"{text!r} is not a store location: use a file path, sqlite:///path/state.db "
            "or postgresql://user@host:5432/dbname"
        ) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise StoreError(
                "an in-memory SQLite store would vanish when the command ends; "
                "give a file path such as .reconcile/state.db"
            )
        return _sqlite(Path(url.database).expanduser())
    if backend in ("postgresql", "postgres"):
        display = url.render_as_string(hide_password=True)  # as the user wrote it
        return Location(url.set(drivername="postgresql+psycopg"), display, None)
    raise StoreError(
        f"unsupported store URL scheme {url.drivername!r}: use a file path (SQLite) "
        "or postgresql://user@host:5432/dbname"
    )


def _sqlite(path: Path) -> Location:
    url = URL.create("sqlite", database=str(path))
    return Location(url, str(path), path)


def require_existing(loc: Location) -> None:
    """Refuse a SQLite path with no file, before connecting would create one.

    A mistyped ``--store`` must not become a new, empty store that then plans
    every resource as created; only ``apply`` creates stores.
    """
    path = loc.sqlite_path
    if path is not None and not path.exists():
        raise StoreMissing(
            f"no state store at {loc.display}: nothing has been applied there yet "
            f"(`reconcile apply` creates it). Check {STORE_SETTINGS} for a typo."
        )
    if path is not None and path.is_file() and path.stat().st_size == 0:
        # connecting would write a WAL header into it before the table check refuses
        raise _uninitialised(loc)


def _uninitialised(loc: Location) -> StoreMissing:
    return StoreMissing(
        f"the store {loc.display} is not initialised: it has no reconcile tables "
        f"(`reconcile apply` initialises it). Check {STORE_SETTINGS} for a typo."
    )


def require_initialised(engine: Engine, loc: Location) -> None:
    """Refuse a database that exists but holds no store (e.g. a new, empty PostgreSQL
    database, or the wrong one), instead of creating the tables as a side effect."""
    with translated(loc), engine.connect() as conn:
        if inspect(conn).has_table(_VERSION_TABLE):
            return
    raise _uninitialised(loc)


def create_store_engine(loc: Location) -> Engine:
    if loc.sqlite_path is not None:
        return _sqlite_engine(loc)
    return create_engine(
        loc.url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S, "application_name": "reconcile"},
    )


def _sqlite_engine(loc: Location) -> Engine:
    path = loc.sqlite_path
    assert path is not None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailable(
            f"cannot create the folder {path.parent} for the SQLite store ({exc.strerror}). "
            "Choose a store path in a writable folder, or create the folder first."
        ) from None
    engine = create_engine(loc.url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, see module doc
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        if mode != "IMMEDIATE":
            conn.exec_driver_sql(f"BEGIN {mode}")
            return
        try:
            _take_write_lock(conn.connection.dbapi_connection)
        except sqlite3.Error as exc:
            raise DBAPIError.instance("BEGIN IMMEDIATE", None, exc, sqlite3.Error) from exc

    return engine


def _take_write_lock(dbapi_conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, waiting for another writer in short steps.

    SQLite's own busy handler sleeps 1, 2, 5, 10, ... up to 100 ms between
    tries. Writers here take turns every millisecond or so (the intake's and
    the results' group commits; an intake and a worker process under
    ``--workers``), so a waiter often slept many times longer than the lock
    was held: intake p99 in the tens of milliseconds. Polled every 0.1 ms,
    doubling to 0.5 ms (a try costs microseconds), for ``BUSY_TIMEOUT_S`` in
    all, the wait is about the time the lock is held. Only taking the lock
    polls: once held, nothing in a
    WAL write transaction waits for other connections, and reads keep the
    normal busy timeout (restored before returning).
    """
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=0")
        try:
            delay, deadline = _LOCK_POLL_S[0], time.monotonic() + BUSY_TIMEOUT_S
            while True:
                try:
                    cursor.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if not _busy(exc) or time.monotonic() >= deadline:
                        raise
                time.sleep(delay)
                delay = min(delay * 2, _LOCK_POLL_S[1])
        finally:
            cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    finally:
        cursor.close()


def _busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc).lower()


def writer_engine(engine: Engine) -> Engine:
    """The engine to use for write transactions (takes SQLite's write lock at BEGIN)."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
    return engine


def now_or(now: datetime | None) -> datetime:
    """``now`` as given (tests pass their clock), else the current UTC time."""
    return now if now is not None else datetime.now(UTC)


def first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


# SQLite failures by the words of the driver's message, and what to do about each.
_SQLITE_TROUBLE = (
    (("locked", "busy"),
     "the SQLite store {store} stayed locked by another process for more than "
     f"{BUSY_TIMEOUT_S:.0f} s ({{detail}}). Wait for the other reconcile or daemon write "
     "to finish and retry."),
    (("unable to open", "readonly", "read-only", "disk"),
     "cannot open the SQLite store {store} for writing ({detail}). Check that the file "
     "and its folder exist and are writable by this user, or choose another store path."),
    (("not a database", "malformed"),
     "{store} is not a usable SQLite store ({detail}). Point the store at another file, "
     "or restore this one from a backup."),
)


def explain(exc: SQLAlchemyError, loc: Location) -> StoreError:
    """One paragraph saying what went wrong and what to do about it."""
    detail = first_line(exc)
    if loc.sqlite_path is not None:
        low = detail.lower()
        for words, message in _SQLITE_TROUBLE:
            if any(word in low for word in words):
                return StoreUnavailable(message.format(store=loc.display, detail=detail))
        return StoreUnavailable(f"the SQLite store {loc.display} failed: {detail}.")
    if "does not exist" in detail and "database" in detail:
        # reconcile never creates databases: that needs rights it should not have
        return StoreMissing(
            f"no state store at {loc.display}: {detail}. Create the database (e.g. "
            f"`createdb`), then `reconcile apply` initialises it; or check {STORE_SETTINGS} "
            "for a typo."
        )
    # psycopg reports every failure to reach or log in to the server as an
    # OperationalError; query errors (a missing table, a bad value) are not.
    if isinstance(exc, OperationalError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return StoreUnavailable(
            f"cannot connect to the PostgreSQL store {loc.display} ({detail}). Check that "
            "the server is running and reachable, and that the URL's host, port, user and "
            "database are right; or use a SQLite file path as the store."
        )
    return StoreUnavailable(f"the PostgreSQL store {loc.display} failed: {detail}.")


@contextmanager
def translated(loc: Location) -> Iterator[None]:
    """Raise database failures as :class:`StoreError` with a user-facing message."""
    try:
        yield
    except StoreError:
        raise
    except SQLAlchemyError as exc:
        raise explain(exc, loc) from None


class StoreArea:
    """One area of an open store (outbox, audit, incoming, tokens) on the store's own
    engines: they share its pool and SQLite's write lock rather than contending for it
    from a second pool."""

    # Queue delivery events (state.delivery_events) with outgoing audit rows: set by
    # the daemon through ``Store.delivery_events`` when an events webhook takes them.
    delivery_events = False

    def __init__(self, engine: Engine, writer: Engine, loc: Location) -> None:
        self._engine = engine
        self._writer = writer
        self._loc = loc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with translated(self._loc), self._engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction (SQLite: the write lock is taken at BEGIN)."""
        with translated(self._loc), self._writer.begin() as conn:
            yield conn


def upsert(dialect: str) -> Any:
    """The dialect's ``insert`` (both have ``on_conflict_do_*``)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert
