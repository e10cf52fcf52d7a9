"""The live state store (SPEC P3, P4, P6, P7).

``open_store(url)`` is the one way in: a SQLite file path (the default,
``.reconcile/state.db``) or a ``postgresql://`` URL. The schema is migrated
on open. Everything else is the :class:`~reconciler.state.base.Store`
contract in ``state.base``.

SQLAlchemy and Alembic load only when a store is opened (``SqlStore`` is
imported lazily), so importing the contract or ``DEFAULT_STORE`` is cheap.
"""

from __future__ import annotations

import os
from typing import Any

from reconciler.state.base import (
    AuditEntry,
    AuditStatus,
    ChangeRejected,
    LockInfo,
    LockTimeout,
    OutboxState,
    SchemaTooNew,
    SecretValueRefused,
    StaleRevision,
    Store,
    StoreError,
    StoreMissing,
    StoreUnavailable,
    UnknownRevision,
)
from reconciler.state.revisions import (
    Action,
    Change,
    FieldChange,
    HistoryFilter,
    LiveState,
    Revision,
    RevisionKind,
    RevisionMeta,
    RevisionSummary,
)

DEFAULT_STORE = ".reconcile/state.db"


def open_store(url: str | os.PathLike[str] = DEFAULT_STORE, *, create: bool = True) -> Store:
    """Open (creating and migrating if needed) the store at ``url``.

    ``url`` is a file path or ``sqlite:///path`` (SQLite; parent folders are
    created), or ``postgresql://user@host:port/db`` (driven by psycopg 3).
    With ``create=False`` a store that does not exist yet (no SQLite file, or
    a database without reconcile's tables) raises :class:`StoreMissing`
    instead of being created: commands that only read or operate a store pass
    it, so a mistyped location is an error, not a new empty store.
    Raises :class:`StoreError` with a user-facing message when it cannot.
    The one place that knows the implementation: callers type against ``Store``.
    """
    from reconciler.state.sql import SqlStore

    return SqlStore(os.fspath(url), create=create)


def __getattr__(name: str) -> Any:
    if name == "SqlStore":
        from reconciler.state.sql import SqlStore

        return SqlStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_STORE",
    "Action",
    "AuditEntry",
    "AuditStatus",
    "Change",
    "ChangeRejected",
    "FieldChange",
    "HistoryFilter",
    "LiveState",
    "LockInfo",
    "LockTimeout",
    "OutboxState",
    "Revision",
    "RevisionKind",
    "RevisionMeta",
    "RevisionSummary",
    "SchemaTooNew",
    "SecretValueRefused",
    "SqlStore",
    "StaleRevision",
    "Store",
    "StoreError",
    "StoreMissing",
    "StoreUnavailable",
    "UnknownRevision",
    "open_store",
]
