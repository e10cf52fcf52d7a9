"""Statements handed to the driver (state.driver): stored exactly as SQLAlchemy Core
stores them, errors raised as Core raises them, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from peers.postgres import RawSql
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    text,
)

from reconciler.state import SqlStore
from reconciler.state.base import AuditEntry, AuditStatus, StoreError
from reconciler.state.driver import DriverStatement
from reconciler.state.location import create_store_engine, parse_location, translated
from reconciler.state.schema import UtcDateTime

WHEN = datetime(2024, 6, 1, 12, 1, tzinfo=UTC)  # no microseconds: the case a naive adapter drops

probe = Table(
    "driver_probe", MetaData(),
    Column("id", Integer, primary_key=True),
    Column("name", String(40), nullable=False, unique=True),
    Column("at", UtcDateTime()),
    Column("plain_at", DateTime()),
)


@pytest.fixture
def engine(store_url: str):  # type: ignore[no-untyped-def]
    engine = create_store_engine(parse_location(store_url))
    probe.create(engine)
    try:
        yield engine
    finally:
        probe.drop(engine)
        engine.dispose()


def test_values_are_stored_as_core_stores_them(engine) -> None:  # type: ignore[no-untyped-def]
    statement = DriverStatement(insert(probe).returning(probe.c.id), engine.dialect,
                                ("name", "at", "plain_at"))
    naive = WHEN.replace(tzinfo=None)
    with engine.begin() as conn:
        by_driver = statement.execute(conn, {"name": "driver", "at": WHEN, "plain_at": naive})
        conn.execute(insert(probe), {"name": "core", "at": WHEN, "plain_at": naive})
        stored = {name: (at, plain) for name, at, plain in conn.execute(
            text("SELECT name, CAST(at AS TEXT), CAST(plain_at AS TEXT) FROM driver_probe"))}
        # Comparisons in SQL see the same value: a range query finds both rows.
        found = conn.execute(select(probe.c.name).where(
            probe.c.at >= WHEN, probe.c.at <= WHEN + timedelta(seconds=1))).scalars().all()
        read = conn.execute(select(probe.c.at).where(probe.c.name == "driver")).scalar_one()
    assert by_driver is not None and by_driver[0] >= 1
    assert stored["driver"] == stored["core"]
    assert sorted(found) == ["core", "driver"]
    assert read == WHEN


def test_many_rows_in_one_call(engine) -> None:  # type: ignore[no-untyped-def]
    statement = DriverStatement(insert(probe), engine.dialect, ("name", "at", "plain_at"))
    with engine.begin() as conn:
        statement.execute_many(conn, ({"name": f"n{i}", "at": WHEN, "plain_at": None}
                                      for i in range(5)))
        statement.execute_many(conn, [])  # nothing to do, no statement sent
        assert conn.execute(text("SELECT count(*) FROM driver_probe")).scalar_one() == 5


def test_a_driver_error_is_a_store_error_and_rolls_back(
    engine, store_url: str  # type: ignore[no-untyped-def]
) -> None:
    statement = DriverStatement(insert(probe), engine.dialect, ("name", "at", "plain_at"))
    row = {"name": "twice", "at": WHEN, "plain_at": None}
    with (pytest.raises(StoreError) as caught, translated(parse_location(store_url)),
          engine.begin() as conn):
        statement.execute(conn, {**row, "name": "kept only if committed"})
        statement.execute(conn, row)
        statement.execute(conn, row)  # unique name: the driver refuses
    assert "unique" in str(caught.value).lower() or "duplicate" in str(caught.value).lower()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM driver_probe")).scalar_one() == 0


def test_parameters_that_do_not_match_the_statement_are_refused(engine) -> None:  # type: ignore[no-untyped-def]
    statement = DriverStatement(insert(probe), engine.dialect, ("name", "at", "plain_at"))
    with pytest.raises(ValueError, match="extra"):
        statement.parameters({"name": "x", "at": None, "plain_at": None, "extra": 1})
    with pytest.raises(ValueError, match="needs parameters not given: when"):
        DriverStatement(insert(probe).values(name=bindparam("name"), at=bindparam("when")),
                        engine.dialect, ("name",))


def test_audit_rows_written_by_the_driver_read_back_whole(store: SqlStore,
                                                          raw_sql: RawSql) -> None:
    entry = AuditEntry(AuditStatus.SENT, "250 2.0.0 Ok: queued as 1A2B", namespace="acme",
                       server="main", host="mx.example:25", attempt=2,
                       recipient="Jane@Example.com", message_id="<m@desk.example>",
                       outbox_id=7, module="request",
                       details={"configRevision": 3, "serverReply": "250 Ok"},
                       created_at=WHEN)
    store.audit.record([entry])
    [found] = store.audit.search(recipient="jane@example.com", since=WHEN, until=WHEN)
    assert (found.status, found.reason, found.namespace, found.server, found.host,
            found.attempt, found.recipient, found.message_id, found.outbox_id, found.module,
            found.details, found.created_at) == (
        AuditStatus.SENT, entry.reason, "acme", "main", "mx.example:25", 2,
        "Jane@Example.com", "<m@desk.example>", 7, "request",
        {"configRevision": 3, "serverReply": "250 Ok"}, WHEN)
    assert raw_sql("SELECT recipient_key FROM audit")[0][0] == "jane@example.com"
