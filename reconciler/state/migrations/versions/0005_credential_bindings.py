"""Credential bindings (SPEC S2): which credential each resource presents where.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

A new table and one nullable column on ``revisions`` (the credential moves a
revision approved). Existing stores are backfilled from their live resources:
what a store already runs with is taken as applied and approved, so upgrading
never stops a working daemon; from then on only an apply binds.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("revisions", sa.Column("credential_moves", sa.Text, nullable=True))
    op.create_table(
        "credential_bindings",
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("namespace", sa.String, nullable=False),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("credential", sa.String, nullable=False),
        sa.Column("endpoint", sa.String, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("kind", "namespace", "name", "credential", "endpoint",
                                name="pk_credential_bindings"),
    )
    op.create_index("ix_credential_bindings_credential_endpoint", "credential_bindings",
                    ["credential", "endpoint"])
    _backfill()


def _backfill() -> None:
    # The mapping is the one the code uses; imported here so the backfill and every
    # later apply bind exactly the same pairs.
    from reconciler.config.endpoints import KINDS, pairs_of

    conn = op.get_bind()
    resources = sa.table("resources", sa.column("kind"), sa.column("namespace"),
                         sa.column("name"), sa.column("spec"), sa.column("revision"))
    bindings = sa.table("credential_bindings", sa.column("kind"), sa.column("namespace"),
                        sa.column("name"), sa.column("credential"), sa.column("endpoint"),
                        sa.column("revision"))
    rows = []
    query = sa.select(resources).where(resources.c.kind.in_(sorted(KINDS)))
    for kind, namespace, name, spec, number in conn.execute(query):
        for credential, endpoint in sorted(pairs_of(kind, json.loads(spec))):
            rows.append({"kind": kind, "namespace": namespace, "name": name,
                         "credential": credential, "endpoint": endpoint, "revision": number})
    if rows:
        conn.execute(sa.insert(bindings), rows)


def downgrade() -> None:
    op.drop_index("ix_credential_bindings_credential_endpoint", "credential_bindings")
    op.drop_table("credential_bindings")
    op.drop_column("revisions", "credential_moves")
