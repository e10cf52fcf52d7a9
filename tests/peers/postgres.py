"""PostgreSQL for tests, and the store fixtures that run each test on SQLite and PostgreSQL.

The local server (127.0.0.1:5432, trust auth) is started if it is not up;
if it still cannot be reached the tests FAIL rather than skip, because a
store test that silently ran on SQLite only would prove half of what it says.
Each test gets its own schema in a database made for the session; both are
dropped afterwards.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import create_engine, text

from reconciler.state import SqlStore, open_store

HOST = "127.0.0.1"
PORT = 5432
USERS = ("postgres", "root")
ADMIN_DBS = ("test", "postgres")
START_WAIT_S = 30.0


@dataclass(frozen=True)
class PostgresServer:
    user: str
    admin_db: str

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=HOST, port=PORT, user=self.user, dbname=self.admin_db, autocommit=True,
            connect_timeout=5,
        )

    def url(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{HOST}:{PORT}/{dbname}"


def _reachable() -> PostgresServer | None:
    for user in USERS:
        for dbname in ADMIN_DBS:
            server = PostgresServer(user, dbname)
            try:
                server.connect().close()
            except psycopg.OperationalError:
                continue
            return server
    return None


def _start_cluster() -> str:
    try:
        versions = sorted(os.listdir("/etc/postgresql"))
    except OSError as exc:
        return f"no /etc/postgresql ({exc.strerror})"
    if not versions:
        return "no cluster under /etc/postgresql"
    proc = subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
        capture_output=True, text=True, check=False,
    )
    return (proc.stdout + proc.stderr).strip()


def ensure_postgres() -> PostgresServer:
    server = _reachable()
    if server is not None:
        return server
    output = _start_cluster()
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        server = _reachable()
        if server is not None:
            return server
        time.sleep(0.5)
    pytest.fail(
        f"PostgreSQL at {HOST}:{PORT} is not accepting connections as {' or '.join(USERS)} "
        f"even after `pg_ctlcluster ... main start` ({output or 'no output'}). "
        "Store tests need it; start PostgreSQL and re-run.",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    return ensure_postgres()


@pytest.fixture(scope="session")
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A database of our own for this test session, dropped at the end."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with postgres_server.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with postgres_server.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, postgres_database: str) -> Iterator[str]:
    """A URL whose every table lives in a fresh schema of its own, for this test only.

    A schema per test isolates exactly like a database per test (the URL's
    search_path puts every object the store creates, alembic's version table
    included, in that schema), but costs milliseconds instead of a database
    copy with fsyncs, which on a busy machine took over a second per test.
    """
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = PostgresServer(postgres_server.user, postgres_database)
    with admin.connect() as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield admin.url(postgres_database) + f"?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(schema)))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A location for a new store; every test using it runs on both databases.

    The SQLite file's folder exists, as a user's would: apply creates a store
    only in an existing folder.
    """
    if request.param == "sqlite":
        folder = tmp_path / "state"
        folder.mkdir(exist_ok=True)
        return str(folder / "state.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    s = open_store(store_url)
    try:
        yield s
    finally:
        s.close()


RawSql = Callable[..., list[Any]]


@pytest.fixture
def raw_sql(store_url: str) -> Iterator[RawSql]:
    """Run SQL against the store's database directly, the way a tamperer would."""
    if "://" not in store_url:
        url = f"sqlite:///{store_url}"
    else:
        url = store_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)

    def run(statement: str, **params: Any) -> list[Any]:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []

    try:
        yield run
    finally:
        engine.dispose()
