"""Revision kinds ``heal`` and ``rollback`` (SPEC X5): the sync loop writes them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

Only the check constraint on ``revisions.kind`` widens (also to ``sync``, the
sync loop's suspend/resume revisions, so no later migration touches it again);
no row changes. PostgreSQL alters the constraint. SQLite cannot, and the usual
table copy would drop ``revisions`` under the foreign keys that point at it, so
the constraint text is edited in the schema instead: SQLite's documented way
for a change that leaves every stored row valid (sqlite.org/lang_altertable.html,
"making other kinds of table schema changes").
"""

from __future__ import annotations

import re

from alembic import op
from sqlalchemy import text

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_OLD = ("apply", "out-of-band", "auth")
_NEW = (*_OLD, "heal", "rollback", "sync")
_NAME = "ck_revisions_kind"


def _check(kinds: tuple[str, ...]) -> str:
    return f"kind IN ({', '.join(repr(k) for k in kinds)})"


def _kinds(kinds: tuple[str, ...]) -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        op.drop_constraint(_NAME, "revisions", type_="check")
        op.create_check_constraint(_NAME, "revisions", _check(kinds))
        return
    sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE type = 'table' "
                            "AND name = 'revisions'")).scalar_one()
    new, found = re.subn(rf"CONSTRAINT {_NAME} CHECK \(kind IN \([^)]*\)\)",
                         f"CONSTRAINT {_NAME} CHECK ({_check(kinds)})", sql)
    assert found == 1, "revisions has no kind check to widen"
    version = conn.execute(text("PRAGMA schema_version")).scalar_one()
    conn.execute(text("PRAGMA writable_schema = ON"))
    conn.execute(text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' "
                      "AND name = 'revisions'"), {"sql": new})
    conn.execute(text(f"PRAGMA schema_version = {int(version) + 1}"))
    conn.execute(text("PRAGMA writable_schema = OFF"))


def upgrade() -> None:
    _kinds(_NEW)


def downgrade() -> None:
    _kinds(_OLD)
