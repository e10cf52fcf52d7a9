"""Schema migrations run on open; errors a user can cause read as one actionable paragraph."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from peers.postgres import RawSql
from sqlalchemy import create_engine

from reconciler.state import (
    SchemaTooNew,
    SqlStore,
    StoreError,
    StoreUnavailable,
    open_store,
)
from reconciler.state.migrate import MIGRATIONS_DIR, SCHEMA_HEAD, alembic_config
from reconciler.state.schema import metadata

from .kit import create, meta, res


def _sa_url(store_url: str) -> str:
    if "://" not in store_url:
        return f"sqlite:///{store_url}"
    return store_url.replace("postgresql://", "postgresql+psycopg://", 1)


def _plain(message: str) -> None:
    """A user-facing store error: no traceback, no SQLAlchemy boilerplate."""
    assert "Traceback" not in message and "sqlalche.me" not in message
    assert "\n" not in message


def test_fresh_database_is_migrated_to_head(store: SqlStore, raw_sql: RawSql) -> None:
    # the newest migration script is the head; the database records exactly it
    scripts = sorted(p.name.split("_", 1)[0] for p in MIGRATIONS_DIR.glob("versions/0*.py"))
    script_head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert store.schema_revision == script_head == scripts[-1] == SCHEMA_HEAD
    assert [tuple(r) for r in raw_sql("SELECT version_num FROM alembic_version")] == [
        (scripts[-1],)]
    assert raw_sql("SELECT head, head_hash FROM meta") == [(0, None)]


def test_opening_again_is_a_no_op(store_url: str, raw_sql: RawSql) -> None:
    with open_store(store_url) as s:
        lineage = s.lineage
        s.commit([create(res("a"))], meta(), base_revision=0)
    snapshot = raw_sql("SELECT * FROM meta")
    with open_store(store_url) as s:
        assert s.lineage == lineage and s.head() == 1
    assert raw_sql("SELECT * FROM meta") == snapshot
    assert len(raw_sql("SELECT * FROM alembic_version")) == 1


def test_migrations_produce_exactly_the_schema_the_code_uses(store: SqlStore,
                                                             store_url: str) -> None:
    engine = create_engine(_sa_url(store_url))
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert diff == [], "state/schema.py and state/migrations/ disagree; add a migration"


def test_migration_scripts_ship_inside_the_package() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert not (Path(__file__).parents[2] / "alembic.ini").exists()


def test_database_from_a_newer_version_is_refused(store: SqlStore, store_url: str,
                                                  raw_sql: RawSql) -> None:
    store.close()
    raw_sql("UPDATE alembic_version SET version_num = '0099_future'")
    with pytest.raises(SchemaTooNew) as err:
        open_store(store_url)
    message = str(err.value)
    _plain(message)
    assert "0099_future" in message and "Upgrade reconcile" in message
    assert raw_sql("SELECT version_num FROM alembic_version") == [("0099_future",)]


def test_unwritable_sqlite_location(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreUnavailable) as err:
        open_store(blocker / "state.db")
    _plain(str(err.value))
    assert "writable" in str(err.value)

    with pytest.raises(StoreUnavailable) as err:
        open_store(tmp_path)  # a folder, not a database file
    _plain(str(err.value))
    assert str(tmp_path) in str(err.value)


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "state.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreUnavailable, match="not a usable SQLite store") as err:
        open_store(junk)
    _plain(str(err.value))


def test_unreachable_postgresql() -> None:
    # Port 1 on loopback: refused at once, no network needed.
    with pytest.raises(StoreUnavailable) as err:
        open_store("postgresql://postgres:hunter2@127.0.0.1:1/test")
    message = str(err.value)
    _plain(message)
    assert "cannot connect to the PostgreSQL store" in message
    assert "hunter2" not in message and "server is running" in message


@pytest.mark.parametrize("location", ["mysql://h/db", "sqlite://", "sqlite:///:memory:", " "])
def test_unsupported_locations(location: str) -> None:
    with pytest.raises(StoreError) as err:
        open_store(location)
    _plain(str(err.value))
