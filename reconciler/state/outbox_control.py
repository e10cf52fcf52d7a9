"""Queue control (SPEC O13): what an operator does to outbox messages, Postfix's
``mailq`` / ``postqueue -f`` / ``postsuper -h -H -d`` for this outbox.

Every action is one transaction: the rows are read locked (``FOR UPDATE`` on
PostgreSQL; SQLite's write lock), changed only if they are still in a state
the action applies to, and one audit row per message changed names the actor.

Races with the workers are settled by the row state alone. An action never
touches a ``leased`` message (one a worker may be sending right now), and a
claim never takes a ``held`` or ``cancelled`` one, so of a cancel and a claim
exactly one wins: either the cancel lands first and no worker ever sees the
message, or the message is in flight and the cancel reports that instead of
pretending. Callers wait for the attempt to end and try again (``cli.outbox``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, case, func, select, union_all, update

from reconciler.config.desired import canonical_json
from reconciler.state.audit import insert_entries
from reconciler.state.base import (
    AuditEntry,
    AuditStatus,
    OutboxMessage,
    OutboxState,
    RoutingSnapshot,
)
from reconciler.state.location import StoreArea, now_or
from reconciler.state.outbox_rows import messages, o

S = OutboxState
WAITING = (S.QUEUED, S.RETRY_WAIT)  # not leased, not finished, not held


@dataclass(frozen=True, slots=True)
class QueueFilter:
    """Which messages: every field given must hold (empty ``ids``/``states``: any)."""

    ids: tuple[int, ...] = ()
    states: tuple[OutboxState, ...] = ()
    namespace: str | None = None
    # The namespaces a limited caller may touch (SPEC S3); None: every namespace.
    namespaces: tuple[str, ...] | None = None
    server: str | None = None
    created_before: datetime | None = None
    recipient: str | None = None  # a whole address in to, cc or bcc, any case


@dataclass(frozen=True, slots=True)
class ControlResult:
    """What an action did: the ids changed, and each id named in the filter that was
    left as it was with its state then (None: there is no such message)."""

    changed: tuple[int, ...]
    refused: tuple[tuple[int, OutboxState | None], ...] = ()


def _where(f: QueueFilter) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if f.ids:
        conds.append(o.c.id.in_(list(f.ids)))
    if f.states:
        conds.append(o.c.state.in_([S(s).value for s in f.states]))
    if f.namespace:
        conds.append(o.c.namespace == f.namespace)
    if f.namespaces is not None:
        conds.append(o.c.namespace.in_(f.namespaces))
    if f.server:
        conds.append(o.c.server == f.server)
    if f.created_before:
        conds.append(o.c.created_at <= f.created_before)
    if f.recipient:
        # Canonical JSON writes each address as "email":"..."; this narrows in SQL,
        # the exact field check is done on the rows found (_has_recipient).
        needle = canonical_json({"email": f.recipient.strip().lower()})[1:-1]
        escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conds.append(func.lower(o.c.payload).like(f"%{escaped}%", escape="\\"))
    return conds


def _has_recipient(message: OutboxMessage, address: str) -> bool:
    wanted = address.strip().lower()
    return any(str(m.get("email", "")).lower() == wanted
               for part in ("to", "cc", "bcc") for m in message.payload.get(part) or ()
               if isinstance(m, Mapping))


class QueueControl(StoreArea):
    """The operator's half of ``store.outbox`` (SqlOutbox inherits it)."""

    def search(self, where: QueueFilter, *, limit: int | None = 100,
               offset: int = 0) -> list[OutboxMessage]:
        """Messages matching ``where``, oldest first (by id)."""
        q = select(o).where(*_where(where)).order_by(o.c.id).offset(offset)
        with self._read() as conn:
            rows = conn.execute(q if limit is None else q.limit(limit)).all()
            found = sorted(messages(conn, rows), key=lambda m: m.id)
        if where.recipient:
            found = [m for m in found if _has_recipient(m, where.recipient)]
        return found

    def page(self, where: QueueFilter, *, after: int | None = None,
             limit: int = 50) -> list[OutboxMessage]:
        """Up to ``limit`` messages matching ``where`` with ``id > after``, oldest first.

        Keyset paging (the console): each page is an index walk that stops after
        ``limit`` rows however deep it is, where ``search``'s offset counts every
        skipped row. With several ``namespaces`` each is walked on its own
        ``(namespace, state, id)`` index and the first ``limit`` of the walks kept:
        ``namespace IN (...) ORDER BY id`` would sort every match first.
        """
        q = select(o).where(*_where(replace(where, namespaces=None)))
        if after is not None:
            q = q.where(o.c.id > after)
        scoped = sorted(set(where.namespaces)) if where.namespaces is not None else None
        if scoped is not None and not scoped:
            return []
        if scoped is not None and len(scoped) > 1:
            walks = [select(q.where(o.c.namespace == ns).order_by(o.c.id).limit(limit)
                            .subquery()) for ns in scoped]
            merged = union_all(*walks).subquery()
            q = select(merged).order_by(merged.c.id).limit(limit)
        else:
            if scoped is not None:
                q = q.where(o.c.namespace == scoped[0])
            q = q.order_by(o.c.id).limit(limit)
        with self._read() as conn:
            rows = conn.execute(q).all()
            found = sorted(messages(conn, rows), key=lambda m: m.id)
        if where.recipient:
            found = [m for m in found if _has_recipient(m, where.recipient)]
        return found

    def count(self, where: QueueFilter) -> dict[OutboxState, int]:
        """How many messages match ``where``, per state (every state, zeros included)."""
        out = dict.fromkeys(S, 0)
        if where.recipient:  # exact only after reading the payloads
            for m in self.search(where, limit=None):
                out[m.state] += 1
            return out
        q = select(o.c.state, func.count()).where(*_where(where)).group_by(o.c.state)
        with self._read() as conn:
            for state, n in conn.execute(q):
                out[S(state)] = n
        return out

    def hold(self, where: QueueFilter, *, actor: str, reason: str = "",
             now: datetime | None = None) -> ControlResult:
        """Stop queued / deferred messages from being sent until released."""
        return self._act(where, WAITING, {"state": S.HELD.value}, AuditStatus.SEND_HELD,
                         actor, reason or "held by an operator", now)

    def release_held(self, where: QueueFilter, *, actor: str, reason: str = "",
                     now: datetime | None = None) -> ControlResult:
        """Put held messages back; each is due when it was due before the hold."""
        state = case((o.c.attempts == 0, S.QUEUED.value), else_=S.RETRY_WAIT.value)
        return self._act(where, (S.HELD,), {"state": state}, AuditStatus.SEND_RELEASED,
                         actor, reason or "released by an operator", now)

    def retry_now(self, where: QueueFilter, *, actor: str, reason: str = "",
                  now: datetime | None = None) -> ControlResult:
        """Make queued / deferred messages due now (``postqueue -f``)."""
        now = now_or(now)
        return self._act(where, WAITING, {"next_attempt_at": now}, AuditStatus.SEND_RETRY_NOW,
                         actor, reason or "retry now, asked by an operator", now)

    def cancel(self, where: QueueFilter, *, actor: str, reason: str,
               now: datetime | None = None) -> ControlResult:
        """Finish queued, deferred or held messages as cancelled: never sent."""
        return self._act(where, (*WAITING, S.HELD), {"state": S.CANCELLED.value},
                         AuditStatus.SEND_CANCELLED, actor, reason, now)

    def requeue(self, where: QueueFilter, to: RoutingSnapshot, *, actor: str,
                reason: str = "", now: datetime | None = None) -> ControlResult:
        """Route waiting (or held) messages through ``to`` instead; due now unless held.

        The caller checks that ``to.server`` exists and is enabled at
        ``to.config_revision`` in each message's namespace.
        """
        now = now_or(now)
        decision = {"via": "requeue", "server": to.server, "actor": actor,
                    "reason": reason or None, "rules": [], "alternates": []}
        values = {"server": to.server, "config_revision": to.config_revision,
                  "decision": canonical_json(decision),
                  "next_attempt_at": case((o.c.state == S.HELD.value, o.c.next_attempt_at),
                                          else_=now)}
        return self._act(where, (*WAITING, S.HELD), values, AuditStatus.SEND_REQUEUED, actor,
                         reason or f"requeued through server {to.server}", now,
                         {"toServer": to.server})

    def _act(self, where: QueueFilter, allowed: tuple[OutboxState, ...],
             values: Mapping[str, Any], status: AuditStatus, actor: str, reason: str,
             now: datetime | None, details: Mapping[str, Any] | None = None) -> ControlResult:
        if not actor.strip():
            raise ValueError("an operator action needs an actor")
        if not (where.ids or where.server or where.states or where.namespace):
            raise ValueError("name the messages: ids, a server, a namespace or states")
        now = now_or(now)
        states = [s.value for s in allowed if not where.states or s in where.states]
        with self._write() as conn:
            rows = conn.execute(
                select(o.c.id, o.c.namespace, o.c.module, o.c.server, o.c.state, o.c.attempts)
                .where(*_where(where), o.c.state.in_(states)).order_by(o.c.id)
                .with_for_update()).all()
            ids = [r.id for r in rows]
            if ids:
                conn.execute(update(o).where(o.c.id.in_(ids))
                             .values(**values, updated_at=now))
            insert_entries(conn, [
                AuditEntry(status, reason, r.namespace, r.server, attempt=r.attempts or None,
                           outbox_id=r.id, module=r.module,
                           details={"actor": actor, "previousState": r.state, **(details or {})})
                for r in rows], now)
            refused = _refused(conn, where.ids, set(ids), where.namespaces)
        return ControlResult(tuple(ids), refused)


def _refused(conn: Connection, named: tuple[int, ...], changed: set[int],
             namespaces: tuple[str, ...] | None) -> tuple[tuple[int, OutboxState | None], ...]:
    left = [i for i in dict.fromkeys(named) if i not in changed]
    if not left:
        return ()
    q = select(o.c.id, o.c.state).where(o.c.id.in_(left))
    if namespaces is not None:  # another namespace's message is as absent as none
        q = q.where(o.c.namespace.in_(namespaces))
    states = dict(conn.execute(q).all())
    return tuple((i, S(states[i]) if i in states else None) for i in left)
