"""Console at scale (SPEC X6): each server's last send, and outbox pages by id.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

The Servers screen asks for the newest SENT line of every outgoing server at
once; ``(namespace, server, status, created_at)`` makes each a single index
probe. The Outbox screen walks one state (and one namespace at a time for a
namespace-limited reader) by id, ``id > cursor ORDER BY id LIMIT n``; the two
outbox indexes let that walk stop after ``n`` rows. Indexes only: no stored row
changes.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

INDEXES = [
    ("ix_audit_namespace_server_status_created_at", "audit",
     ["namespace", "server", "status", "created_at"]),
    ("ix_outbox_state_id", "outbox", ["state", "id"]),
    ("ix_outbox_namespace_state_id", "outbox", ["namespace", "state", "id"]),
]


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in INDEXES:
        op.drop_index(name, table_name=table)
