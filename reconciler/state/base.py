"""The state store contract: what plan, apply, history and the daemon may ask of it.

The store, its errors, the outbox and the audit are here; what a revision is in
``state.revisions``; incoming mail, tokens and leases in ``state.contract``. One
implementation (``state.sql``) serves SQLite and PostgreSQL. Everything crossing
this boundary is plain data (``CanonicalResource``, dataclasses); secrets are
references only, never values.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from reconciler.config.desired import ResourceKey
from reconciler.state.revisions import (
    ChainCheck,
    Change,
    HistoryFilter,
    LiveState,
    Revision,
    RevisionKind,
    RevisionMeta,
    RevisionSummary,
)

if TYPE_CHECKING:  # the newer areas' contract (``state.contract``) builds on this module
    from reconciler.state.contract import Incoming, Leases, SyncStates, Tokens
    from reconciler.state.outbox_control import ControlResult, QueueFilter


@dataclass(frozen=True, slots=True)
class LockInfo:
    id: str
    holder: str
    operation: str
    acquired_at: datetime
    plan_digest: str | None = None


class StoreError(Exception):
    """A store problem with a message a user can act on (no traceback needed)."""


class StaleRevision(StoreError):
    pass


class StoreUnavailable(StoreError):
    """The store cannot be opened or reached (PostgreSQL down, SQLite path unwritable)."""


class StoreMissing(StoreError):
    """No store at the location, and the caller did not ask to create one."""


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
    lineage: str
    location: str  # where the store is, printable (a PostgreSQL password is hidden)
    outbox: Outbox  # durable queue of accepted notifications (O1, X4)
    audit: Audit  # email audit (O8)
    incoming: Incoming  # what the incoming-mail runner keeps (I1, I6-I8)
    tokens: Tokens  # the OAuth token cache rows, sealed by the caller
    leases: Leases  # one leader per role among daemons sharing the store (X4)
    # Queue a delivery event with each outgoing audit row that ends a recipient's
    # story (O14, state.delivery_events); the daemon turns it on with an events webhook.
    delivery_events: bool
    sync: SyncStates  # the continuous sync's state (X5)

    def head(self) -> int:
        """The newest revision number; 0 for a new, empty store."""

    def snapshot(self, revision: int | None = None) -> LiveState:
        """Live resources now (``None``) or as they were right after ``revision``."""

    def last_revision(self, kind: RevisionKind) -> int:
        """Newest revision of that kind, 0 if none."""

    def credential_bindings(self) -> frozenset[tuple[str, str]]:
        """Every (credential, endpoint) an apply bound (SPEC S2)."""

    def lock(
        self, holder: str, operation: str, *, timeout: float, plan_digest: str | None = None,
        on_wait: Callable[[LockInfo], None] | None = None,
    ) -> AbstractContextManager[LockInfo]: ...

    def force_unlock(self, lock_id: str) -> LockInfo | None: ...

    def current_lock(self) -> LockInfo | None:
        """Who holds the apply lock now, if anyone."""

    def commit(
        self, changes: Sequence[Change], meta: RevisionMeta, *, base_revision: int
    ) -> Revision:
        """Write ``changes`` as one new revision in one transaction.

        Raises :class:`StaleRevision` when ``head() != base_revision``.
        """

    def revisions(self, flt: HistoryFilter | None = None) -> list[Revision]: ...

    def revision(self, number: int) -> Revision: ...

    def verify(self) -> ChainCheck: ...

    def revision_summaries(self, *, before: int | None = None, limit: int = 50,
                           namespaces: Sequence[str] | None = None) -> list[RevisionSummary]:
        """Revisions numbered below ``before``, newest first, without bodies; with
        ``namespaces``, only those that touched one of them, listing only those
        resources (the console's View History)."""

    def status_get(self, key: ResourceKey) -> dict[str, Any]: ...

    def status_put(self, key: ResourceKey, status: Mapping[str, Any]) -> None: ...

    def statuses(self) -> dict[ResourceKey, dict[str, Any]]:
        """Every recorded resource status (``reconcile status``, ``GET /v1/status``)."""

    def close(self) -> None: ...

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc: object) -> None: ...


# -- outbox (SPEC O1, O7, O12, X4) ---------------------------------------------


class OutboxState(StrEnum):
    QUEUED = "queued"  # accepted, never attempted
    LEASED = "leased"  # a daemon is working on it until lease_expires_at
    RETRY_WAIT = "retry_wait"  # a transient failure; due again at next_attempt_at
    SENT = "sent"
    FAILED = "failed"
    IGNORED = "ignored"  # nothing to send (every recipient filtered out, ...)
    HELD = "held"  # an operator stopped it (O13): never claimed until released
    CANCELLED = "cancelled"  # an operator cancelled it (O13): never sent

    @property
    def terminal(self) -> bool:
        return self in (OutboxState.SENT, OutboxState.FAILED, OutboxState.IGNORED,
                        OutboxState.CANCELLED)


# The state package does not import mail or dispatch: a notification is a dict, or a
# pydantic model (e.g. ``mail.envelope.Notification``), stored dumped by alias.
NotificationLike = Mapping[str, Any] | BaseModel


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """Store a new message already leased to ``owner``, as if it had been claimed.

    For a worker in the intake's own process with room to send at once: the
    message skips the queue and its claim transaction (see daemon.intake).
    """

    owner: str
    seconds: float


@dataclass(frozen=True, slots=True)
class EnqueueRequest:
    """One notification for :meth:`Outbox.enqueue_many`."""

    notification: NotificationLike
    namespace: str
    idempotency_key: str | None = None
    routing: RoutingSnapshot | None = None
    lease: LeaseGrant | None = None


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    id: int
    duplicate: bool  # the idempotency key was known: ``id`` is the message stored first
    # The stored message, when it was stored leased (``EnqueueRequest.lease``) and is
    # now the lease holder's to send; None for a duplicate or a queued message.
    leased: OutboxMessage | None = None


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """An attachment as listed in an outbox message; the bytes are loaded on demand."""

    position: int
    name: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class RoutingSnapshot:
    """The decision a message was routed with (O12): it keeps it across retries."""

    config_revision: int
    server: str


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One outbox row. ``payload`` is the notification as enqueued, without
    attachment bytes (see :meth:`Outbox.notification` for the full one)."""

    id: int
    namespace: str
    idempotency_key: str | None
    module: str | None
    payload: Mapping[str, Any]
    attachments: tuple[AttachmentInfo, ...]
    routing: RoutingSnapshot | None
    state: OutboxState
    attempts: int  # claims so far, the current one included
    next_attempt_at: datetime
    first_attempt_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    last_error: str | None
    # Why it went where it did (O13): the rule that matched, rules skipped and why,
    # the server chosen and its alternates; JSON, as ``RouteDecision.to_json`` wrote it.
    decision: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """How one leased message ended; ``RETRY_WAIT`` needs ``next_attempt_at``.

    ``routing`` and ``decision`` are recorded with the result (a message routed
    afresh on this attempt) unless the message kept an earlier routing.
    """

    id: int
    state: OutboxState
    error: str | None = None
    next_attempt_at: datetime | None = None
    routing: RoutingSnapshot | None = None
    decision: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class CompletionResult:
    done: tuple[int, ...]
    lost: tuple[int, ...]  # the caller no longer held the lease: nothing was written


class LeaseLost(StoreError):
    """The worker's lease on a message was taken over; its result was not recorded."""


class UnknownMessage(StoreError):
    """No outbox message has that id (never enqueued, or purged)."""


# -- email audit (SPEC O8, I2) ---------------------------------------------------


class AuditDirection(StrEnum):
    OUTGOING = "outgoing"
    INCOMING = "incoming"


class AuditStatus(StrEnum):
    SENT = "SENT"
    SEND_FAILED = "SEND_FAILED"
    SEND_IGNORED = "SEND_IGNORED"
    RETRYING = "RETRYING"
    BOUNCED = "BOUNCED"  # a bounce (DSN) for a SENT message came back to a desk mailbox
    # incoming mail (I2), reserved until the incoming pipeline exists
    RECEIVED = "RECEIVED"
    RECEIVED_IGNORED = "RECEIVED_IGNORED"
    PROCESSED = "PROCESSED"
    PROCESSED_FAILED = "PROCESSED_FAILED"
    ATTACHMENT_PROCESSED_FAILED = "ATTACHMENT_PROCESSED_FAILED"
    # operator actions on the outbox (O13); details name the actor
    SEND_CANCELLED = "SEND_CANCELLED"
    SEND_HELD = "SEND_HELD"
    SEND_RELEASED = "SEND_RELEASED"
    SEND_RETRY_NOW = "SEND_RETRY_NOW"
    SEND_REQUEUED = "SEND_REQUEUED"

    @property
    def direction(self) -> AuditDirection:
        return _STATUS_DIRECTION[self]


_STATUS_DIRECTION = {
    s: AuditDirection.OUTGOING
    if s.startswith("SEND_") or s in ("SENT", "RETRYING", "BOUNCED")
    else AuditDirection.INCOMING
    for s in AuditStatus
}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit line: one recipient (or none) of one attempt.

    ``id`` and ``created_at`` are filled in by the store when left out;
    ``reason`` and ``details`` are redacted before they are written.
    """

    status: AuditStatus
    reason: str = ""
    namespace: str = "default"
    server: str | None = None
    host: str | None = None  # host:port actually talked to (differs after failover)
    attempt: int | None = None
    recipient: str | None = None
    message_id: str | None = None  # RFC 5322 Message-ID
    outbox_id: int | None = None
    module: str | None = None
    details: Mapping[str, Any] | None = None  # e.g. dropped attachments (O4)
    created_at: datetime | None = None
    id: int | None = None

    @property
    def direction(self) -> AuditDirection:
        return self.status.direction


class Outbox(Protocol):
    def enqueue(self, notification: NotificationLike, *, namespace: str,
                idempotency_key: str | None, routing: RoutingSnapshot | None = None,
                now: datetime | None = None) -> EnqueueResult:
        """Store a notification durably; committed when this returns ("accepted")."""

    def enqueue_many(self, requests: Sequence[EnqueueRequest], *,
                     now: datetime | None = None) -> list[EnqueueResult]:
        """Several notifications, one transaction (intake group commit)."""

    def claim(self, owner: str, limit: int, lease_seconds: float,
              now: datetime | None = None) -> list[OutboxMessage]:
        """Lease up to ``limit`` due messages to ``owner``; never one leased to another."""

    def renew(self, owner: str, ids: Sequence[int], lease_seconds: float,
              now: datetime | None = None) -> list[int]: ...

    def route(self, id: int, owner: str, routing: RoutingSnapshot,
              decision: Mapping[str, Any] | None = None) -> RoutingSnapshot: ...

    def complete(self, id: int, owner: str, state: OutboxState, *, error: str | None = None,
                 audit: Sequence[AuditEntry] = (), now: datetime | None = None) -> bool: ...

    def schedule_retry(self, id: int, owner: str, next_attempt_at: datetime, error: str | None,
                       *, audit: Sequence[AuditEntry] = (),
                       now: datetime | None = None) -> bool: ...

    def complete_many(self, owner: str, completions: Sequence[Completion], *,
                      audit: Sequence[AuditEntry] = (),
                      now: datetime | None = None) -> CompletionResult: ...

    def release(self, owner: str, ids: Sequence[int] | None = None,
                now: datetime | None = None) -> int:
        """Give back ``owner``'s leases (graceful shutdown); not counted as attempts."""

    def depth(self, *, finished: bool = False) -> dict[OutboxState, int]:
        """Messages per unfinished state; finished states too when asked (slow)."""

    def get(self, id: int) -> OutboxMessage | None: ...

    def find(self, namespace: str, idempotency_key: str) -> OutboxMessage | None: ...

    def notification(self, id: int) -> dict[str, Any]: ...

    def purge(self, updated_before: datetime) -> int: ...

    # Queue control (O13): state.outbox_control; each action audits its actor.
    def search(self, where: QueueFilter, *, limit: int | None = 100,
               offset: int = 0) -> list[OutboxMessage]: ...

    def page(self, where: QueueFilter, *, after: int | None = None,
             limit: int = 50) -> list[OutboxMessage]:
        """``search`` keyset-paged: ``id > after``, oldest first (the console)."""

    def count(self, where: QueueFilter) -> dict[OutboxState, int]: ...

    def hold(self, where: QueueFilter, *, actor: str, reason: str = "",
             now: datetime | None = None) -> ControlResult: ...

    def release_held(self, where: QueueFilter, *, actor: str, reason: str = "",
                     now: datetime | None = None) -> ControlResult: ...

    def retry_now(self, where: QueueFilter, *, actor: str, reason: str = "",
                  now: datetime | None = None) -> ControlResult: ...

    def cancel(self, where: QueueFilter, *, actor: str, reason: str,
               now: datetime | None = None) -> ControlResult: ...

    def requeue(self, where: QueueFilter, to: RoutingSnapshot, *, actor: str,
                reason: str = "", now: datetime | None = None) -> ControlResult: ...


class Audit(Protocol):
    def record(self, entries: Sequence[AuditEntry]) -> None: ...

    def search(self, *, status: AuditStatus | str | Sequence[AuditStatus | str] | None = None,
               recipient: str | None = None, server: str | None = None,
               since: datetime | None = None, until: datetime | None = None,
               direction: AuditDirection | str | None = None, namespace: str | None = None,
               namespaces: Collection[str] | None = None,
               outbox_id: int | None = None, message_id: str | None = None,
               limit: int | None = 100, offset: int = 0) -> list[AuditEntry]:
        """Newest first; ``recipient`` is a whole address, matched case-insensitively;
        ``namespaces`` (None: all) limits to those, for a namespace-limited caller."""

    def page(self, *, before: int | None = None, limit: int = 50,
             namespaces: Sequence[str] | None = None, **filters: Any) -> list[AuditEntry]:
        """``search``'s filters, keyset-paged: ``id < before``, newest id first, only
        ``namespaces`` when given (the console and its CSV export)."""

    def count(self, **filters: Any) -> int:
        """How many entries ``search`` would find with the same filters."""

    def purge(self, before: datetime) -> int: ...

    def last_sent(self, servers: Collection[tuple[str, str]]
                  ) -> dict[tuple[str, str], datetime]:
        """Newest SENT time per (namespace, server) asked for, in one query; servers
        that never sent are left out (state.audit_latest)."""
