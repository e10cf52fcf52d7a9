"""Continuous sync state (SPEC X5) and the ``sync`` revision kind.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

One table with one row: where the syncer stands, shared by every daemon on the
store. `reconcile sync suspend|resume` write empty revisions of kind ``sync``
so the history names who stopped automatic applies and when.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

KINDS_BEFORE = "kind IN ('apply', 'out-of-band', 'auth', 'heal', 'rollback')"
KINDS_AFTER = "kind IN ('apply', 'out-of-band', 'auth', 'heal', 'rollback', 'sync')"


def _kinds(check: str) -> None:
    # SQLite cannot alter a constraint: batch mode rebuilds the table with the new one.
    with op.batch_alter_table("revisions") as batch:
        batch.drop_constraint("ck_revisions_kind", type_="check")
        batch.create_check_constraint("ck_revisions_kind", check)


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
    _kinds(KINDS_AFTER)


def downgrade() -> None:
    _kinds(KINDS_BEFORE)
    op.drop_table("sync_state")
