"""Tables of the state store (SQLAlchemy Core), shared by SQLite and PostgreSQL.

This module is what the code reads and writes; ``migrations/`` is how a
database gets there. A test compares the two, so a column added here without
a migration fails CI.

JSON is stored as canonical text (not JSON/JSONB) so the bytes hashed by the
history chain are exactly the bytes stored, on both databases.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

from reconciler.state.base import AuditDirection, AuditStatus, OutboxState
from reconciler.state.contract import TICKET_EVENT_STATES
from reconciler.state.revisions import RevisionKind

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


def _in(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


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
    # Canonical JSON list of the credential moves the revision approved (S2), or NULL.
    Column("credential_moves", Text, nullable=True),
    Column("changes", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    CheckConstraint("number > 0", name="positive"),
    CheckConstraint(_in("kind", RevisionKind), name="kind"),
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

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY;
# PostgreSQL gets 64 bits because outbox and audit ids are never reused.
RowId = BigInteger().with_variant(Integer(), "sqlite")


outbox = Table(
    "outbox",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("namespace", String, nullable=False),
    # NULL keys never conflict (both databases), so keyless notifications are all kept.
    Column("idempotency_key", String(200), nullable=True),
    Column("module", String(64), nullable=True),
    Column("payload", Text, nullable=False),  # canonical JSON, attachment bytes left out
    Column("config_revision", Integer, nullable=True),  # routing snapshot (O12)
    Column("server", String, nullable=True),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("first_attempt_at", UtcDateTime, nullable=True),
    Column("lease_owner", String, nullable=True),
    Column("lease_expires_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("decision", Text, nullable=True),  # the routing decision's trace, JSON (O13)
    UniqueConstraint("namespace", "idempotency_key"),
    CheckConstraint(_in("state", OutboxState), name="state"),
    CheckConstraint(
        "(state = 'leased') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)",
        name="lease",
    ),
    CheckConstraint("(config_revision IS NULL) = (server IS NULL)", name="routing"),
    CheckConstraint("attempts >= 0", name="attempts"),
    # The claim query's two ways in: due messages, and leases that ran out.
    Index(None, "state", "next_attempt_at"),
    Index(None, "state", "lease_expires_at"),
    Index(None, "lease_owner"),
    # the console's outbox pages (migration 0011): one state, one namespace, by id
    Index(None, "state", "id"),
    Index(None, "namespace", "state", "id"),
)

outbox_attachments = Table(
    "outbox_attachments",
    metadata,
    # Raw bytes in their own table: base64 inside the payload JSON would cost a
    # third more space, and every claim would drag 20 MB files through memory.
    Column("message_id", RowId, ForeignKey("outbox.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("name", String, nullable=False),
    Column("content_type", String, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    PrimaryKeyConstraint("message_id", "position"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("direction", String(10), nullable=False),
    Column("status", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("namespace", String, nullable=False),
    Column("server", String, nullable=True),
    Column("host", String, nullable=True),
    Column("attempt", Integer, nullable=True),
    Column("recipient", String, nullable=True),
    # Lower-cased copy for case-insensitive search through a plain index
    # (an expression index would not survive the schema comparison test).
    Column("recipient_key", String, nullable=True),
    Column("message_id", String, nullable=True),
    Column("outbox_id", RowId, nullable=True),  # no foreign key: audit outlives purged mail
    Column("module", String(64), nullable=True),
    Column("details", Text, nullable=True),
    CheckConstraint(_in("direction", AuditDirection), name="direction"),
    CheckConstraint(_in("status", AuditStatus), name="status"),
    Index(None, "created_at"),
    Index(None, "status", "created_at"),
    Index(None, "recipient_key", "created_at"),
    Index(None, "server", "created_at"),
    Index(None, "namespace", "created_at"),
    Index(None, "outbox_id"),
    Index(None, "message_id"),
    # the console's keyset pages (migration 0010): one filter, newest id first
    Index(None, "namespace", "id"),
    Index(None, "status", "id"),
    Index(None, "recipient_key", "id"),
    Index(None, "server", "id"),
    Index(None, "direction", "id"),
    Index(None, "namespace", "status", "id"),
    # each server's last send, one probe per server (migration 0011, state.audit_latest)
    Index(None, "namespace", "server", "status", "created_at"),
)

oauth_tokens = Table(
    "oauth_tokens",
    metadata,
    # One row per server (OutgoingServer or IncomingServer) using OAuth2. The
    # tokens and the msal cache blob live only inside ``sealed`` (Fernet); the
    # clear columns are what `reconcile auth status` shows without the key.
    Column("kind", String, nullable=False),
    Column("namespace", String, nullable=False),
    Column("name", String, nullable=False),
    # Hash of provider, token URL, client id and tenant: a row written for another
    # app registration is never handed out for this one.
    Column("client_digest", String(64), nullable=False),
    Column("grant", String(32), nullable=False),
    Column("account", String, nullable=True),
    Column("sealed", Text, nullable=True),
    Column("access_expires_at", UtcDateTime, nullable=True),
    Column("refresh_present", Boolean, nullable=False),
    # Bumped on every write: the cross-process "someone refreshed meanwhile" signal.
    Column("generation", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("last_error_permanent", Boolean, nullable=False),
    Column("last_error_at", UtcDateTime, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("kind", "namespace", "name"),
    CheckConstraint("kind <> '' AND namespace <> '' AND name <> ''", name="identity"),
    CheckConstraint("generation >= 0", name="generation"),
)

# -- incoming mail (SPEC I1, I6, I7, I8) -----------------------------------------


incoming_markers = Table(
    "incoming_markers",
    metadata,
    # One row per fetched mail: written in the transaction that makes its event
    # and audit durable, so a restart never processes it twice.
    Column("namespace", String, nullable=False),
    Column("server", String, nullable=False),
    Column("marker", String, nullable=False),
    Column("event_id", RowId, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("namespace", "server", "marker"),
)

incoming_message_ids = Table(
    "incoming_message_ids",
    metadata,
    # Message-IDs (angle brackets stripped) of processed mail: duplicates, and
    # the ticket a later reply quoting them belongs to.
    Column("namespace", String, nullable=False),
    Column("message_id", String, nullable=False),
    Column("ticket_module", String(64), nullable=True),
    Column("ticket_number", String(32), nullable=True),
    Column("event_id", RowId, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("namespace", "message_id"),
)

ticket_events = Table(
    "ticket_events",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("namespace", String, nullable=False),
    Column("server", String, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("message_id", String, nullable=True),
    Column("payload", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("delivered_at", UtcDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    CheckConstraint(_in("state", TICKET_EVENT_STATES), name="state"),
    CheckConstraint("attempts >= 0", name="attempts"),
    Index(None, "state", "id"),
    Index(None, "namespace", "id"),
)

ticket_event_attachments = Table(
    "ticket_event_attachments",
    metadata,
    # Bytes of the files an event lists (by sha256), apart from the event JSON
    # for the same reason as outbox_attachments.
    Column("event_id", RowId, ForeignKey("ticket_events.id", ondelete="CASCADE"),
           nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    PrimaryKeyConstraint("event_id", "sha256"),
)

incoming_errors = Table(
    "incoming_errors",
    metadata,
    # A mail moved to the error folder. Headers and reason may name customers,
    # so they live only inside ``sealed`` (Fernet); the clear columns say where
    # and why in codes only.
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("namespace", String, nullable=False),
    Column("server", String, nullable=False),
    Column("marker", String, nullable=False),
    Column("code", String(64), nullable=False),
    Column("sealed", Text, nullable=True),  # NULL: no key was configured
    Column("created_at", UtcDateTime, nullable=False),
    Column("moved_back_at", UtcDateTime, nullable=True),
    Index(None, "namespace", "server", "created_at"),
)

incoming_servers = Table(
    "incoming_servers",
    metadata,
    # Fetch state per IncomingServer, apart from its spec (never drift), and the
    # lease that lets exactly one daemon fetch it when several share a store.
    Column("namespace", String, nullable=False),
    Column("name", String, nullable=False),
    Column("lease_owner", String, nullable=True),
    Column("lease_expires_at", UtcDateTime, nullable=True),
    Column("consecutive_failures", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("last_error_kind", String(16), nullable=True),
    Column("failure_notified", Boolean, nullable=False),
    Column("last_fetch_at", UtcDateTime, nullable=True),
    Column("last_success_at", UtcDateTime, nullable=True),
    Column("paused", String, nullable=True),  # why fetching stopped, or NULL
    Column("error_folder_count", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("namespace", "name"),
)

credential_bindings = Table(
    "credential_bindings",
    metadata,
    # Which credential each resource was applied to present where (SPEC S2). Written
    # only by apply revisions, in their transaction; `live set` never touches it, so
    # an out-of-band host change leaves the credential unbound to the new host.
    Column("kind", String, nullable=False),
    Column("namespace", String, nullable=False),
    Column("name", String, nullable=False),
    Column("credential", String, nullable=False),  # credentials.endpoints id, never a value
    Column("endpoint", String, nullable=False),
    Column("revision", Integer, nullable=False),  # the apply revision that bound it
    PrimaryKeyConstraint("kind", "namespace", "name", "credential", "endpoint"),
    Index(None, "credential", "endpoint"),
)

sync_state = Table(
    "sync_state",
    metadata,
    # One row (id 1): where the continuous sync stands (SPEC X5). Shared by every
    # daemon on the store, so a new leader carries on where the last one stopped.
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("source", String, nullable=False),
    Column("phase", String(20), nullable=False),
    Column("reason", Text, nullable=False),
    Column("last_fetched", String(64), nullable=True),
    Column("last_applied", String(64), nullable=True),
    Column("degraded_commit", String(64), nullable=True),
    Column("next_attempt_at", UtcDateTime, nullable=True),
    Column("suspended_by", String, nullable=True),
    Column("requested_at", UtcDateTime, nullable=True),
    Column("override_window", Boolean, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)
