"""Console indexes (SPEC X6): the email audit screen pages by id, newest first.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

The audit screen walks rows with ``id < cursor ORDER BY id DESC LIMIT n`` under
one filter (namespace, status, recipient, server, direction); an index per
filter ending in ``id`` lets that walk stop after ``n`` rows instead of sorting
every match. Indexes only: no stored row changes.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

INDEXES = [(f"ix_audit_{column}_id", [column, "id"])
           for column in ("namespace", "status", "recipient_key", "server", "direction")]
# A namespace-scoped reader looking for failures: walking either single index would
# read every row of the namespace (or the status) when the two rarely meet.
INDEXES.append(("ix_audit_namespace_status_id", ["namespace", "status", "id"]))


def upgrade() -> None:
    for name, columns in INDEXES:
        op.create_index(name, "audit", columns)


def downgrade() -> None:
    for name, _columns in INDEXES:
        op.drop_index(name, table_name="audit")
