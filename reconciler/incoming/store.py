"""What the incoming runner keeps in the state store (SPEC I1, I6, I7, I8).

- **Markers** (``incoming_markers``): one per fetched mail, written in the
  same transaction as its audit lines, its ticket event and its Message-ID.
  The fetcher asks :meth:`IncomingStore.is_done` before downloading, so a
  mail whose outcome is durable is never processed again, even when the
  daemon died before telling the server (``mark_done``).
- **Message-IDs** (``incoming_message_ids``) of processed mail: the
  pipeline's duplicate check and, for replies, the ticket a later mail
  quoting them belongs to.
- **Ticket events** (``ticket_events``): the output (I8). ``pending`` until
  the webhook took them (or the desk acknowledged them through the API);
  ``rejected`` when the webhook refused one for good. Attachment bytes live
  in ``ticket_event_attachments``, keyed by the sha256 the event lists.
- **Error-folder details** (``incoming_errors``): headers and reason of a
  mail moved to the error folder, sealed with Fernet under a key given as a
  secret reference. Without a key only the codes are kept, never clear text.
- **Fetch state** (``incoming_servers``): consecutive failures, the last
  error, why fetching is paused, and the lease that makes exactly one daemon
  fetch a server when several share a store.

Every method blocks (database I/O); the runner calls them in threads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from reconciler.config.desired import canonical_json
from reconciler.incoming.pipeline import PipelineResult
from reconciler.state import schema as t
from reconciler.state.audit import insert_entries, redact_text
from reconciler.state.base import AuditDirection, AuditStatus
from reconciler.state.location import Location, translated

PENDING, DELIVERED, REJECTED = t.TICKET_EVENT_STATES
MAX_ERROR = 2000
_HEADER_BYTES = 16_384  # of a failed mail's header section kept (sealed) for a person


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _error(text: str) -> str:
    text = redact_text(text)
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


def bare_id(message_id: str) -> str:
    return message_id.strip().strip("<>").strip()


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
class ErrorRecord:
    id: int
    namespace: str
    server: str
    marker: str
    code: str
    created_at: datetime
    moved_back_at: datetime | None
    details: Mapping[str, Any] | None  # None: sealed without a key here, or never sealed
    sealed: bool


@dataclass(frozen=True, slots=True)
class Recorded:
    """What :meth:`IncomingStore.record` wrote: the event id, or nothing new (a re-run)."""

    event_id: int | None
    duplicate_marker: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """One judged mail for :meth:`IncomingStore.record_many`."""

    marker: str
    result: PipelineResult
    raw: bytes | None = None
    to_error_folder: bool = False


class _AlreadyRecorded(Exception):
    pass


class _RaceLost(Exception):
    pass


class IncomingStore:
    """The incoming tables of one open store; ``seal_key`` seals error-folder details."""

    def __init__(self, engine: Engine, writer: Engine, location: Location,
                 seal_key: bytes | None = None) -> None:
        self._engine = engine
        self._writer = writer
        self._loc = location
        self._key = seal_key

    @classmethod
    def of_store(cls, store: Any, seal_key: bytes | None = None) -> IncomingStore:
        shared = store.connections
        return cls(shared.engine, shared.writer, shared.location, seal_key)

    @property
    def can_seal(self) -> bool:
        return self._key is not None

    # -- the lookups fetcher and pipeline need ----------------------------------

    def is_done(self, namespace: str, server: str, marker: str) -> bool:
        m = t.incoming_markers.c
        q = select(m.marker).where(m.namespace == namespace, m.server == server,
                                   m.marker == marker)
        with translated(self._loc), self._engine.connect() as conn:
            return conn.execute(q).first() is not None

    def seen_message_id(self, namespace: str, message_id: str) -> bool:
        c = t.incoming_message_ids.c
        q = select(c.message_id).where(c.namespace == namespace,
                                       c.message_id == bare_id(message_id))
        with translated(self._loc), self._engine.connect() as conn:
            return conn.execute(q).first() is not None

    def thread_lookup(self, namespace: str, message_ids: Sequence[str]) -> tuple[str, str] | None:
        """The ticket of the first of ``message_ids`` (in the order given) that has one."""
        wanted = [bare_id(m) for m in message_ids if m and m.strip()]
        if not wanted:
            return None
        c = t.incoming_message_ids.c
        q = select(c.message_id, c.ticket_module, c.ticket_number).where(
            c.namespace == namespace, c.message_id.in_(wanted[:100]),
            c.ticket_number.is_not(None))
        with translated(self._loc), self._engine.connect() as conn:
            found = {r[0]: (r[1], r[2]) for r in conn.execute(q)}
            missing = [m for m in wanted[:100] if m not in found]
            if missing:
                found.update(_sent_tickets(conn, namespace, missing))
        for message_id in wanted:
            if message_id in found:
                return found[message_id]
        return None

    # -- the one commit per mail ------------------------------------------------

    def record(self, namespace: str, server: str, marker: str, result: PipelineResult, *,
               raw: bytes | None = None, to_error_folder: bool = False,
               now: datetime | None = None) -> Recorded:
        """Make a mail's outcome durable: marker, audit lines, event (with attachment
        bytes), Message-ID and, when it goes to the error folder, its sealed details.

        One transaction. A marker already present means an earlier run made
        this mail durable: nothing is written and ``duplicate_marker`` says so.
        """
        now = _now(now)
        try:
            with translated(self._loc), self._writer.begin() as conn:
                return Recorded(self._record(conn, namespace, server, marker, result, raw,
                                             to_error_folder, now))
        except _AlreadyRecorded:
            return Recorded(None, duplicate_marker=True)

    def record_many(self, namespace: str, server: str, items: Sequence[Outcome], *,
                    now: datetime | None = None) -> list[Recorded]:
        """:meth:`record` for several mails in one transaction (the runner's group commit:
        with SQLite's fsync per commit, one transaction per mail would cap throughput)."""
        now = _now(now)
        out: list[Recorded] = []
        try:
            with translated(self._loc), self._writer.begin() as conn:
                for item in items:
                    try:
                        event_id = self._record(conn, namespace, server, item.marker,
                                                item.result, item.raw, item.to_error_folder,
                                                now, raise_race=True)
                    except _AlreadyRecorded:
                        out.append(Recorded(None, duplicate_marker=True))
                    else:
                        out.append(Recorded(event_id))
        except _RaceLost:
            # Another process recorded one of these meanwhile: one by one, so only
            # that one is skipped.
            return [self.record(namespace, server, i.marker, i.result, raw=i.raw,
                                to_error_folder=i.to_error_folder, now=now) for i in items]
        return out

    def _record(self, conn: Connection, namespace: str, server: str, marker: str,
                result: PipelineResult, raw: bytes | None, to_error_folder: bool,
                now: datetime, *, raise_race: bool = False) -> int | None:
        m = t.incoming_markers.c
        if conn.execute(select(m.marker).where(m.namespace == namespace, m.server == server,
                                               m.marker == marker)).first() is not None:
            raise _AlreadyRecorded
        event_id: int | None = None
        event = result.event
        if event is not None:
            event_id = conn.execute(insert(t.ticket_events).values(
                namespace=namespace, server=server, kind=str(event.kind),
                message_id=bare_id(event.message_id) or None,
                payload=event.to_json().decode(), created_at=now, state=PENDING, attempts=0,
                next_attempt_at=now,
            ).returning(t.ticket_events.c.id)).scalar_one()
            kept = {a.sha256 for a in event.attachments}
            files = [{"event_id": event_id, "sha256": digest, "size": len(data), "data": data}
                     for digest, data in result.attachment_data.items() if digest in kept]
            if files:
                conn.execute(insert(t.ticket_event_attachments), files)
            if result.message_id:
                ticket = event.ticket
                self._remember_id(conn, namespace, result.message_id,
                                  (ticket.module, ticket.number) if ticket else None,
                                  event_id, now)
        if not to_error_folder:
            # No marker for a mail bound for the error folder: should the move fail,
            # the mail is judged again rather than left unread and forgotten.
            try:
                conn.execute(insert(t.incoming_markers).values(
                    namespace=namespace, server=server, marker=marker, event_id=event_id,
                    created_at=now))
            except IntegrityError:
                # another process won the race: roll back
                raise (_RaceLost if raise_race else _AlreadyRecorded) from None
        insert_entries(conn, result.audit, now)
        if to_error_folder:
            conn.execute(insert(t.incoming_errors).values(
                namespace=namespace, server=server, marker=marker,
                code=_final_code(result), sealed=self._seal(_details(result, marker, raw)),
                created_at=now))
        return event_id

    def _remember_id(self, conn: Connection, namespace: str, message_id: str,
                     ticket: tuple[str, str] | None, event_id: int, now: datetime) -> None:
        c = t.incoming_message_ids.c
        key = bare_id(message_id)
        exists = conn.execute(select(c.ticket_number).where(
            c.namespace == namespace, c.message_id == key)).first()
        if exists is None:
            conn.execute(insert(t.incoming_message_ids).values(
                namespace=namespace, message_id=key,
                ticket_module=ticket[0] if ticket else None,
                ticket_number=ticket[1] if ticket else None, event_id=event_id,
                created_at=now))
        elif ticket is not None and exists[0] is None:
            conn.execute(update(t.incoming_message_ids).where(
                c.namespace == namespace, c.message_id == key).values(
                ticket_module=ticket[0], ticket_number=ticket[1]))

    def link_ticket(self, namespace: str, message_id: str, module: str, number: str) -> None:
        """Tell the store which ticket a Message-ID belongs to (e.g. once the desk created
        the ticket of a ``create`` event, or for the desk's own notifications)."""
        with translated(self._loc), self._writer.begin() as conn:
            c = t.incoming_message_ids.c
            key = bare_id(message_id)
            done = conn.execute(update(t.incoming_message_ids).where(
                c.namespace == namespace, c.message_id == key).values(
                ticket_module=module, ticket_number=number)).rowcount
            if not done:
                conn.execute(insert(t.incoming_message_ids).values(
                    namespace=namespace, message_id=key, ticket_module=module,
                    ticket_number=number, event_id=None, created_at=datetime.now(UTC)))

    # -- sealing (error-folder details) -------------------------------------------

    def _seal(self, details: Mapping[str, Any]) -> str | None:
        if self._key is None:
            return None
        from cryptography.fernet import Fernet

        return Fernet(self._key).encrypt(canonical_json(dict(details)).encode()).decode()

    def _unseal(self, sealed: str | None) -> Mapping[str, Any] | None:
        if sealed is None or self._key is None:
            return None
        from cryptography.fernet import Fernet, InvalidToken

        try:
            return json.loads(Fernet(self._key).decrypt(sealed.encode()))
        except (InvalidToken, ValueError):
            return None

    def errors(self, namespace: str, server: str, *,
               include_moved_back: bool = False) -> list[ErrorRecord]:
        e = t.incoming_errors.c
        q = select(t.incoming_errors).where(e.namespace == namespace, e.server == server)
        if not include_moved_back:
            q = q.where(e.moved_back_at.is_(None))
        with translated(self._loc), self._engine.connect() as conn:
            rows = conn.execute(q.order_by(e.id)).all()
        return [ErrorRecord(r.id, r.namespace, r.server, r.marker, r.code, r.created_at,
                            r.moved_back_at, self._unseal(r.sealed), r.sealed is not None)
                for r in rows]

    def errors_moved_back(self, namespace: str, server: str,
                          now: datetime | None = None) -> int:
        e = t.incoming_errors.c
        with translated(self._loc), self._writer.begin() as conn:
            count = conn.execute(update(t.incoming_errors).where(
                e.namespace == namespace, e.server == server, e.moved_back_at.is_(None),
            ).values(moved_back_at=_now(now))).rowcount
            conn.execute(update(t.incoming_servers).where(
                t.incoming_servers.c.namespace == namespace,
                t.incoming_servers.c.name == server,
            ).values(error_folder_count=0, paused=None, updated_at=_now(now)))
        return count

    # -- ticket events (I8) -------------------------------------------------------

    def events(self, *, after: int = 0, limit: int = 100, namespace: str | None = None,
               state: str | None = None) -> list[StoredEvent]:
        """Events with ``id > after``, oldest first."""
        c = t.ticket_events.c
        q = select(t.ticket_events).where(c.id > after)
        if namespace is not None:
            q = q.where(c.namespace == namespace)
        if state is not None:
            q = q.where(c.state == state)
        with translated(self._loc), self._engine.connect() as conn:
            return [_event(r) for r in conn.execute(q.order_by(c.id).limit(limit))]

    def event(self, event_id: int) -> StoredEvent | None:
        with translated(self._loc), self._engine.connect() as conn:
            row = conn.execute(select(t.ticket_events).where(
                t.ticket_events.c.id == event_id)).first()
        return _event(row) if row is not None else None

    def last_event_id(self, namespace: str | None = None) -> int:
        c = t.ticket_events.c
        q = select(func.max(c.id))
        if namespace is not None:
            q = q.where(c.namespace == namespace)
        with translated(self._loc), self._engine.connect() as conn:
            return conn.execute(q).scalar_one() or 0

    def attachment(self, event_id: int, sha256: str) -> bytes | None:
        a = t.ticket_event_attachments.c
        with translated(self._loc), self._engine.connect() as conn:
            return conn.execute(select(a.data).where(a.event_id == event_id,
                                                     a.sha256 == sha256)).scalar_one_or_none()

    def due_events(self, *, limit: int = 50, now: datetime | None = None) -> list[StoredEvent]:
        """Pending events in id order, up to the first that is not due yet.

        Delivery is in order: a later event never overtakes one that waits
        for a retry (a reply must not reach the desk before its ticket)."""
        c = t.ticket_events.c
        q = select(t.ticket_events).where(c.state == PENDING).order_by(c.id).limit(limit)
        now = _now(now)
        out = []
        with translated(self._loc), self._engine.connect() as conn:
            for row in conn.execute(q):
                if row.next_attempt_at > now:
                    break
                out.append(_event(row))
        return out

    def next_due_at(self) -> datetime | None:
        c = t.ticket_events.c
        q = select(c.next_attempt_at).where(c.state == PENDING).order_by(c.id).limit(1)
        with translated(self._loc), self._engine.connect() as conn:
            return conn.execute(q).scalar_one_or_none()

    def delivered(self, event_ids: Iterable[int], now: datetime | None = None) -> None:
        ids = list(event_ids)
        if not ids:
            return
        c = t.ticket_events.c
        with translated(self._loc), self._writer.begin() as conn:
            conn.execute(update(t.ticket_events).where(c.id.in_(ids), c.state == PENDING)
                         .values(state=DELIVERED, delivered_at=_now(now),
                                 attempts=c.attempts + 1))

    def retry_later(self, event_id: int, error: str, next_attempt_at: datetime) -> None:
        c = t.ticket_events.c
        with translated(self._loc), self._writer.begin() as conn:
            conn.execute(update(t.ticket_events).where(c.id == event_id, c.state == PENDING)
                         .values(attempts=c.attempts + 1, next_attempt_at=next_attempt_at,
                                 last_error=_error(error)))

    def reject(self, event_id: int, error: str) -> None:
        c = t.ticket_events.c
        with translated(self._loc), self._writer.begin() as conn:
            conn.execute(update(t.ticket_events).where(c.id == event_id, c.state == PENDING)
                         .values(state=REJECTED, attempts=c.attempts + 1,
                                 last_error=_error(error)))

    def acknowledge(self, through: int, *, namespace: str | None = None,
                    now: datetime | None = None) -> int:
        """The desk pulled everything up to ``through``: mark those pending events delivered."""
        c = t.ticket_events.c
        q = update(t.ticket_events).where(c.id <= through, c.state == PENDING)
        if namespace is not None:
            q = q.where(c.namespace == namespace)
        with translated(self._loc), self._writer.begin() as conn:
            return conn.execute(q.values(state=DELIVERED, delivered_at=_now(now))).rowcount

    def event_counts(self) -> dict[str, int]:
        c = t.ticket_events.c
        with translated(self._loc), self._engine.connect() as conn:
            rows = conn.execute(select(c.state, func.count()).group_by(c.state)).all()
        counts = dict.fromkeys(t.TICKET_EVENT_STATES, 0)
        counts.update({r[0]: r[1] for r in rows})
        return counts

    def purge_delivered(self, before: datetime) -> int:
        """Retention: delete delivered events older than ``before`` (attachments cascade).

        Pending and rejected events are never deleted. The newest event is always
        kept: SQLite hands out ``max(id) + 1`` as the next id, so deleting it would let
        a new event take an id the desk's cursor (``after``) has already passed."""
        c = t.ticket_events.c
        with translated(self._loc), self._writer.begin() as conn:
            newest = conn.execute(select(func.max(c.id))).scalar_one()
            if newest is None:
                return 0
            gone = and_(c.state == DELIVERED, c.delivered_at < before, c.id < newest)
            conn.execute(delete(t.ticket_event_attachments).where(
                t.ticket_event_attachments.c.event_id.in_(select(c.id).where(gone))))
            return conn.execute(delete(t.ticket_events).where(gone)).rowcount

    def is_done_refreshing(self, namespace: str, server: str, marker: str, *,
                           refresh_before: datetime, now: datetime | None = None) -> bool:
        """:meth:`is_done` for a mail the server still lists: a marker older than
        ``refresh_before`` is dated ``now``, so :meth:`purge_markers` keeps it while its mail
        can still be fetched (unread, or on a POP3 server). One write per marker per
        half retention, not per fetch."""
        m = t.incoming_markers.c
        where = (m.namespace == namespace, m.server == server, m.marker == marker)
        with translated(self._loc), self._engine.connect() as conn:
            dated = conn.execute(select(m.created_at).where(*where)).first()
        if dated is None:
            return False
        if dated[0] < refresh_before:
            with translated(self._loc), self._writer.begin() as conn:
                conn.execute(update(t.incoming_markers).where(*where).values(
                    created_at=_now(now)))
        return True

    def purge_markers(self, before: datetime, *, listed_since: datetime) -> int:
        """Retention: delete markers not seen in a listing since ``before``.

        Only for servers whose fetching works and is not paused, with a good fetch
        since ``listed_since``: the runner dates a marker forward whenever its mail is
        listed (:meth:`is_done_refreshing`), and a server that is not being listed
        cannot do that, so its markers are kept until it is."""
        m, s = t.incoming_markers.c, t.incoming_servers.c
        active = select(s.namespace, s.name).where(
            s.paused.is_(None), s.last_success_at >= listed_since,
            s.namespace == m.namespace, s.name == m.server)
        with translated(self._loc), self._writer.begin() as conn:
            return conn.execute(delete(t.incoming_markers).where(
                m.created_at < before, active.exists())).rowcount

    # -- per-server fetch state (I6, I7) and the fetch lease --------------------------

    def claim(self, namespace: str, name: str, owner: str, *, lease_seconds: float,
              now: datetime | None = None) -> bool:
        """Take or renew the right to fetch this server; False while another daemon has it."""
        now = _now(now)
        s = t.incoming_servers.c
        until = now + timedelta(seconds=lease_seconds)
        with translated(self._loc), self._writer.begin() as conn:
            self._ensure(conn, namespace, name, now)
            got = conn.execute(update(t.incoming_servers).where(
                s.namespace == namespace, s.name == name,
                or_(s.lease_owner.is_(None), s.lease_owner == owner,
                    s.lease_expires_at < now),
            ).values(lease_owner=owner, lease_expires_at=until)).rowcount
        return bool(got)

    def release(self, namespace: str, name: str, owner: str) -> None:
        s = t.incoming_servers.c
        with translated(self._loc), self._writer.begin() as conn:
            conn.execute(update(t.incoming_servers).where(
                s.namespace == namespace, s.name == name, s.lease_owner == owner,
            ).values(lease_owner=None, lease_expires_at=None))

    def _ensure(self, conn: Connection, namespace: str, name: str, now: datetime) -> None:
        s = t.incoming_servers.c
        if conn.execute(select(s.name).where(s.namespace == namespace,
                                             s.name == name)).first() is not None:
            return
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as upsert
        else:
            from sqlalchemy.dialects.sqlite import insert as upsert
        # DO NOTHING: another daemon may create the row at the same moment.
        conn.execute(upsert(t.incoming_servers).values(
            namespace=namespace, name=name, consecutive_failures=0, failure_notified=False,
            error_folder_count=0, updated_at=now).on_conflict_do_nothing())

    def fetch_failed(self, namespace: str, name: str, kind: str, message: str,
                     now: datetime | None = None) -> ServerState:
        """Count one more consecutive connection failure; the state after it."""
        now = _now(now)
        s = t.incoming_servers.c
        with translated(self._loc), self._writer.begin() as conn:
            self._ensure(conn, namespace, name, now)
            conn.execute(update(t.incoming_servers).where(
                s.namespace == namespace, s.name == name).values(
                consecutive_failures=s.consecutive_failures + 1, last_error=_error(message),
                last_error_kind=kind, last_fetch_at=now, updated_at=now))
            return self._state(conn, namespace, name)

    def fetch_succeeded(self, namespace: str, name: str, *, error_folder_count: int | None,
                        now: datetime | None = None) -> ServerState:
        """A session worked: failures back to 0. Returns the state *before* the reset, so
        the caller sees whether a failure notification is owed a recovery."""
        now = _now(now)
        s = t.incoming_servers.c
        values: dict[str, Any] = {"consecutive_failures": 0, "failure_notified": False,
                                  "last_fetch_at": now, "last_success_at": now,
                                  "updated_at": now}
        if error_folder_count is not None:
            values["error_folder_count"] = error_folder_count
        with translated(self._loc), self._writer.begin() as conn:
            self._ensure(conn, namespace, name, now)
            before = self._state(conn, namespace, name)
            conn.execute(update(t.incoming_servers).where(
                s.namespace == namespace, s.name == name).values(**values))
        return before

    def set_notified(self, namespace: str, name: str) -> None:
        s = t.incoming_servers.c
        with translated(self._loc), self._writer.begin() as conn:
            conn.execute(update(t.incoming_servers).where(
                s.namespace == namespace, s.name == name).values(failure_notified=True))

    def set_paused(self, namespace: str, name: str, reason: str | None, *,
                   error_folder_count: int | None = None,
                   now: datetime | None = None) -> ServerState:
        """Record why fetching is paused (None: it is not); returns the state before."""
        now = _now(now)
        s = t.incoming_servers.c
        values: dict[str, Any] = {"paused": reason, "updated_at": now}
        if error_folder_count is not None:
            values["error_folder_count"] = error_folder_count
        with translated(self._loc), self._writer.begin() as conn:
            self._ensure(conn, namespace, name, now)
            before = self._state(conn, namespace, name)
            conn.execute(update(t.incoming_servers).where(
                s.namespace == namespace, s.name == name).values(**values))
        return before

    def server_state(self, namespace: str, name: str) -> ServerState:
        with translated(self._loc), self._engine.connect() as conn:
            return self._state(conn, namespace, name)

    def server_states(self, namespace: str | None = None) -> list[ServerState]:
        s = t.incoming_servers.c
        q = select(t.incoming_servers).order_by(s.namespace, s.name)
        if namespace is not None:
            q = q.where(s.namespace == namespace)
        with translated(self._loc), self._engine.connect() as conn:
            return [_state(r) for r in conn.execute(q)]

    def _state(self, conn: Connection, namespace: str, name: str) -> ServerState:
        s = t.incoming_servers.c
        row = conn.execute(select(t.incoming_servers).where(
            and_(s.namespace == namespace, s.name == name))).first()
        return _state(row) if row is not None else ServerState(namespace, name)

    def processed_count(self, namespace: str, server: str) -> int:
        m = t.incoming_markers.c
        with translated(self._loc), self._engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(t.incoming_markers).where(
                m.namespace == namespace, m.server == server)).scalar_one()


def _sent_tickets(conn: Connection, namespace: str,
                  message_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """The desk's own notifications among ``message_ids`` (bare) that named a ticket.

    The worker writes the link into the SENT audit row's details (``ticket``), in the
    outbox's group commit: no extra write per message, and durable exactly when the send
    is. The audit table keeps the Message-ID as sent, in angle brackets."""
    a = t.audit.c
    q = select(a.message_id, a.details).where(
        a.message_id.in_([f"<{m}>" for m in message_ids]), a.namespace == namespace,
        a.direction == AuditDirection.OUTGOING.value, a.status == AuditStatus.SENT.value,
        a.details.is_not(None))
    out: dict[str, tuple[str, str]] = {}
    for message_id, details in conn.execute(q):
        ticket = json.loads(details).get("ticket")
        if isinstance(ticket, dict) and ticket.get("module") and ticket.get("id"):
            out[bare_id(message_id)] = (str(ticket["module"]), str(ticket["id"]))
    return out


def _final_code(result: PipelineResult) -> str:
    for entry in reversed(result.audit):
        if entry.status != AuditStatus.ATTACHMENT_PROCESSED_FAILED and entry.details:
            code = entry.details.get("code")
            if code:
                return str(code)[:64]
    return str(result.status).lower()


def _details(result: PipelineResult, marker: str, raw: bytes | None) -> dict[str, Any]:
    headers = ""
    if raw is not None:
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            end = raw.find(b"\n\n")
        head = raw[: end if end >= 0 else _HEADER_BYTES][:_HEADER_BYTES]
        headers = head.decode("utf-8", "replace")
    return {"marker": marker, "status": str(result.status), "code": _final_code(result),
            "stage": result.stage, "reason": result.reason, "messageId": result.message_id,
            "headers": headers, "size": len(raw) if raw is not None else None}


def _event(row: Any) -> StoredEvent:
    return StoredEvent(row.id, row.namespace, row.server, row.kind, row.message_id, row.payload,
                       row.created_at, row.state, row.attempts, row.next_attempt_at,
                       row.delivered_at, row.last_error)


def _state(row: Any) -> ServerState:
    return ServerState(row.namespace, row.name, row.consecutive_failures, row.last_error,
                       row.last_error_kind, bool(row.failure_notified), row.last_fetch_at,
                       row.last_success_at, row.paused, row.error_folder_count,
                       row.lease_owner, row.lease_expires_at)
