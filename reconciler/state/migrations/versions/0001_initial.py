"""Initial state store: meta, resources, revisions, resource versions, status, lock.

Revision ID: 0001
Revises:
Create Date: 2024-06-01

Written out in full (not imported from ``state.schema``) so that later edits
to the schema module can never change what an old migration does.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

IDENTITY = "kind <> '' AND namespace <> '' AND name <> ''"


def upgrade() -> None:
    meta = op.create_table(
        "meta",
        sa.Column("id", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("lineage", sa.String(36), nullable=False),
        sa.Column("head", sa.Integer, nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_meta"),
        sa.CheckConstraint("id = 1", name="ck_meta_single_row"),
    )
    op.create_table(
        "resources",
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("namespace", sa.String, nullable=False),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("api_version", sa.String, nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("kind", "namespace", "name", name="pk_resources"),
        sa.CheckConstraint(IDENTITY, name="ck_resources_identity"),
    )
    op.create_table(
        "revisions",
        sa.Column("number", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("actor", sa.String, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("git_commit", sa.String, nullable=True),
        sa.Column("git_branch", sa.String, nullable=True),
        sa.Column("pull_request", sa.String, nullable=True),
        sa.Column("desired_digest", sa.String(64), nullable=True),
        sa.Column("plan_digest", sa.String(64), nullable=True),
        sa.Column("changes", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("number", name="pk_revisions"),
        sa.UniqueConstraint("hash", name="uq_revisions_hash"),
        sa.CheckConstraint("number > 0", name="ck_revisions_positive"),
        sa.CheckConstraint("kind IN ('apply', 'out-of-band', 'auth')", name="ck_revisions_kind"),
    )
    op.create_index("ix_revisions_created_at", "revisions", ["created_at"])
    op.create_index("ix_revisions_actor", "revisions", ["actor"])
    op.create_index("ix_revisions_kind_number", "revisions", ["kind", "number"])
    op.create_table(
        "resource_versions",
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("namespace", sa.String, nullable=False),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("body", sa.Text, nullable=True),
        sa.Column("digest", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint(
            "kind", "namespace", "name", "revision", name="pk_resource_versions"
        ),
        sa.ForeignKeyConstraint(
            ["revision"],
            ["revisions.number"],
            name="fk_resource_versions_revision_revisions",
        ),
        sa.CheckConstraint(IDENTITY, name="ck_resource_versions_identity"),
        sa.CheckConstraint(
            "(body IS NULL) = (digest IS NULL)", name="ck_resource_versions_body_digest"
        ),
    )
    op.create_index("ix_resource_versions_revision", "resource_versions", ["revision"])
    op.create_index(
        "ix_resource_versions_namespace_revision", "resource_versions", ["namespace", "revision"]
    )
    op.create_table(
        "status",
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("namespace", sa.String, nullable=False),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "namespace", "name", name="pk_status"),
    )
    op.create_table(
        "locks",
        sa.Column("slot", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("holder", sa.String, nullable=False),
        sa.Column("operation", sa.String, nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("plan_digest", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("slot", name="pk_locks"),
        sa.UniqueConstraint("id", name="uq_locks_id"),
        sa.CheckConstraint("slot = 1", name="ck_locks_single_row"),
    )
    # The lineage identifies this store for its whole life; a saved plan or a
    # history export from another store is recognised by it.
    now = datetime.now(UTC)
    if op.get_context().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)  # stored as UTC; see schema.UtcDateTime
    op.bulk_insert(
        meta,
        [{"id": 1, "lineage": str(uuid.uuid4()), "head": 0, "head_hash": None, "created_at": now}],
    )


def downgrade() -> None:
    for table in ("locks", "status", "resource_versions", "revisions", "resources", "meta"):
        op.drop_table(table)
