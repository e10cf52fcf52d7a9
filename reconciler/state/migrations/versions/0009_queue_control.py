"""Queue control (SPEC O13): held and cancelled messages, operator audit statuses,
and the routing decision kept with each outbox row.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

A nullable column and two widened CHECK constraints: every stored row stays
valid and is kept as it is. SQLite cannot alter a CHECK constraint, and
rebuilding ``outbox`` would fire the ``ON DELETE CASCADE`` of its attachments,
so the constraint text is edited in place, the procedure SQLite documents for
constraint changes that leave the stored rows untouched (lang_altertable.html).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

OLD_STATES = "'queued', 'leased', 'retry_wait', 'sent', 'failed', 'ignored'"
NEW_STATES = OLD_STATES + ", 'held', 'cancelled'"
OLD_STATUSES = (  # as 0008 left them
    "'SENT', 'SEND_FAILED', 'SEND_IGNORED', 'RETRYING', 'BOUNCED', 'RECEIVED', "
    "'RECEIVED_IGNORED', 'PROCESSED', 'PROCESSED_FAILED', 'ATTACHMENT_PROCESSED_FAILED'"
)
NEW_STATUSES = OLD_STATUSES + (", 'SEND_CANCELLED', 'SEND_HELD', 'SEND_RELEASED', "
                               "'SEND_RETRY_NOW', 'SEND_REQUEUED'")
CHECKS = [("outbox", "ck_outbox_state", "state", OLD_STATES, NEW_STATES),
          ("audit", "ck_audit_status", "status", OLD_STATUSES, NEW_STATUSES)]


def upgrade() -> None:
    op.add_column("outbox", sa.Column("decision", sa.Text, nullable=True))
    _checks(new=True)


def downgrade() -> None:
    _checks(new=False)
    # Plain ALTER TABLE on SQLite too (3.35+): a batch rebuild would cascade-delete
    # the attachments of every stored message.
    op.execute("ALTER TABLE outbox DROP COLUMN decision")


def _checks(*, new: bool) -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        for table, name, column, old, wider in CHECKS:
            op.drop_constraint(name, table, type_="check")
            op.create_check_constraint(name, table, f"{column} IN ({wider if new else old})")
        return
    version = conn.exec_driver_sql("PRAGMA schema_version").scalar_one()
    conn.exec_driver_sql("PRAGMA writable_schema=ON")
    for table, _name, column, old, wider in CHECKS:
        before, after = (old, wider) if new else (wider, old)
        conn.execute(sa.text(
            "UPDATE sqlite_master SET sql = replace(sql, :before, :after) "
            "WHERE type = 'table' AND name = :table"),
            {"before": f"{column} IN ({before})", "after": f"{column} IN ({after})",
             "table": table})
    conn.exec_driver_sql(f"PRAGMA schema_version={int(version) + 1}")
    conn.exec_driver_sql("PRAGMA writable_schema=OFF")
