"""Tables of the state store (SQLAlchemy Core), shared by SQLite and PostgreSQL.

This module is what the code reads and writes; ``migrations/`` is how a
database gets there. A test compares the two, so a column added here without
a migration fails CI.

JSON is stored as canonical text (not JSON/JSONB) so the bytes hashed by the
history chain are exactly the bytes stored, on both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, whatever the database does with zones.

    SQLite keeps no zone (and would silently drop one), PostgreSQL returns the
    session's zone; the history hash includes the ISO timestamp, so both must
    read back exactly what was written.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = MetaData(naming_convention=NAMING)

REVISION_KINDS = ("apply", "out-of-band", "auth")

meta = Table(
    "meta",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("lineage", String(36), nullable=False),
    Column("head", Integer, nullable=False),
    Column("head_hash", String(64), nullable=True),  # NULL while head is 0
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
)

resources = Table(
    "resources",
    metadata,
    Column("kind", String, nullable=False),
    Column("namespace", String, nullable=False),
    Column("name", String, nullable=False),
    Column("api_version", String, nullable=False),
    Column("labels", Text, nullable=False),
    Column("spec", Text, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("revision", Integer, nullable=False),  # revision that last wrote it
    PrimaryKeyConstraint("kind", "namespace", "name"),
    CheckConstraint("kind <> '' AND namespace <> '' AND name <> ''", name="identity"),
)

revisions = Table(
    "revisions",
    metadata,
    Column("number", Integer, primary_key=True, autoincrement=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("actor", String, nullable=False),
    Column("message", Text, nullable=False),
    Column("git_commit", String, nullable=True),
    Column("git_branch", String, nullable=True),
    Column("pull_request", String, nullable=True),
    Column("desired_digest", String(64), nullable=True),
    Column("plan_digest", String(64), nullable=True),
    Column("changes", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    CheckConstraint("number > 0", name="positive"),
    CheckConstraint("kind IN ('apply', 'out-of-band', 'auth')", name="kind"),
    Index(None, "created_at"),
    Index(None, "actor"),
    Index(None, "kind", "number"),
)

resource_versions = Table(
    "resource_versions",
    metadata,
    Column("kind", String, nullable=False),
    Column("namespace", String, nullable=False),
    Column("name", String, nullable=False),
    Column("revision", Integer, ForeignKey("revisions.number"), nullable=False),
    Column("body", Text, nullable=True),  # NULL: deleted in this revision
    Column("digest", String(64), nullable=True),
    # The primary key doubles as the index for "latest version at or before N".
    PrimaryKeyConstraint("kind", "namespace", "name", "revision"),
    CheckConstraint("kind <> '' AND namespace <> '' AND name <> ''", name="identity"),
    CheckConstraint("(body IS NULL) = (digest IS NULL)", name="body_digest"),
    Index(None, "revision"),
    Index(None, "namespace", "revision"),
)

status = Table(
    "status",
    metadata,
    Column("kind", String, nullable=False),
    Column("namespace", String, nullable=False),
    Column("name", String, nullable=False),
    Column("status", Text, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("kind", "namespace", "name"),
)

locks = Table(
    "locks",
    metadata,
    # A constant key makes "someone holds the lock" a primary-key conflict, which
    # every database enforces across processes without extra machinery.
    Column("slot", Integer, primary_key=True, autoincrement=False),
    Column("id", String(36), nullable=False, unique=True),
    Column("holder", String, nullable=False),
    Column("operation", String, nullable=False),
    Column("acquired_at", UtcDateTime, nullable=False),
    Column("plan_digest", String(64), nullable=True),
    CheckConstraint("slot = 1", name="single_row"),
)
