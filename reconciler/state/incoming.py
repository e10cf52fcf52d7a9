"""``store.incoming`` over SQL (the contract and its reasons: ``state.contract.Incoming``).

Tables: ``incoming_markers`` (one per fetched mail), ``incoming_message_ids``,
``ticket_events`` with their ``ticket_event_attachments`` (keyed by the sha256
the event lists), ``incoming_errors`` (error-folder details, sealed by the
caller or not kept) and ``incoming_servers`` (fetch state and fetch lease).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from reconciler.state import schema as t
from reconciler.state.audit import clipped, insert_entries
from reconciler.state.base import AuditDirection, AuditStatus
from reconciler.state.codec import from_row
from reconciler.state.contract import (
    DELIVERED,
    PENDING,
    REJECTED,
    TICKET_EVENT_STATES,
    MailRecord,
    Recorded,
    ServerState,
    StoredError,
    StoredEvent,
    bare_id,
)
from reconciler.state.location import StoreArea, now_or, upsert

m, ids, ev, s = (t.incoming_markers.c, t.incoming_message_ids.c, t.ticket_events.c,
                 t.incoming_servers.c)


class _RaceLost(Exception):
    pass


def _marker_is(namespace: str, server: str, marker: str) -> tuple[Any, ...]:
    return m.namespace == namespace, m.server == server, m.marker == marker


def _server_is(namespace: str, name: str) -> tuple[Any, ...]:
    return s.namespace == namespace, s.name == name


class SqlIncoming(StoreArea):
    # -- the lookups fetcher and pipeline need ----------------------------------

    def is_done(self, namespace: str, server: str, marker: str) -> bool:
        with self._read() as conn:
            return conn.execute(select(m.marker).where(
                *_marker_is(namespace, server, marker))).first() is not None

    def is_done_refreshing(self, namespace: str, server: str, marker: str, *,
                           refresh_before: datetime, now: datetime | None = None) -> bool:
        """:meth:`is_done` for a mail the server still lists: a marker older than
        ``refresh_before`` is dated ``now``, so :meth:`purge_markers` keeps it while its mail
        can still be fetched (unread, or on a POP3 server). One write per marker per
        half retention, not per fetch."""
        where = _marker_is(namespace, server, marker)
        with self._read() as conn:
            dated = conn.execute(select(m.created_at).where(*where)).first()
        if dated is None:
            return False
        if dated[0] < refresh_before:
            with self._write() as conn:
                conn.execute(update(t.incoming_markers).where(*where).values(
                    created_at=now_or(now)))
        return True

    def seen_message_id(self, namespace: str, message_id: str) -> bool:
        q = select(ids.message_id).where(ids.namespace == namespace,
                                         ids.message_id == bare_id(message_id))
        with self._read() as conn:
            return conn.execute(q).first() is not None

    def thread_lookup(self, namespace: str, message_ids: Sequence[str]) -> tuple[str, str] | None:
        wanted = [bare_id(i) for i in message_ids if i and i.strip()]
        if not wanted:
            return None
        q = select(ids.message_id, ids.ticket_module, ids.ticket_number).where(
            ids.namespace == namespace, ids.message_id.in_(wanted[:100]),
            ids.ticket_number.is_not(None))
        with self._read() as conn:
            found = {r[0]: (r[1], r[2]) for r in conn.execute(q)}
            missing = [i for i in wanted[:100] if i not in found]
            if missing:
                found.update(_sent_tickets(conn, namespace, missing))
        return next((found[i] for i in wanted if i in found), None)

    # -- the one commit per mail ------------------------------------------------

    def record(self, namespace: str, server: str, mails: Sequence[MailRecord], *,
               now: datetime | None = None) -> list[Recorded]:
        """Several mails in one transaction (the runner's group commit: with SQLite's
        fsync per commit, one transaction per mail would cap throughput)."""
        now = now_or(now)
        try:
            with self._write() as conn:
                return [_record(conn, namespace, server, mail, now, self.delivery_events)
                        for mail in mails]
        except _RaceLost:
            # Another process recorded one of these meanwhile (the transaction rolled
            # back): one by one, so only that one is skipped.
            if len(mails) == 1:
                return [Recorded(None, duplicate_marker=True)]
            return [self.record(namespace, server, [mail], now=now)[0] for mail in mails]

    def link_ticket(self, namespace: str, message_id: str, module: str, number: str) -> None:
        """Tell the store which ticket a Message-ID belongs to (e.g. once the desk created
        the ticket of a ``create`` event, or for the desk's own notifications)."""
        with self._write() as conn:
            _remember_id(conn, namespace, message_id, (module, number), None,
                         datetime.now(UTC), overwrite=True)

    # -- error-folder details ---------------------------------------------------------

    def errors(self, namespace: str, server: str, *,
               include_moved_back: bool = False) -> list[StoredError]:
        e = t.incoming_errors.c
        q = select(t.incoming_errors).where(e.namespace == namespace, e.server == server)
        if not include_moved_back:
            q = q.where(e.moved_back_at.is_(None))
        with self._read() as conn:
            rows = conn.execute(q.order_by(e.id)).all()
        return [from_row(StoredError, r) for r in rows]

    def waiting_errors(self, namespaces: Sequence[str] | None = None, *,
                       limit: int = 500) -> list[StoredError]:
        """Error-folder entries not moved back yet, every server's, newest first, in one
        query (the console lists them all); only ``namespaces`` when given."""
        e = t.incoming_errors.c
        q = select(t.incoming_errors).where(e.moved_back_at.is_(None))
        if namespaces is not None:
            q = q.where(e.namespace.in_(list(namespaces)))
        with self._read() as conn:
            rows = conn.execute(q.order_by(e.id.desc()).limit(limit)).all()
        return [from_row(StoredError, r) for r in rows]

    def error(self, error_id: int) -> StoredError | None:
        with self._read() as conn:
            row = conn.execute(select(t.incoming_errors).where(
                t.incoming_errors.c.id == error_id)).first()
        return from_row(StoredError, row) if row is not None else None

    def errors_moved_back(self, namespace: str, server: str,
                          now: datetime | None = None) -> int:
        e = t.incoming_errors.c
        with self._write() as conn:
            count = conn.execute(update(t.incoming_errors).where(
                e.namespace == namespace, e.server == server, e.moved_back_at.is_(None),
            ).values(moved_back_at=now_or(now))).rowcount
            conn.execute(update(t.incoming_servers).where(*_server_is(namespace, server))
                         .values(error_folder_count=0, paused=None, updated_at=now_or(now)))
        return count

    # -- ticket events (I8) -------------------------------------------------------

    def events(self, *, after: int = 0, limit: int = 100, namespace: str | None = None,
               state: str | None = None,
               namespaces: Collection[str] | None = None) -> list[StoredEvent]:
        """Events with ``id > after``, oldest first; ``namespaces`` (None: all) limits
        them to those, for a namespace-limited caller (SPEC S3)."""
        q = select(t.ticket_events).where(ev.id > after, *_scoped(namespace, namespaces))
        if state is not None:
            q = q.where(ev.state == state)
        with self._read() as conn:
            rows = conn.execute(q.order_by(ev.id).limit(limit)).all()
        return [from_row(StoredEvent, r) for r in rows]

    def event(self, event_id: int) -> StoredEvent | None:
        with self._read() as conn:
            row = conn.execute(select(t.ticket_events).where(ev.id == event_id)).first()
        return from_row(StoredEvent, row) if row is not None else None

    def last_event_id(self, namespace: str | None = None,
                      namespaces: Collection[str] | None = None) -> int:
        q = select(func.max(ev.id)).where(*_scoped(namespace, namespaces))
        with self._read() as conn:
            return conn.execute(q).scalar_one() or 0

    def attachment(self, event_id: int, sha256: str) -> bytes | None:
        a = t.ticket_event_attachments.c
        with self._read() as conn:
            return conn.execute(select(a.data).where(a.event_id == event_id,
                                                     a.sha256 == sha256)).scalar_one_or_none()

    def due_events(self, *, limit: int = 50, now: datetime | None = None) -> list[StoredEvent]:
        """Pending events in id order, up to the first that is not due yet.

        Delivery is in order: a later event never overtakes one that waits
        for a retry (a reply must not reach the desk before its ticket)."""
        q = select(t.ticket_events).where(ev.state == PENDING).order_by(ev.id).limit(limit)
        now = now_or(now)
        out = []
        with self._read() as conn:
            for row in conn.execute(q):
                if row.next_attempt_at > now:
                    break
                out.append(from_row(StoredEvent, row))
        return out

    def next_due_at(self) -> datetime | None:
        q = select(ev.next_attempt_at).where(ev.state == PENDING).order_by(ev.id).limit(1)
        with self._read() as conn:
            return conn.execute(q).scalar_one_or_none()

    def delivered(self, event_ids: Iterable[int], now: datetime | None = None) -> None:
        if chosen := list(event_ids):
            self._pending(ev.id.in_(chosen), state=DELIVERED, delivered_at=now_or(now),
                          attempts=ev.attempts + 1)

    def retry_later(self, event_id: int, error: str, next_attempt_at: datetime) -> None:
        self._pending(ev.id == event_id, attempts=ev.attempts + 1,
                      next_attempt_at=next_attempt_at, last_error=clipped(error))

    def reject(self, event_id: int, error: str) -> None:
        self._pending(ev.id == event_id, state=REJECTED, attempts=ev.attempts + 1,
                      last_error=clipped(error))

    def acknowledge(self, through: int, *, namespace: str | None = None,
                    now: datetime | None = None,
                    namespaces: Collection[str] | None = None) -> int:
        """The desk pulled everything up to ``through``: mark those pending events delivered."""
        return self._pending(ev.id <= through, *_scoped(namespace, namespaces),
                             state=DELIVERED, delivered_at=now_or(now))

    def _pending(self, *where: Any, **values: Any) -> int:
        """Update pending events only: a delivered or rejected one stays as it ended."""
        with self._write() as conn:
            return conn.execute(update(t.ticket_events).where(*where, ev.state == PENDING)
                                .values(**values)).rowcount

    def event_counts(self, namespaces: Collection[str] | None = None) -> dict[str, int]:
        q = select(ev.state, func.count()).where(*_scoped(None, namespaces))
        with self._read() as conn:
            rows = conn.execute(q.group_by(ev.state)).all()
        counts = dict.fromkeys(TICKET_EVENT_STATES, 0)
        counts.update({r[0]: r[1] for r in rows})
        return counts

    def purge_delivered(self, before: datetime) -> int:
        """Retention: delete delivered events older than ``before`` (attachments cascade).

        Pending and rejected events are never deleted. The newest event is always
        kept: SQLite hands out ``max(id) + 1`` as the next id, so deleting it would let
        a new event take an id the desk's cursor (``after``) has already passed."""
        with self._write() as conn:
            newest = conn.execute(select(func.max(ev.id))).scalar_one()
            if newest is None:
                return 0
            gone = and_(ev.state == DELIVERED, ev.delivered_at < before, ev.id < newest)
            conn.execute(delete(t.ticket_event_attachments).where(
                t.ticket_event_attachments.c.event_id.in_(select(ev.id).where(gone))))
            return conn.execute(delete(t.ticket_events).where(gone)).rowcount

    def purge_markers(self, before: datetime, *, listed_since: datetime) -> int:
        """Retention: delete markers not seen in a listing since ``before``.

        Only for servers whose fetching works and is not paused, with a good fetch
        since ``listed_since``: the runner dates a marker forward whenever its mail is
        listed (:meth:`is_done_refreshing`), and a server that is not being listed
        cannot do that, so its markers are kept until it is."""
        active = select(s.namespace, s.name).where(
            s.paused.is_(None), s.last_success_at >= listed_since,
            s.namespace == m.namespace, s.name == m.server)
        with self._write() as conn:
            return conn.execute(delete(t.incoming_markers).where(
                m.created_at < before, active.exists())).rowcount

    # -- per-server fetch state (I6, I7) and the fetch lease --------------------------

    def claim(self, namespace: str, name: str, owner: str, *, lease_seconds: float,
              now: datetime | None = None) -> bool:
        """Take or renew the right to fetch this server; False while another daemon has it."""
        now = now_or(now)
        until = now + timedelta(seconds=lease_seconds)
        with self._write() as conn:
            _ensure(conn, namespace, name, now)
            got = conn.execute(update(t.incoming_servers).where(
                *_server_is(namespace, name),
                or_(s.lease_owner.is_(None), s.lease_owner == owner, s.lease_expires_at < now),
            ).values(lease_owner=owner, lease_expires_at=until)).rowcount
        return bool(got)

    def release(self, namespace: str, name: str, owner: str) -> None:
        with self._write() as conn:
            conn.execute(update(t.incoming_servers).where(
                *_server_is(namespace, name), s.lease_owner == owner,
            ).values(lease_owner=None, lease_expires_at=None))

    def fetch_failed(self, namespace: str, name: str, kind: str, message: str,
                     now: datetime | None = None) -> ServerState:
        """Count one more consecutive connection failure; the state after it."""
        now = now_or(now)
        return self._server_update(namespace, name, now, after=True,
                                   consecutive_failures=s.consecutive_failures + 1,
                                   last_error=clipped(message), last_error_kind=kind,
                                   last_fetch_at=now)

    def fetch_succeeded(self, namespace: str, name: str, *, error_folder_count: int | None,
                        now: datetime | None = None) -> ServerState:
        """A session worked: failures back to 0. Returns the state *before* the reset, so
        the caller sees whether a failure notification is owed a recovery."""
        now = now_or(now)
        values: dict[str, Any] = {"consecutive_failures": 0, "failure_notified": False,
                                  "last_fetch_at": now, "last_success_at": now}
        if error_folder_count is not None:
            values["error_folder_count"] = error_folder_count
        return self._server_update(namespace, name, now, **values)

    def set_notified(self, namespace: str, name: str) -> None:
        with self._write() as conn:
            conn.execute(update(t.incoming_servers).where(*_server_is(namespace, name))
                         .values(failure_notified=True))

    def set_paused(self, namespace: str, name: str, reason: str | None, *,
                   error_folder_count: int | None = None,
                   now: datetime | None = None) -> ServerState:
        """Record why fetching is paused (None: it is not); returns the state before."""
        values: dict[str, Any] = {"paused": reason}
        if error_folder_count is not None:
            values["error_folder_count"] = error_folder_count
        return self._server_update(namespace, name, now_or(now), **values)

    def _server_update(self, namespace: str, name: str, now: datetime, *,
                       after: bool = False, **values: Any) -> ServerState:
        """Update a server's row (created if new); its state before (or ``after``) that."""
        with self._write() as conn:
            _ensure(conn, namespace, name, now)
            before = None if after else _state_of(conn, namespace, name)
            conn.execute(update(t.incoming_servers).where(*_server_is(namespace, name))
                         .values(updated_at=now, **values))
            return before or _state_of(conn, namespace, name)

    def server_state(self, namespace: str, name: str) -> ServerState:
        with self._read() as conn:
            return _state_of(conn, namespace, name)

    def server_states(self, namespace: str | None = None) -> list[ServerState]:
        q = select(t.incoming_servers).order_by(s.namespace, s.name)
        if namespace is not None:
            q = q.where(s.namespace == namespace)
        with self._read() as conn:
            return [from_row(ServerState, r) for r in conn.execute(q)]


# -- helpers (module level: they need a connection, not the store area) ---------------


def _scoped(namespace: str | None, namespaces: Collection[str] | None) -> list[Any]:
    """The conditions for one namespace and/or a caller's namespaces (None: any)."""
    out = [] if namespace is None else [ev.namespace == namespace]
    if namespaces is not None:
        out.append(ev.namespace.in_(sorted(namespaces)))
    return out


def _record(conn: Connection, namespace: str, server: str, mail: MailRecord,
            now: datetime, events: bool) -> Recorded:
    if conn.execute(select(m.marker).where(
            *_marker_is(namespace, server, mail.marker))).first() is not None:
        return Recorded(None, duplicate_marker=True)
    event_id: int | None = None
    event = mail.event
    if event is not None:
        event_id = conn.execute(insert(t.ticket_events).values(
            namespace=namespace, server=server, kind=event.kind, message_id=event.message_id,
            payload=event.payload, created_at=now, state=PENDING, attempts=0,
            next_attempt_at=now,
        ).returning(t.ticket_events.c.id)).scalar_one()
        files = [{"event_id": event_id, "sha256": digest, "size": len(data), "data": data}
                 for digest, data in event.attachments.items()]
        if files:
            conn.execute(insert(t.ticket_event_attachments), files)
        if mail.message_id:
            _remember_id(conn, namespace, mail.message_id, event.ticket, event_id, now)
    if mail.error is None:
        try:
            conn.execute(insert(t.incoming_markers).values(
                namespace=namespace, server=server, marker=mail.marker, event_id=event_id,
                created_at=now))
        except IntegrityError:
            raise _RaceLost from None  # another process won the race: roll back
    insert_entries(conn, mail.audit, now, events=events)
    if mail.error is not None:
        conn.execute(insert(t.incoming_errors).values(
            namespace=namespace, server=server, marker=mail.marker, code=mail.error.code,
            sealed=mail.error.sealed, created_at=now))
    return Recorded(event_id)


def _remember_id(conn: Connection, namespace: str, message_id: str,
                 ticket: tuple[str, str] | None, event_id: int | None, now: datetime, *,
                 overwrite: bool = False) -> None:
    """Store a Message-ID with its ticket; a ticket already known is kept unless
    ``overwrite`` (the desk said which ticket it is)."""
    key = bare_id(message_id)
    where = (ids.namespace == namespace, ids.message_id == key)
    exists = conn.execute(select(ids.ticket_number).where(*where)).first()
    if exists is None:
        conn.execute(insert(t.incoming_message_ids).values(
            namespace=namespace, message_id=key, ticket_module=ticket[0] if ticket else None,
            ticket_number=ticket[1] if ticket else None, event_id=event_id, created_at=now))
    elif ticket is not None and (overwrite or exists[0] is None):
        conn.execute(update(t.incoming_message_ids).where(*where).values(
            ticket_module=ticket[0], ticket_number=ticket[1]))


def _sent_tickets(conn: Connection, namespace: str,
                  message_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """The desk's own notifications among ``message_ids`` (bare) that named a ticket.

    The worker writes the link into the SENT audit row's details (``ticket``), in the
    outbox's group commit: no extra write per message, and durable exactly when the send
    is. The audit table keeps the Message-ID as sent, in angle brackets."""
    a = t.audit.c
    q = select(a.message_id, a.details).where(
        a.message_id.in_([f"<{i}>" for i in message_ids]), a.namespace == namespace,
        a.direction == AuditDirection.OUTGOING.value, a.status == AuditStatus.SENT.value,
        a.details.is_not(None))
    out: dict[str, tuple[str, str]] = {}
    for message_id, details in conn.execute(q):
        ticket = json.loads(details).get("ticket")
        if isinstance(ticket, dict) and ticket.get("module") and ticket.get("id"):
            out[bare_id(message_id)] = (str(ticket["module"]), str(ticket["id"]))
    return out


def _ensure(conn: Connection, namespace: str, name: str, now: datetime) -> None:
    if conn.execute(select(s.name).where(*_server_is(namespace, name))).first() is not None:
        return
    # DO NOTHING: another daemon may create the row at the same moment.
    conn.execute(upsert(conn.dialect.name)(t.incoming_servers).values(
        namespace=namespace, name=name, consecutive_failures=0, failure_notified=False,
        error_folder_count=0, updated_at=now).on_conflict_do_nothing())


def _state_of(conn: Connection, namespace: str, name: str) -> ServerState:
    row = conn.execute(select(t.incoming_servers).where(
        and_(*_server_is(namespace, name)))).first()
    return from_row(ServerState, row) if row is not None else ServerState(namespace, name)
