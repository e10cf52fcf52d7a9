"""Outbox (accepted notifications, their attachments) and the email audit.

Revision ID: 0002
Revises: 0001
Create Date: 2024-06-20

Written out in full, like 0001: later edits to ``state.schema`` must never
change what this migration does. Only new tables, so existing stores keep
every resource, revision and status row untouched.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OUTBOX_STATES = "'queued', 'leased', 'retry_wait', 'sent', 'failed', 'ignored'"
AUDIT_STATUSES = (
    "'SENT', 'SEND_FAILED', 'SEND_IGNORED', 'RETRYING', 'RECEIVED', 'RECEIVED_IGNORED', "
    "'PROCESSED', 'PROCESSED_FAILED', 'ATTACHMENT_PROCESSED_FAILED'"
)


def _row_id() -> sa.types.TypeEngine[int]:
    # SQLite auto-increments only a column declared exactly INTEGER PRIMARY KEY.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", _row_id(), autoincrement=True, nullable=False),
        sa.Column("namespace", sa.String, nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("module", sa.String(64), nullable=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("config_revision", sa.Integer, nullable=True),
        sa.Column("server", sa.String, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String, nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint(
            "namespace", "idempotency_key", name="uq_outbox_namespace_idempotency_key"
        ),
        sa.CheckConstraint(f"state IN ({OUTBOX_STATES})", name="ck_outbox_state"),
        sa.CheckConstraint(
            "(state = 'leased') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)",
            name="ck_outbox_lease",
        ),
        sa.CheckConstraint("(config_revision IS NULL) = (server IS NULL)",
                           name="ck_outbox_routing"),
        sa.CheckConstraint("attempts >= 0", name="ck_outbox_attempts"),
    )
    op.create_index("ix_outbox_state_next_attempt_at", "outbox", ["state", "next_attempt_at"])
    op.create_index("ix_outbox_state_lease_expires_at", "outbox", ["state", "lease_expires_at"])
    op.create_index("ix_outbox_lease_owner", "outbox", ["lease_owner"])
    op.create_table(
        "outbox_attachments",
        sa.Column("message_id", _row_id(), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("content_type", sa.String, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("message_id", "position", name="pk_outbox_attachments"),
        sa.ForeignKeyConstraint(
            ["message_id"], ["outbox.id"], ondelete="CASCADE",
            name="fk_outbox_attachments_message_id_outbox",
        ),
    )
    op.create_table(
        "audit",
        sa.Column("id", _row_id(), autoincrement=True, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("direction", sa.String(10), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("namespace", sa.String, nullable=False),
        sa.Column("server", sa.String, nullable=True),
        sa.Column("host", sa.String, nullable=True),
        sa.Column("attempt", sa.Integer, nullable=True),
        sa.Column("recipient", sa.String, nullable=True),
        sa.Column("recipient_key", sa.String, nullable=True),
        sa.Column("message_id", sa.String, nullable=True),
        sa.Column("outbox_id", _row_id(), nullable=True),
        sa.Column("module", sa.String(64), nullable=True),
        sa.Column("details", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit"),
        sa.CheckConstraint("direction IN ('outgoing', 'incoming')", name="ck_audit_direction"),
        sa.CheckConstraint(f"status IN ({AUDIT_STATUSES})", name="ck_audit_status"),
    )
    op.create_index("ix_audit_created_at", "audit", ["created_at"])
    op.create_index("ix_audit_status_created_at", "audit", ["status", "created_at"])
    op.create_index("ix_audit_recipient_key_created_at", "audit", ["recipient_key", "created_at"])
    op.create_index("ix_audit_server_created_at", "audit", ["server", "created_at"])
    op.create_index("ix_audit_namespace_created_at", "audit", ["namespace", "created_at"])
    op.create_index("ix_audit_outbox_id", "audit", ["outbox_id"])
    op.create_index("ix_audit_message_id", "audit", ["message_id"])


def downgrade() -> None:
    for table in ("audit", "outbox_attachments", "outbox"):
        op.drop_table(table)
