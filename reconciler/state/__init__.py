"""The live state store (SPEC P3, P4, P6, P7).

``open_store(url)`` is the one way in: a SQLite file path (the default,
``.reconcile/state.db``) or a ``postgresql://`` URL. The schema is migrated
on open. Everything else is the :class:`~reconciler.state.base.Store`
contract in ``state.base``.
"""

from __future__ import annotations

import os

from reconciler.state.base import (
    Action,
    ChainCheck,
    Change,
    ChangeRejected,
    FieldChange,
    HistoryFilter,
    LiveState,
    LockInfo,
    LockTimeout,
    Revision,
    RevisionKind,
    RevisionMeta,
    SchemaTooNew,
    SecretValueRefused,
    StaleRevision,
    Store,
    StoreError,
    StoreUnavailable,
    UnknownRevision,
)
from reconciler.state.sql import SqlStore

DEFAULT_STORE = ".reconcile/state.db"


def open_store(url: str | os.PathLike[str] = DEFAULT_STORE) -> SqlStore:
    """Open (creating and migrating if needed) the store at ``url``.

    ``url`` is a file path or ``sqlite:///path`` (SQLite; parent folders are
    created), or ``postgresql://user@host:port/db`` (driven by psycopg 3).
    Raises :class:`StoreError` with a user-facing message when it cannot.
    """
    return SqlStore(os.fspath(url))


__all__ = [
    "DEFAULT_STORE",
    "Action",
    "ChainCheck",
    "Change",
    "ChangeRejected",
    "FieldChange",
    "HistoryFilter",
    "LiveState",
    "LockInfo",
    "LockTimeout",
    "Revision",
    "RevisionKind",
    "RevisionMeta",
    "SchemaTooNew",
    "SecretValueRefused",
    "SqlStore",
    "StaleRevision",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "UnknownRevision",
    "open_store",
]
