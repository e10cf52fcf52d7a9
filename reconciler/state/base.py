"""The state store contract: what plan, apply, history and the daemon may ask of it.

One implementation (``state.sql``) serves SQLite and PostgreSQL. Everything
crossing this boundary is plain data (``CanonicalResource``, dataclasses);
secrets are references only, never values.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from reconciler.config.desired import CanonicalResource, ResourceKey


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


class RevisionKind(StrEnum):
    APPLY = "apply"  # written by `reconcile apply`
    OUT_OF_BAND = "out-of-band"  # `reconcile live set`, an admin API, a direct edit
    AUTH = "auth"  # `reconcile auth login` (no spec change; never carries a token)


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field-level difference, already redacted. ``path`` is dotted camelCase."""

    path: str
    before: Any = None
    after: Any = None
    derived: bool = False  # the value was filled in by config.derive, not written in git


@dataclass(frozen=True, slots=True)
class Change:
    action: Action
    key: ResourceKey
    before: CanonicalResource | None
    after: CanonicalResource | None
    fields: tuple[FieldChange, ...] = ()


@dataclass(frozen=True, slots=True)
class RevisionMeta:
    """Who/what/why of a revision, recorded in the history as given."""

    actor: str
    message: str = ""
    git_commit: str | None = None
    git_branch: str | None = None
    pull_request: str | None = None
    desired_digest: str | None = None
    plan_digest: str | None = None
    kind: RevisionKind = RevisionKind.APPLY


@dataclass(frozen=True, slots=True)
class Revision:
    number: int
    created_at: datetime
    meta: RevisionMeta
    changes: tuple[Change, ...]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class LiveState:
    """The live resources at one revision (the head when read with no revision)."""

    lineage: str
    revision: int
    resources: Mapping[ResourceKey, CanonicalResource]

    def __iter__(self) -> Iterator[CanonicalResource]:
        return iter(self.resources.values())

    def __len__(self) -> int:
        return len(self.resources)


@dataclass(frozen=True, slots=True)
class LockInfo:
    id: str
    holder: str
    operation: str
    acquired_at: datetime
    plan_digest: str | None = None


@dataclass(frozen=True, slots=True)
class ChainCheck:
    ok: bool
    checked: int
    first_broken: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    resource: ResourceKey | None = None
    namespace: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    kinds: Sequence[RevisionKind] = field(default_factory=tuple)
    limit: int | None = None  # newest N matching revisions; None = all


class StoreError(Exception):
    """A store problem with a message a user can act on (no traceback needed)."""


class StaleRevision(StoreError):
    pass


class StoreUnavailable(StoreError):
    """The store cannot be opened or reached (PostgreSQL down, SQLite path unwritable)."""


class SchemaTooNew(StoreError):
    """The database was written by a newer version of reconcile."""


class UnknownRevision(StoreError):
    pass


class ChangeRejected(StoreError):
    """A commit whose changes do not fit the live state; nothing was written."""


class SecretValueRefused(ChangeRejected):
    """A spec carried a literal secret where only a ``{secretRef: ...}`` belongs."""


class LockTimeout(StoreError):
    def __init__(self, holder: LockInfo) -> None:
        self.holder = holder
        super().__init__(
            f"the store is locked by {holder.holder} ({holder.operation}) since "
            f"{holder.acquired_at:%Y-%m-%d %H:%M:%S %Z}, lock id {holder.id}"
        )


class Store(Protocol):
    @property
    def lineage(self) -> str: ...

    def head(self) -> int:
        """The newest revision number; 0 for a new, empty store."""
        ...

    def snapshot(self, revision: int | None = None) -> LiveState:
        """Live resources now (``None``) or as they were right after ``revision``."""
        ...

    def last_revision(self, kind: RevisionKind) -> int:
        """Newest revision of that kind, 0 if none."""
        ...

    def lock(
        self, holder: str, operation: str, *, timeout: float, plan_digest: str | None = None
    ) -> AbstractContextManager[LockInfo]: ...

    def force_unlock(self, lock_id: str) -> LockInfo | None: ...

    def current_lock(self) -> LockInfo | None:
        """Who holds the apply lock now, if anyone."""
        ...

    def commit(
        self, changes: Sequence[Change], meta: RevisionMeta, *, base_revision: int
    ) -> Revision:
        """Write ``changes`` as one new revision in one transaction.

        Raises :class:`StaleRevision` when ``head() != base_revision``.
        """
        ...

    def revisions(self, flt: HistoryFilter | None = None) -> list[Revision]: ...

    def revision(self, number: int) -> Revision: ...

    def verify(self) -> ChainCheck: ...

    def status_get(self, key: ResourceKey) -> dict[str, Any]: ...

    def status_put(self, key: ResourceKey, status: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...
