"""Incoming mail: fetched markers, Message-IDs, ticket events, error-folder details, fetch state.

Revision ID: 0004
Revises: 0003
Create Date: 2024-07-15

Written out in full, like the ones before. Only new tables: existing stores
keep every row. Error-folder details live only inside ``sealed`` (Fernet).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "incoming_markers",
        sa.Column("namespace", sa.String, nullable=False),
        sa.Column("server", sa.String, nullable=False),
        sa.Column("marker", sa.String, nullable=False),
        sa.Column("event_id", RowId, nullable=True),
        sa.Column("created_at", Utc, nullable=False),
        sa.PrimaryKeyConstraint("namespace", "server", "marker", name="pk_incoming_markers"),
    )
    op.create_table(
        "incoming_message_ids",
        sa.Column("namespace", sa.String, nullable=False),
        sa.Column("message_id", sa.String, nullable=False),
        sa.Column("ticket_module", sa.String(64), nullable=True),
        sa.Column("ticket_number", sa.String(32), nullable=True),
        sa.Column("event_id", RowId, nullable=True),
        sa.Column("created_at", Utc, nullable=False),
        sa.PrimaryKeyConstraint("namespace", "message_id", name="pk_incoming_message_ids"),
    )
    op.create_table(
        "ticket_events",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("namespace", sa.String, nullable=False),
        sa.Column("server", sa.String, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String, nullable=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", Utc, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", Utc, nullable=False),
        sa.Column("delivered_at", Utc, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ticket_events"),
        sa.CheckConstraint("state IN ('pending', 'delivered', 'rejected')",
                           name="ck_ticket_events_state"),
        sa.CheckConstraint("attempts >= 0", name="ck_ticket_events_attempts"),
    )
    op.create_index("ix_ticket_events_state_id", "ticket_events", ["state", "id"])
    op.create_index("ix_ticket_events_namespace_id", "ticket_events", ["namespace", "id"])
    op.create_table(
        "ticket_event_attachments",
        sa.Column("event_id", RowId, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("event_id", "sha256", name="pk_ticket_event_attachments"),
        sa.ForeignKeyConstraint(
            ["event_id"], ["ticket_events.id"], ondelete="CASCADE",
            name="fk_ticket_event_attachments_event_id_ticket_events"),
    )
    op.create_table(
        "incoming_errors",
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("namespace", sa.String, nullable=False),
        sa.Column("server", sa.String, nullable=False),
        sa.Column("marker", sa.String, nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("sealed", sa.Text, nullable=True),
        sa.Column("created_at", Utc, nullable=False),
        sa.Column("moved_back_at", Utc, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_incoming_errors"),
    )
    op.create_index("ix_incoming_errors_namespace_server_created_at", "incoming_errors",
                    ["namespace", "server", "created_at"])
    op.create_table(
        "incoming_servers",
        sa.Column("namespace", sa.String, nullable=False),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("lease_owner", sa.String, nullable=True),
        sa.Column("lease_expires_at", Utc, nullable=True),
        sa.Column("consecutive_failures", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_error_kind", sa.String(16), nullable=True),
        sa.Column("failure_notified", sa.Boolean, nullable=False),
        sa.Column("last_fetch_at", Utc, nullable=True),
        sa.Column("last_success_at", Utc, nullable=True),
        sa.Column("paused", sa.String, nullable=True),
        sa.Column("error_folder_count", sa.Integer, nullable=False),
        sa.Column("updated_at", Utc, nullable=False),
        sa.PrimaryKeyConstraint("namespace", "name", name="pk_incoming_servers"),
    )


def downgrade() -> None:
    op.drop_table("incoming_servers")
    op.drop_index("ix_incoming_errors_namespace_server_created_at", "incoming_errors")
    op.drop_table("incoming_errors")
    op.drop_index("ix_ticket_events_namespace_id", "ticket_events")
    op.drop_index("ix_ticket_events_state_id", "ticket_events")
    op.drop_table("ticket_event_attachments")
    op.drop_table("ticket_events")
    op.drop_table("incoming_message_ids")
    op.drop_table("incoming_markers")
