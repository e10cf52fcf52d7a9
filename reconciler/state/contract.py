"""The store contract's areas beyond revisions, outbox and audit (those are in ``base``).

Each is an attribute of :class:`~reconciler.state.base.Store`, like ``store.outbox``:

- ``store.incoming`` (:class:`Incoming`): what the incoming-mail runner keeps.
- ``store.tokens`` (:class:`Tokens`): the OAuth token cache rows, sealed by the caller.
- ``store.leases`` (:class:`Leases`): one leader per role among daemons sharing a store.
- ``store.sync`` (:class:`SyncStates`): the continuous sync's state row (SPEC X5).

Everything crossing the boundary is plain data defined here: state imports no
service, so the incoming side turns its pipeline results into :class:`MailRecord`
and the OAuth side seals tokens before they arrive. Every method blocks
(database I/O); async callers run them in threads.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from reconciler.state.base import AuditEntry

# -- incoming mail (SPEC I1, I6, I7, I8) -----------------------------------------------

# A ticket event is pending until the webhook took it (or the desk acknowledged it).
TICKET_EVENT_STATES = PENDING, DELIVERED, REJECTED = ("pending", "delivered", "rejected")


def bare_id(message_id: str) -> str:
    """A Message-ID as the store compares it: without angle brackets or spaces."""
    return message_id.strip().strip("<>").strip()


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A ticket event (I8) stored with the mail it came from."""

    kind: str
    message_id: str | None  # bare, no angle brackets
    payload: str  # the TicketEvent JSON, exactly as the schema describes it
    attachments: Mapping[str, bytes] = field(default_factory=dict)  # sha256 -> bytes
    ticket: tuple[str, str] | None = None  # (module, number) the mail belongs to


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    """Why a mail goes to the error folder; ``sealed`` is None without a seal key."""

    code: str
    sealed: str | None


@dataclass(frozen=True, slots=True)
class MailRecord:
    """One judged mail: everything made durable with its marker, in one transaction.

    A mail bound for the error folder (``error`` set) gets no marker: should the
    move fail, the mail is judged again rather than left unread and forgotten.
    """

    marker: str
    audit: Sequence[AuditEntry] = ()
    event: NewEvent | None = None
    message_id: str | None = None  # remembered for duplicates and threading (with an event)
    error: ErrorDetails | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    """What one :class:`MailRecord` wrote: the event id, or nothing new (a re-run)."""

    event_id: int | None
    duplicate_marker: bool = False


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    namespace: str
    server: str
    kind: str
    message_id: str | None
    payload: str  # the TicketEvent JSON, exactly as the schema describes it
    created_at: datetime
    state: str
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    last_error: str | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "namespace": self.namespace, "server": self.server,
                "kind": self.kind, "createdAt": self.created_at.isoformat(),
                "state": self.state, "attempts": self.attempts,
                "deliveredAt": self.delivered_at.isoformat() if self.delivered_at else None,
                "lastError": self.last_error, "event": json.loads(self.payload)}


@dataclass(frozen=True, slots=True)
class ServerState:
    """Fetch state of one incoming server (I6, I7) and who holds its fetch lease."""

    namespace: str
    name: str
    consecutive_failures: int = 0
    last_error: str | None = None
    last_error_kind: str | None = None
    failure_notified: bool = False
    last_fetch_at: datetime | None = None
    last_success_at: datetime | None = None
    paused: str | None = None
    error_folder_count: int = 0
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        def iso(d: datetime | None) -> str | None:
            return d.isoformat() if d else None

        return {"namespace": self.namespace, "server": self.name,
                "consecutiveFailures": self.consecutive_failures,
                "lastError": self.last_error, "lastErrorKind": self.last_error_kind,
                "failureNotified": self.failure_notified,
                "lastFetch": iso(self.last_fetch_at), "lastSuccess": iso(self.last_success_at),
                "paused": self.paused, "errorFolderCount": self.error_folder_count,
                "fetchedBy": self.lease_owner, "leaseExpires": iso(self.lease_expires_at)}


@dataclass(frozen=True, slots=True)
class StoredError:
    """An error-folder entry as stored: ``sealed`` is the caller's to open."""

    id: int
    namespace: str
    server: str
    marker: str
    code: str
    created_at: datetime
    moved_back_at: datetime | None
    sealed: str | None


class Incoming(Protocol):
    """Markers, Message-IDs, ticket events, error-folder details and fetch state.

    - **Markers**: one per fetched mail, written in the same transaction as its
      audit lines, its event and its Message-ID; the fetcher asks :meth:`is_done`
      before downloading, so a mail whose outcome is durable is never processed
      again, even when the daemon died before telling the server.
    - **Message-IDs** of processed mail: the duplicate check and, for replies, the
      ticket a later mail quoting them belongs to.
    - **Ticket events**: ``pending`` until the webhook took them (or the desk
      acknowledged them), ``rejected`` when the webhook refused one for good.
    - **Fetch state**: failures, the last error, why fetching is paused, and the
      lease that makes exactly one daemon fetch a server.
    """

    def is_done(self, namespace: str, server: str, marker: str) -> bool: ...

    def is_done_refreshing(self, namespace: str, server: str, marker: str, *,
                           refresh_before: datetime, now: datetime | None = None) -> bool:
        """:meth:`is_done` for a mail still listed: an old marker is dated ``now``."""

    def seen_message_id(self, namespace: str, message_id: str) -> bool: ...

    def thread_lookup(self, namespace: str,
                      message_ids: Sequence[str]) -> tuple[str, str] | None:
        """The ticket of the first of ``message_ids`` (in the order given) that has one."""

    def record(self, namespace: str, server: str, mails: Sequence[MailRecord], *,
               now: datetime | None = None) -> list[Recorded]:
        """Make mails' outcomes durable in one transaction (a group commit); a marker
        already present means an earlier run did: that mail writes nothing."""

    def link_ticket(self, namespace: str, message_id: str, module: str, number: str) -> None:
        ...

    def errors(self, namespace: str, server: str, *,
               include_moved_back: bool = False) -> list[StoredError]: ...

    def waiting_errors(self, namespaces: Sequence[str] | None = None, *,
                       limit: int = 500) -> list[StoredError]:
        """Entries not moved back, all servers, newest first (the console's Incoming)."""

    def error(self, error_id: int) -> StoredError | None: ...

    def errors_moved_back(self, namespace: str, server: str,
                          now: datetime | None = None) -> int: ...

    def events(self, *, after: int = 0, limit: int = 100, namespace: str | None = None,
               state: str | None = None,
               namespaces: Collection[str] | None = None) -> list[StoredEvent]: ...

    def event(self, event_id: int) -> StoredEvent | None: ...

    def last_event_id(self, namespace: str | None = None,
                      namespaces: Collection[str] | None = None) -> int: ...

    def attachment(self, event_id: int, sha256: str) -> bytes | None: ...

    def due_events(self, *, limit: int = 50,
                   now: datetime | None = None) -> list[StoredEvent]: ...

    def next_due_at(self) -> datetime | None: ...

    def delivered(self, event_ids: Iterable[int], now: datetime | None = None) -> None: ...

    def retry_later(self, event_id: int, error: str, next_attempt_at: datetime) -> None: ...

    def reject(self, event_id: int, error: str) -> None: ...

    def acknowledge(self, through: int, *, namespace: str | None = None,
                    now: datetime | None = None,
                    namespaces: Collection[str] | None = None) -> int: ...

    def event_counts(self, namespaces: Collection[str] | None = None) -> dict[str, int]: ...

    def purge_delivered(self, before: datetime) -> int: ...

    def purge_markers(self, before: datetime, *, listed_since: datetime) -> int: ...

    def claim(self, namespace: str, name: str, owner: str, *, lease_seconds: float,
              now: datetime | None = None) -> bool: ...

    def release(self, namespace: str, name: str, owner: str) -> None: ...

    def fetch_failed(self, namespace: str, name: str, kind: str, message: str,
                     now: datetime | None = None) -> ServerState: ...

    def fetch_succeeded(self, namespace: str, name: str, *, error_folder_count: int | None,
                        now: datetime | None = None) -> ServerState: ...

    def set_notified(self, namespace: str, name: str) -> None: ...

    def set_paused(self, namespace: str, name: str, reason: str | None, *,
                   error_folder_count: int | None = None,
                   now: datetime | None = None) -> ServerState: ...

    def server_state(self, namespace: str, name: str) -> ServerState: ...

    def server_states(self, namespace: str | None = None) -> list[ServerState]: ...


# -- OAuth token cache rows --------------------------------------------------------------

TokenKey = tuple[str, str, str]  # kind, namespace, name of the server


@dataclass(frozen=True)
class TokenRow:
    """One server's row: clear columns plus the tokens as the caller sealed them."""

    key: TokenKey
    client_digest: str
    grant: str
    account: str | None
    access_expires_at: datetime | None
    refresh_present: bool
    generation: int
    last_error: str | None
    last_error_permanent: bool
    last_error_at: datetime | None
    updated_at: datetime
    sealed_text: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class TokenWrite:
    """What :meth:`Tokens.write` sets: new tokens (``sealed``) or an error (``error``)."""

    client_digest: str
    grant: str
    account: str | None
    sealed: str | None = None
    refresh_present: bool = False
    access_expires_at: datetime | None = None
    error: str | None = None
    error_permanent: bool = False


class Tokens(Protocol):
    """Rows carry a generation: a writer that read generation ``g`` succeeds only if
    the row is still at ``g``, so of two processes refreshing at once the second sees
    the first's token instead of overwriting it."""

    def get(self, key: TokenKey) -> TokenRow | None: ...

    def all(self) -> list[TokenRow]: ...

    def write(self, key: TokenKey, write: TokenWrite, *,
              expect_generation: int | None) -> int | None:
        """The new generation, or None when another writer got there first.
        ``expect_generation`` None means "whatever is there" (a fresh login)."""

    def expire_access(self, key: TokenKey, generation: int) -> None: ...


# -- leader leases (SPEC X4) -----------------------------------------------------------


class Leadership(Protocol):
    def acquire(self) -> bool:
        """True while this process leads; tries to become leader when it does not."""

    def release(self) -> None: ...


class Leases(Protocol):
    def leader(self, role: str) -> Leadership:
        """At most one process leads ``role`` among all sharing this store."""


# -- continuous sync (SPEC X5) ---------------------------------------------------------


class SyncPhase(StrEnum):
    """Where the syncer stands, as `reconcile sync status` shows it (Argo CD's words)."""

    SYNCED = "Synced"  # the last fetched commit is what is live
    OUT_OF_SYNC = "OutOfSync"  # a newer commit is waiting (mode plan, a window, ...)
    PROGRESSING = "Progressing"  # a sync is running
    DEGRADED = "Degraded"  # the commit was applied, failed verification, rolled back
    FAILED = "Failed"  # the commit cannot be applied automatically; reason says why
    SUSPENDED = "Suspended"  # an operator stopped automatic syncs


@dataclass(frozen=True, slots=True)
class SyncRecord:
    """The one row of sync state; every daemon and `reconcile sync` reads the same."""

    source: str = ""
    phase: SyncPhase = SyncPhase.OUT_OF_SYNC
    reason: str = ""
    last_fetched: str | None = None  # commit sha
    last_applied: str | None = None
    degraded_commit: str | None = None  # not re-applied until a newer commit arrives
    next_attempt_at: datetime | None = None
    suspended_by: str | None = None
    requested_at: datetime | None = None  # `reconcile sync now` asks the leader to sync
    override_window: bool = False  # ... even inside a closed window
    updated_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        def iso(d: datetime | None) -> str | None:
            return d.isoformat() if d else None

        return {"source": self.source, "state": self.phase.value, "reason": self.reason,
                "lastFetchedCommit": self.last_fetched, "lastAppliedCommit": self.last_applied,
                "degradedCommit": self.degraded_commit,
                "nextAttemptAt": iso(self.next_attempt_at), "suspendedBy": self.suspended_by,
                "requestedAt": iso(self.requested_at), "updatedAt": iso(self.updated_at)}


class SyncStates(Protocol):
    def get(self) -> SyncRecord:
        """The current row (defaults before the first write)."""

    def update(self, **fields: Any) -> SyncRecord:
        """Set the given :class:`SyncRecord` fields in one transaction; the new row."""
