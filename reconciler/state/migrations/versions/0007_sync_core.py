"""Continuous sync state (SPEC X5).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

One table with one row: where the syncer stands, shared by every daemon on the
store. (The ``sync`` revision kind that `reconcile sync suspend|resume` write is
admitted by 0006.)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_state",
        sa.Column("id", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("source", sa.String, nullable=False),
        sa.Column("phase", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("last_fetched", sa.String(64), nullable=True),
        sa.Column("last_applied", sa.String(64), nullable=True),
        sa.Column("degraded_commit", sa.String(64), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("suspended_by", sa.String, nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("override_window", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sync_state"),
    )


def downgrade() -> None:
    op.drop_table("sync_state")
