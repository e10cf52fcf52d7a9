"""The durable outbox (SPEC O1, O7, O12, X4): accepted notifications until they are done.

Life of a message::

    enqueue -> queued --claim--> leased --complete--> sent | failed | ignored
                 ^                 |  \\--schedule_retry--> retry_wait --(due)--> claim
                 '----release------'   (lease runs out: claimable again by anyone)

- ``enqueue`` commits before it returns: that is the "accepted" point. The
  idempotency key is unique per namespace and enforced by the database
  (``INSERT ... ON CONFLICT DO NOTHING``), so two intakes racing with one key
  store one row and both learn its id.
- ``claim`` leases due messages in one statement: ``UPDATE ... WHERE id IN
  (SELECT ... FOR UPDATE SKIP LOCKED)`` on PostgreSQL, so daemons sharing a
  database take different rows without waiting for each other; on SQLite the
  same statement runs under ``BEGIN IMMEDIATE`` (one writer at a time).
  ``attempts`` counts claims, so a message that kills its daemon is not retried
  for ever: the worker sees the count grow even though no result was recorded.
- Results are fenced by the lease: only the current owner of a leased row may
  finish it. A worker whose lease ran out and was taken over gets "lost"
  back and writes nothing. Owners must be unique per daemon process.
- ``complete_many`` finishes a batch (and writes its audit rows) in one
  transaction: the group commit of DESIGN "Daemon concurrency";
  ``enqueue_many`` is the same for an intake that batches submissions.
- Attachment bytes live in their own table and are read one message at a
  time (``notification``); claims carry only their names and sizes.

**Which commits wait for the disk (SQLite).** An ``enqueue`` is acknowledged to
its client, so its commit is synced (``synchronous=FULL``, SQLite's default).
The daemon's own bookkeeping (claims, renewals, routes, results, releases)
commits with ``synchronous=NORMAL`` (``_write_unsynced``): in WAL mode that
commit is in the operating system's hands when it returns, so a killed
process (kill -9, a crash) loses nothing; only a power loss or kernel crash
can undo the last of them, and then the message is sent again (same
Message-ID), never lost: the WAL is one file, so the next synced intake
commit makes every earlier one durable too. It saves an fsync per results
group, the other writer the intake waited for (``bench/dispatch.py``,
docs/dispatch.md). PostgreSQL commits as configured.

Times are the daemon's clock (``now=`` for tests); leases should be much
longer than the clock skew between hosts sharing a PostgreSQL store.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    String,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError

from reconciler.config.desired import canonical_json
from reconciler.state import schema as t
from reconciler.state.audit import clipped, insert_entries
from reconciler.state.base import (
    AuditEntry,
    Completion,
    CompletionResult,
    EnqueueRequest,
    EnqueueResult,
    LeaseLost,
    NotificationLike,
    OutboxMessage,
    OutboxState,
    RoutingSnapshot,
    UnknownMessage,
)
from reconciler.state.driver import DriverStatement
from reconciler.state.location import Location, now_or, translated, upsert
from reconciler.state.outbox_control import QueueControl
from reconciler.state.outbox_rows import (
    CHUNK,
    COMPLETE_KEYS,
    ROW_KEYS,
    Prepared,
    Row,
    att,
    complete_statement,
    messages,
    o,
    route_values,
)

_LEASED = OutboxState.LEASED.value


def _enqueue_statement(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id, built once: parameters are
    passed at execution so SQLAlchemy's compiled-statement cache applies."""
    return (upsert(dialect)(o)
            .on_conflict_do_nothing(index_elements=[o.c.namespace, o.c.idempotency_key])
            .returning(o.c.id))


_CLAIM_KEYS = ("b_now", "b_owner", "b_limit", "b_expires", "b_queued", "b_retry", "b_leased")


def _claim_statement() -> Any:
    """Lease the oldest due rows in one statement, all of its values bound (see claim):
    ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING *``."""
    now = bindparam("b_now", type_=t.UtcDateTime())
    leased = bindparam("b_leased", type_=String())
    due = or_(
        and_(or_(o.c.state == bindparam("b_queued", type_=String()),
                 o.c.state == bindparam("b_retry", type_=String())),
             o.c.next_attempt_at <= now),
        and_(o.c.state == leased, o.c.lease_expires_at <= now),
    )
    pick = (select(o.c.id).where(due).order_by(o.c.next_attempt_at, o.c.id)
            .limit(bindparam("b_limit", type_=Integer()))
            # Written out: SQLite would add an OFFSET of its own as an unnamed parameter.
            .offset(literal_column("0"))
            .with_for_update(skip_locked=True))
    return (
        update(o).where(o.c.id.in_(pick))
        .values(
            state=leased, lease_owner=bindparam("b_owner", type_=String()),
            lease_expires_at=bindparam("b_expires", type_=t.UtcDateTime()),
            attempts=o.c.attempts + literal_column("1"),
            first_attempt_at=func.coalesce(o.c.first_attempt_at, now),
            updated_at=now,
        )
        .returning(*o.c)
    )


class SqlOutbox(QueueControl):
    """Reached as ``store.outbox``; the operator's actions are in :class:`QueueControl`."""

    def __init__(self, engine: Engine, writer: Engine, loc: Location) -> None:
        super().__init__(engine, writer, loc)
        self._enqueue = DriverStatement(_enqueue_statement(engine.dialect.name),
                                        engine.dialect, ROW_KEYS)
        self._complete = DriverStatement(complete_statement(), engine.dialect,
                                         COMPLETE_KEYS)
        self._claim = DriverStatement(_claim_statement(), engine.dialect, _CLAIM_KEYS,
                                      returns=list(o.c))

    @contextmanager
    def _write_unsynced(self) -> Iterator[Connection]:
        """A write transaction whose commit does not wait for the disk on SQLite (see the
        module doc); the connection's own setting is restored for the next user."""
        if self._loc.sqlite_path is None:
            with self._write() as conn:
                yield conn
            return
        with translated(self._loc), self._writer.connect() as conn:
            raw = conn.connection.dbapi_connection
            level = _pragma(raw, "PRAGMA synchronous")
            _pragma(raw, "PRAGMA synchronous=NORMAL")
            try:
                with conn.begin():
                    yield conn
            finally:
                try:
                    _pragma(raw, f"PRAGMA synchronous={level}")
                except DBAPIError:
                    # Never hand an intake a connection that would not sync its commit.
                    conn.invalidate()
                    raise

    # -- intake ---------------------------------------------------------------

    def enqueue(self, notification: NotificationLike, *, namespace: str,
                idempotency_key: str | None, routing: RoutingSnapshot | None = None,
                now: datetime | None = None) -> EnqueueResult:
        """Store a notification; durable (committed) when this returns.

        A key already stored in ``namespace`` returns that message's id with
        ``duplicate=True`` and writes nothing, whatever the payload.
        """
        [result] = self.enqueue_many(
            [EnqueueRequest(notification, namespace, idempotency_key, routing)], now=now)
        return result

    def enqueue_many(self, requests: Sequence[EnqueueRequest], *,
                     now: datetime | None = None) -> list[EnqueueResult]:
        """Store several notifications in one transaction (intake group commit).

        An intake that gathers concurrent submissions for a few milliseconds
        and acknowledges each only after this returns keeps "accepted means
        stored" while paying for one commit instead of one per message.
        Results are in request order; a key repeated within the batch is a
        duplicate of its first occurrence.
        """
        prepared = [Prepared.of(r, now_or(now)) for r in requests]
        results: list[EnqueueResult] = []
        with self._write() as conn:
            for item in prepared:
                results.append(self._insert(conn, item))
        return results

    def _insert(self, conn: Connection, item: Prepared) -> EnqueueResult:
        row = item.row
        returned = self._enqueue.execute(conn, row)
        if returned is None:
            # The conflicting insert has committed (PostgreSQL waits for it), so
            # this read-committed look finds it.
            existing = conn.execute(select(o.c.id).where(
                o.c.namespace == row["namespace"],
                o.c.idempotency_key == row["idempotency_key"],
            )).scalar_one()
            return EnqueueResult(existing, True)
        new_id = returned[0]
        # One row per statement: executemany would hold every file's parameters
        # at once, and they can be 20 MB each.
        for f in item.files:
            conn.execute(insert(att).values(message_id=new_id, **f))
        return EnqueueResult(new_id, False, item.leased(new_id))

    # -- the daemon's side --------------------------------------------------

    def claim(self, owner: str, limit: int, lease_seconds: float,
              now: datetime | None = None) -> list[OutboxMessage]:
        """Lease up to ``limit`` due messages to ``owner``, oldest due first.

        Due: queued or retry_wait with ``next_attempt_at <= now``, or leased
        with an expired lease (its daemon died or hung).
        """
        if not owner:
            raise ValueError("owner is empty")
        if limit <= 0:
            return []
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        now = now_or(now)
        values = {"b_now": now, "b_owner": owner, "b_limit": limit,
                  "b_expires": now + timedelta(seconds=lease_seconds),
                  "b_queued": OutboxState.QUEUED.value,
                  "b_retry": OutboxState.RETRY_WAIT.value, "b_leased": _LEASED}
        with self._write_unsynced() as conn:
            return messages(conn, [Row(*r) for r in self._claim.rows(conn, values)])

    def renew(self, owner: str, ids: Sequence[int], lease_seconds: float,
              now: datetime | None = None) -> list[int]:
        """Extend leases still held (a slow send); return the ids renewed."""
        now = now_or(now)
        renewed: list[int] = []
        with self._write_unsynced() as conn:
            for i in range(0, len(ids), CHUNK):
                stmt = (update(o)
                        .where(o.c.id.in_(ids[i : i + CHUNK]), o.c.lease_owner == owner,
                               o.c.state == _LEASED)
                        .values(lease_expires_at=now + timedelta(seconds=lease_seconds),
                                updated_at=now)
                        .returning(o.c.id))
                renewed.extend(conn.execute(stmt).scalars())
        return sorted(renewed)

    def route(self, id: int, owner: str, routing: RoutingSnapshot,
              decision: Mapping[str, Any] | None = None) -> RoutingSnapshot:
        """Record the routing decision once (O12), with its trace (O13); return the
        one that stands.

        A message routed earlier (at intake, or on an attempt before a
        retry) keeps that decision and it is returned instead.
        """
        with self._write_unsynced() as conn:
            conn.execute(
                update(o)
                .where(o.c.id == id, o.c.lease_owner == owner, o.c.state == _LEASED,
                       o.c.config_revision.is_(None))
                .values(config_revision=routing.config_revision, server=routing.server,
                        decision=canonical_json(decision) if decision else None)
            )
            row = conn.execute(select(o.c.config_revision, o.c.server, o.c.lease_owner,
                                      o.c.state).where(o.c.id == id)).first()
        if row is None:
            raise UnknownMessage(f"there is no outbox message {id}")
        if row.lease_owner != owner or row.state != _LEASED:
            raise LeaseLost(f"outbox message {id} is not leased to {owner}")
        return RoutingSnapshot(row.config_revision, row.server)

    def complete(self, id: int, owner: str, state: OutboxState, *, error: str | None = None,
                 audit: Sequence[AuditEntry] = (), now: datetime | None = None) -> bool:
        """Finish a leased message as sent / failed / ignored. False: lease lost."""
        if not OutboxState(state).terminal:
            raise ValueError(f"complete() takes sent, failed or ignored, not {state}")
        result = self.complete_many(owner, [Completion(id, state, error)], audit=audit, now=now)
        return bool(result.done)

    def schedule_retry(self, id: int, owner: str, next_attempt_at: datetime, error: str | None,
                       *, audit: Sequence[AuditEntry] = (),
                       now: datetime | None = None) -> bool:
        """Give a leased message back until ``next_attempt_at``. False: lease lost."""
        done = self.complete_many(
            owner, [Completion(id, OutboxState.RETRY_WAIT, error, next_attempt_at)],
            audit=audit, now=now,
        )
        return bool(done.done)

    def complete_many(self, owner: str, completions: Sequence[Completion], *,
                      audit: Sequence[AuditEntry] = (),
                      now: datetime | None = None) -> CompletionResult:
        """Record a batch of results and their audit rows in one transaction.

        Results for messages no longer leased to ``owner`` are skipped and
        listed as ``lost``; the audit rows are written regardless, because the
        attempt they describe did happen.
        """
        by_id = _checked(completions)
        now = now_or(now)
        if self._loc.sqlite_path is not None:
            held = self._complete_each(owner, by_id, audit, now)
        else:
            held = self._complete_grouped(owner, by_id, audit, now)
        return CompletionResult(
            done=tuple(i for i in by_id if i in held),
            lost=tuple(i for i in by_id if i not in held),
        )

    def _complete_each(self, owner: str, by_id: Mapping[int, Completion],
                       audit: Sequence[AuditEntry], now: datetime) -> set[int]:
        """SQLite: one precompiled statement per result (state.driver), the driver's
        execute instead of Core's statement building, which outweighed SQLite's own
        work in a group of one or two (a Graph mailbox's pace). One writer at a time:
        no row locks to take in any order."""
        held: set[int] = set()
        with self._write_unsynced() as conn:
            for c in by_id.values():
                routing = c.routing
                found = self._complete.execute(conn, {
                    "b_id": c.id, "b_owner": owner, "b_leased": _LEASED,
                    "b_state": OutboxState(c.state).value,
                    "b_error": clipped(c.error) if c.error is not None else None,
                    "b_next": c.next_attempt_at, "b_now": now,
                    "b_rev": routing.config_revision if routing else None,
                    "b_server": routing.server if routing else None,
                    "b_decision": canonical_json(c.decision) if c.decision else None})
                if found is not None:
                    held.add(c.id)
            insert_entries(conn, audit, now, events=self.delivery_events)
        return held

    def _complete_grouped(self, owner: str, by_id: Mapping[int, Completion],
                          audit: Sequence[AuditEntry], now: datetime) -> set[int]:
        """PostgreSQL: one UPDATE per kind of ending; its rows are locked in the same
        order as renew's (one statement over an id list each), so the two cannot
        deadlock, as row-by-row updates in another order did."""
        # Usually the whole batch ends alike (sent, no error): one UPDATE per kind of
        # ending, fenced by the lease in its WHERE and answering with the rows it
        # took. Row locks (PostgreSQL) or the write lock (SQLite) keep a claim from
        # moving a lease in between; a row that lost its lease is simply not matched.
        # The route taken (O13) is part of the key: a batch usually shares it too.
        endings: dict[tuple[Any, ...], list[int]] = {}
        for c in by_id.values():
            error = clipped(c.error) if c.error is not None else None
            route = (c.routing.config_revision, c.routing.server) if c.routing else (None, None)
            key = (OutboxState(c.state).value, error, c.next_attempt_at, *route,
                   canonical_json(c.decision) if c.decision else None)
            endings.setdefault(key, []).append(c.id)
        held: set[int] = set()
        with self._write_unsynced() as conn:
            for (state, error, next_at, rev, server, decision), group in endings.items():
                for i in range(0, len(group), CHUNK):
                    stmt = (
                        update(o)
                        .where(o.c.id.in_(group[i : i + CHUNK]), o.c.lease_owner == owner,
                               o.c.state == _LEASED)
                        .values(state=state, last_error=error,
                                next_attempt_at=func.coalesce(
                                    bindparam("b_next", next_at, type_=t.UtcDateTime()),
                                    o.c.next_attempt_at),
                                lease_owner=None, lease_expires_at=None, updated_at=now,
                                **route_values(rev, server, decision))
                        .returning(o.c.id)
                    )
                    held.update(conn.execute(stmt).scalars())
            insert_entries(conn, audit, now, events=self.delivery_events)
        return held

    def release(self, owner: str, ids: Sequence[int] | None = None,
                now: datetime | None = None) -> int:
        """Put ``owner``'s leased messages (all, or ``ids``) back, due at once.

        For a graceful shutdown or a batch the worker will not get to: the
        claim that leased them is undone, so it does not count as an attempt.
        """
        now = now_or(now)
        first = o.c.attempts <= 1
        stmt = (
            update(o)
            .where(o.c.lease_owner == owner, o.c.state == _LEASED)
            .values(
                state=case((first, OutboxState.QUEUED.value),
                           else_=OutboxState.RETRY_WAIT.value),
                attempts=case((o.c.attempts > 0, o.c.attempts - 1), else_=0),
                first_attempt_at=case((first, None), else_=o.c.first_attempt_at),
                lease_owner=None, lease_expires_at=None, updated_at=now,
            )
        )
        if ids is not None:
            stmt = stmt.where(o.c.id.in_(list(ids)))
        with self._write_unsynced() as conn:
            return conn.execute(stmt).rowcount

    # -- reading --------------------------------------------------------------

    def depth(self, *, finished: bool = False) -> dict[OutboxState, int]:
        """Messages per state (for metrics): queued, leased and retry_wait, plus
        sent / failed / ignored when ``finished``.

        Finished messages pile up until purged; counting them reads the whole
        table, which a metrics scrape every few seconds should not do.
        """
        states = [s for s in OutboxState if finished or not s.terminal]
        out = dict.fromkeys(states, 0)
        q = select(o.c.state, func.count()).group_by(o.c.state)
        if not finished:
            q = q.where(o.c.state.in_([s.value for s in states]))
        with self._read() as conn:
            for state, count in conn.execute(q):
                out[OutboxState(state)] = count
        return out

    def get(self, id: int) -> OutboxMessage | None:
        return self._first(o.c.id == id)

    def find(self, namespace: str, idempotency_key: str) -> OutboxMessage | None:
        """The message stored under an idempotency key, for "what became of it"."""
        return self._first(o.c.namespace == namespace, o.c.idempotency_key == idempotency_key)

    def _first(self, *where: Any) -> OutboxMessage | None:
        with self._read() as conn:
            found = messages(conn, conn.execute(select(o).where(*where)).all())
        return found[0] if found else None

    def notification(self, id: int) -> dict[str, Any]:
        """The notification as enqueued, attachment bytes back in place as ``bytes``.

        Loaded per message, so a worker holds one message's files at a time.
        """
        with self._read() as conn, conn.begin():
            text = conn.execute(select(o.c.payload).where(o.c.id == id)).scalar_one_or_none()
            if text is None:
                raise UnknownMessage(f"there is no outbox message {id}")
            data = dict(conn.execute(
                select(att.c.position, att.c.data).where(att.c.message_id == id)).all())
        payload: dict[str, Any] = json.loads(text)
        if data:
            payload["attachments"] = [
                {**item, "data": bytes(data[position])}
                for position, item in enumerate(payload["attachments"])
            ]
        return payload

    def purge(self, updated_before: datetime) -> int:
        """Delete finished messages (and their files) last touched before the date."""
        finished = [s.value for s in OutboxState if s.terminal]
        stmt = delete(o).where(o.c.state.in_(finished), o.c.updated_at < updated_before)
        with self._write() as conn:
            return conn.execute(stmt).rowcount


def _pragma(raw: Any, sql: str) -> int | None:
    """A PRAGMA on the driver's connection, outside SQLAlchemy's transaction handling
    (its autobegin would take the write lock first); its value, if it has one."""
    try:
        row = raw.execute(sql).fetchone()
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
    return int(row[0]) if row else None


def _checked(completions: Sequence[Completion]) -> dict[int, Completion]:
    by_id: dict[int, Completion] = {}
    for c in completions:
        state = OutboxState(c.state)
        if c.id in by_id:
            raise ValueError(f"outbox message {c.id} appears twice in one batch")
        if state is OutboxState.RETRY_WAIT and c.next_attempt_at is None:
            raise ValueError(f"retry of outbox message {c.id} needs next_attempt_at")
        if not (state.terminal or state is OutboxState.RETRY_WAIT):
            raise ValueError(f"a leased message ends sent, failed, ignored or retry_wait, "
                             f"not {state}")
        by_id[c.id] = c
    return by_id
