"""Schema migrations, run when a store is opened (SPEC P6).

Alembic is driven from code with a ``Config`` built here, so no
``alembic.ini`` is needed and the scripts ship inside the package. The
migration runs on a connection we own, inside one transaction that holds the
database's write lock (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory
lock): of two processes opening a fresh store at once, the second waits and
then finds the schema already current.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError

from reconciler.state.base import SchemaTooNew
from reconciler.state.location import Location, writer_engine

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# The newest migration. Opening an up-to-date store compares against this and
# never loads Alembic (a fifth of a second per command); a test checks that it
# is the head of the scripts in migrations/versions.
SCHEMA_HEAD = "0011"
# Arbitrary constant shared by every reconcile process: "someone is migrating".
PG_MIGRATE_LOCK = 0x7265636F6E6D6967  # "reconmig"


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _recorded_revision(engine: Engine) -> str | None:
    """The schema revision the database says it has, read without Alembic."""
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError:  # no table yet: a new store
            return None


def migrate(engine: Engine, loc: Location) -> str:
    """Bring the database to the newest schema; return the schema revision."""
    if _recorded_revision(engine) == SCHEMA_HEAD:
        return SCHEMA_HEAD
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = alembic_config()
    script = ScriptDirectory.from_config(cfg)
    head = script.get_current_head()
    assert head is not None, "the migrations folder has no revisions"
    with writer_engine(engine).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(PG_MIGRATE_LOCK)))
        current = MigrationContext.configure(conn).get_current_revision()
        if current == head:
            return head
        if current is not None:
            _check_known(script, current, head, loc)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return head


def _check_known(script: ScriptDirectory, current: str, head: str, loc: Location) -> None:
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    try:
        known = script.get_revision(current) is not None
    except (RevisionError, CommandError):
        known = False
    if not known:
        raise SchemaTooNew(
            f"the store {loc.display} was written by a newer version of reconcile "
            f"(schema revision {current}; this version knows up to {head}). Upgrade reconcile "
            "to open it; this version will not touch it, so nothing was changed."
        )
