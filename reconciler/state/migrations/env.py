"""Alembic environment for the state store.

Only online migrations over a connection handed in by ``state.migrate``: the
store opens the connection, takes its locks and owns the transaction, so two
processes opening a fresh store at once cannot both create the tables.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(
        "the state store migrates itself when opened (reconciler.state.open_store); "
        "running alembic directly is not supported"
    )

context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
