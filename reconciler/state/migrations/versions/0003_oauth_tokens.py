"""OAuth2 token cache: one encrypted row per server that authenticates with OAuth2.

Revision ID: 0003
Revises: 0002
Create Date: 2024-07-01

Written out in full, like 0001 and 0002. Only a new table: existing stores
keep every row. Token values live only inside ``sealed`` (Fernet ciphertext);
the clear columns hold what ``reconcile auth status`` shows without the key.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_tokens",
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("namespace", sa.String, nullable=False),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("client_digest", sa.String(64), nullable=False),
        sa.Column("grant", sa.String(32), nullable=False),
        sa.Column("account", sa.String, nullable=True),
        sa.Column("sealed", sa.Text, nullable=True),
        sa.Column("access_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refresh_present", sa.Boolean, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_error_permanent", sa.Boolean, nullable=False),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "namespace", "name", name="pk_oauth_tokens"),
        sa.CheckConstraint("kind <> '' AND namespace <> '' AND name <> ''",
                           name="ck_oauth_tokens_identity"),
        sa.CheckConstraint("generation >= 0", name="ck_oauth_tokens_generation"),
    )


def downgrade() -> None:
    op.drop_table("oauth_tokens")
