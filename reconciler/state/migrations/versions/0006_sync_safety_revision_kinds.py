"""Revision kinds ``heal`` and ``rollback`` (SPEC X5): the sync loop writes them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

Only the check constraint on ``revisions.kind`` widens; no row changes. SQLite
cannot alter a constraint, so the batch mode copies the table (render_as_batch).
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_OLD = ("apply", "out-of-band", "auth")
_NEW = (*_OLD, "heal", "rollback")


def _kinds(kinds: tuple[str, ...]) -> None:
    with op.batch_alter_table("revisions") as batch:
        batch.drop_constraint("ck_revisions_kind", type_="check")
        batch.create_check_constraint("ck_revisions_kind",
                                      f"kind IN ({', '.join(map(repr, kinds))})")


def upgrade() -> None:
    _kinds(_NEW)


def downgrade() -> None:
    _kinds(_OLD)
