"""Audit status BOUNCED (SPEC O14): a returned DSN matched to a SENT message.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

Only the audit's status CHECK constraint changes; every row is kept. SQLite
cannot alter a constraint, so batch mode copies the table (named constraints
and indexes come along).
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_OLD = ("'SENT', 'SEND_FAILED', 'SEND_IGNORED', 'RETRYING', 'RECEIVED', 'RECEIVED_IGNORED', "
        "'PROCESSED', 'PROCESSED_FAILED', 'ATTACHMENT_PROCESSED_FAILED'")
_NEW = ("'SENT', 'SEND_FAILED', 'SEND_IGNORED', 'RETRYING', 'BOUNCED', 'RECEIVED', "
        "'RECEIVED_IGNORED', 'PROCESSED', 'PROCESSED_FAILED', 'ATTACHMENT_PROCESSED_FAILED'")


def _statuses(allowed: str) -> None:
    with op.batch_alter_table("audit", recreate="auto") as batch:
        batch.drop_constraint("ck_audit_status", type_="check")
        batch.create_check_constraint("ck_audit_status", f"status IN ({allowed})")


def upgrade() -> None:
    _statuses(_NEW)


def downgrade() -> None:
    op.execute("DELETE FROM audit WHERE status = 'BOUNCED'")
    _statuses(_OLD)
