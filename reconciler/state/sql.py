"""The state store over SQLAlchemy Core: one implementation for SQLite and PostgreSQL.

Concurrency, in layers:

- ``lock()`` is the apply lock users see: a row in ``locks`` inserted in its
  own committed transaction, so it is visible to every process and names its
  holder; the primary key makes a second insert fail.
- ``commit()`` is safe even without that lock: it re-checks the base revision
  inside a write transaction that excludes other writers (``state.commit``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    and_,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from reconciler.config.desired import CanonicalResource, ResourceKey, canonical_json
from reconciler.state import bindings, chain, codec, history_pages
from reconciler.state import schema as t
from reconciler.state.audit import SqlAudit
from reconciler.state.base import Audit, LockInfo, LockTimeout, Outbox, UnknownRevision
from reconciler.state.commit import Live, rejected, write_revision
from reconciler.state.contract import Incoming, Leases, SyncStates, Tokens
from reconciler.state.incoming import SqlIncoming
from reconciler.state.leases import SqlLeases
from reconciler.state.location import (
    StoreArea,
    create_store_engine,
    explain,
    parse_location,
    require_existing,
    require_initialised,
    translated,
    upsert,
    writer_engine,
)
from reconciler.state.migrate import migrate
from reconciler.state.outbox import SqlOutbox
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
from reconciler.state.sync import SqlSync
from reconciler.state.tokens import SqlTokens

_CHUNK = 500  # revision numbers per IN (...) when loading history
_POLL_MAX_S = 0.5

rv = t.resource_versions

class SqlStore(StoreArea):
    """Use :func:`reconciler.state.open_store` to get one."""

    def __init__(self, location: str, *, create: bool = True) -> None:
        loc = parse_location(location)
        if not create:
            require_existing(loc)
        engine = create_store_engine(loc)
        super().__init__(engine, writer_engine(engine), loc)
        self.location = loc.display  # printable: a PostgreSQL password is hidden
        self.dialect = engine.dialect.name
        try:
            if not create:
                require_initialised(engine, loc)
            with translated(loc):
                self.schema_revision = migrate(engine, loc)
                with engine.connect() as conn:
                    self.lineage: str = conn.execute(select(t.meta.c.lineage)).scalar_one()
        except BaseException:
            engine.dispose()
            raise
        # Typed as the contract's areas: what every caller may rely on.
        outbox, audit, incoming = (SqlOutbox(engine, self._writer, loc),
                                   SqlAudit(engine, self._writer, loc),
                                   SqlIncoming(engine, self._writer, loc))
        self._writers: tuple[StoreArea, ...] = (outbox, audit, incoming)  # of audit rows
        self.outbox: Outbox = outbox
        self.audit: Audit = audit
        self.incoming: Incoming = incoming
        self.tokens: Tokens = SqlTokens(engine, self._writer, loc)
        self.leases: Leases = SqlLeases(loc, self.lineage)
        self.sync: SyncStates = SqlSync(engine, self._writer, loc)

    @property
    def delivery_events(self) -> bool:
        return self._writers[0].delivery_events

    @delivery_events.setter
    def delivery_events(self, on: bool) -> None:
        for area in self._writers:
            area.delivery_events = on

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqlStore({self.location!r})"

    def head(self) -> int:
        with self._read() as conn:
            return _head(conn)

    def last_revision(self, kind: RevisionKind) -> int:
        with self._read() as conn:
            q = select(func.max(t.revisions.c.number)).where(t.revisions.c.kind == kind.value)
            return conn.execute(q).scalar_one() or 0

    # -- live state -----------------------------------------------------------

    def snapshot(self, revision: int | None = None) -> LiveState:
        with self._read() as conn:
            head = _head(conn)
            if revision is None:
                q = select(
                    t.resources.c.kind, t.resources.c.namespace, t.resources.c.name,
                    t.resources.c.api_version, t.resources.c.labels, t.resources.c.spec,
                )
                rows = {ResourceKey(r[0], r[1], r[2]): (r[3], r[4], r[5])
                        for r in conn.execute(q.order_by(t.resources.c.kind,
                                                         t.resources.c.namespace,
                                                         t.resources.c.name))}
                # parsed when read: a plan parses only the rows it finds changed
                return LiveState(self.lineage, head, codec.LiveRows(_sorted(rows)))
            _check_number(revision, head, allow_zero=True)
            latest = (
                select(rv.c.kind, rv.c.namespace, rv.c.name,
                       func.max(rv.c.revision).label("revision"))
                .where(rv.c.revision <= revision)
                .group_by(rv.c.kind, rv.c.namespace, rv.c.name)
                .subquery()
            )
            q = (
                select(rv.c.kind, rv.c.namespace, rv.c.name, rv.c.body)
                .join(latest, and_(
                    rv.c.kind == latest.c.kind, rv.c.namespace == latest.c.namespace,
                    rv.c.name == latest.c.name, rv.c.revision == latest.c.revision,
                ))
                .where(rv.c.body.is_not(None))
            )
            found = []
            for r in conn.execute(q):
                res = codec.resource_from_body(ResourceKey(r[0], r[1], r[2]), r[3])
                assert res is not None
                found.append(res)
            return _live(self.lineage, revision, found)

    # -- credential bindings (S2) ----------------------------------------------

    def credential_bindings(self) -> frozenset[tuple[str, str]]:
        with self._read() as conn:
            return bindings.read_pairs(conn)

    # -- status (P7: never part of the spec, the snapshot or any digest) -------

    def status_get(self, key: ResourceKey) -> dict[str, Any]:
        with self._read() as conn:
            q = select(t.status.c.status).where(*_key_is(t.status, key))
            text = conn.execute(q).scalar_one_or_none()
        return json.loads(text) if text is not None else {}

    def statuses(self) -> dict[ResourceKey, dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(select(t.status.c.kind, t.status.c.namespace, t.status.c.name,
                                       t.status.c.status)).all()
        return {ResourceKey(r[0], r[1], r[2]): json.loads(r[3]) for r in rows}

    def status_put(self, key: ResourceKey, status: Mapping[str, Any]) -> None:
        row = {**key._asdict(), "status": canonical_json(dict(status)),
               "updated_at": datetime.now(UTC)}
        with self._write() as conn:
            stmt = upsert(conn.dialect.name)(t.status).values(row)
            stmt = stmt.on_conflict_do_update(
                index_elements=[t.status.c.kind, t.status.c.namespace, t.status.c.name],
                set_={"status": stmt.excluded.status, "updated_at": stmt.excluded.updated_at},
            )
            conn.execute(stmt)

    # -- the apply lock -------------------------------------------------------

    @contextmanager
    def lock(
        self, holder: str, operation: str, *, timeout: float, plan_digest: str | None = None,
        on_wait: Callable[[LockInfo], None] | None = None,
    ) -> Iterator[LockInfo]:
        """Hold the store's apply lock; wait up to ``timeout`` seconds for it.

        Not re-entrant: a second ``lock()`` in the same process waits like any
        other. ``on_wait`` hears of each holder this call waits for, once per
        holder. Raises :class:`LockTimeout` naming the current holder.
        """
        info = self._acquire(holder, operation, timeout, plan_digest, on_wait)
        try:
            yield info
        finally:
            with self._write() as conn:
                conn.execute(delete(t.locks).where(t.locks.c.id == info.id))

    def _acquire(
        self, holder: str, operation: str, timeout: float, plan_digest: str | None,
        on_wait: Callable[[LockInfo], None] | None,
    ) -> LockInfo:
        deadline = time.monotonic() + max(timeout, 0.0)
        delay = 0.02
        told: str | None = None
        while True:
            info = LockInfo(str(uuid.uuid4()), holder, operation, datetime.now(UTC), plan_digest)
            if self._try_insert_lock(info):
                return info
            current = self.current_lock()
            if current is None:
                continue  # released between our insert and our look; try again now
            if on_wait is not None and current.id != told:
                told = current.id
                on_wait(current)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeout(current)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX_S)

    def _try_insert_lock(self, info: LockInfo) -> bool:
        try:
            with self._writer.begin() as conn:
                conn.execute(insert(t.locks).values(
                    slot=1, id=info.id, holder=info.holder, operation=info.operation,
                    acquired_at=info.acquired_at, plan_digest=info.plan_digest,
                ))
        except IntegrityError:
            return False
        except SQLAlchemyError as exc:
            raise explain(exc, self._loc) from None
        return True

    def current_lock(self) -> LockInfo | None:
        with self._read() as conn:
            row = conn.execute(select(t.locks)).first()
        return codec.from_row(LockInfo, row) if row is not None else None

    def force_unlock(self, lock_id: str) -> LockInfo | None:
        """Remove a lock left by a crashed process; return what it was, or None."""
        with self._write() as conn:
            row = conn.execute(select(t.locks).where(t.locks.c.id == lock_id)).first()
            if row is None:
                return None
            conn.execute(delete(t.locks).where(t.locks.c.id == lock_id))
        return codec.from_row(LockInfo, row)

    # -- commit ---------------------------------------------------------------

    def commit(self, changes: Sequence[Change], meta: RevisionMeta, *,
               base_revision: int) -> Revision:
        changes = list(changes)
        codec.check_changes(changes)
        live: Live = {}
        try:
            with self._writer.begin() as conn:
                return write_revision(conn, self.lineage, changes, meta, base_revision, live)
        except IntegrityError as exc:
            raise rejected(changes, live, exc) from None
        except SQLAlchemyError as exc:
            raise explain(exc, self._loc) from None

    # -- history --------------------------------------------------------------

    def revisions(self, flt: HistoryFilter | None = None) -> list[Revision]:
        """Matching revisions, newest first, with their changes and resource bodies."""
        q = _filtered(flt or HistoryFilter())
        with self._read() as conn:
            rows = conn.execute(q).all()
            bodies = _bodies(conn, [r.number for r in rows])
        return [_revision(r, bodies.get(r.number, {})) for r in rows]

    def revision(self, number: int) -> Revision:
        with self._read() as conn:
            _check_number(number, _head(conn), allow_zero=False)
            row = conn.execute(select(t.revisions).where(t.revisions.c.number == number)).first()
            if row is None:
                raise UnknownRevision(
                    f"revision {number} is missing from the store although the head is past "
                    "it; run `reconcile history verify`."
                )
            bodies = _bodies(conn, [number])
        return _revision(row, bodies.get(number, {}))

    def revision_summaries(self, *, before: int | None = None, limit: int = 50,
                           namespaces: Sequence[str] | None = None) -> list[RevisionSummary]:
        """Newest first, below ``before``, without bodies (``state.history_pages``)."""
        with self._read() as conn:
            return history_pages.summaries(conn, before=before, limit=limit,
                                           namespaces=namespaces)

    def verify(self) -> ChainCheck:
        """Recompute the hash chain from what is stored (SPEC P4)."""
        with self._read() as conn:
            head, head_hash = conn.execute(select(t.meta.c.head, t.meta.c.head_hash)).one()
            return chain.verify(self.lineage, _stored_revisions(conn), head, head_hash)


# -- helpers (module level: they need a connection, not the store) -------------


def _head(conn: Connection) -> int:
    return conn.execute(select(t.meta.c.head).where(t.meta.c.id == 1)).scalar_one()


def _check_number(number: int, head: int, *, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if low <= number <= head:
        return
    if head == 0:
        raise UnknownRevision(f"there is no revision {number}: nothing has been applied yet")
    raise UnknownRevision(
        f"there is no revision {number}: this store's revisions run from 1 to {head}"
    )


def _sorted(rows: dict[ResourceKey, Any]) -> dict[ResourceKey, Any]:
    """In Python's order of keys: the database's collation may differ (PostgreSQL's locale)."""
    keys = list(rows)
    return rows if keys == sorted(keys) else {k: rows[k] for k in sorted(keys)}


def _live(lineage: str, revision: int, found: list[CanonicalResource]) -> LiveState:
    return LiveState(lineage, revision, {r.key: r for r in sorted(found, key=lambda r: r.key)})


def _key_is(table: Any, key: ResourceKey) -> tuple[Any, ...]:
    return (table.c.kind == key.kind, table.c.namespace == key.namespace,
            table.c.name == key.name)


def _filtered(flt: HistoryFilter) -> Select[Any]:
    q = select(t.revisions).order_by(t.revisions.c.number.desc())
    if flt.resource is not None:
        q = q.where(t.revisions.c.number.in_(
            select(rv.c.revision).where(*_key_is(rv, flt.resource))))
    if flt.namespace is not None:
        q = q.where(t.revisions.c.number.in_(
            select(rv.c.revision).where(rv.c.namespace == flt.namespace)))
    if flt.actor is not None:
        q = q.where(t.revisions.c.actor == flt.actor)
    if flt.since is not None:
        q = q.where(t.revisions.c.created_at >= flt.since)
    if flt.until is not None:
        q = q.where(t.revisions.c.created_at <= flt.until)
    if flt.kinds:
        q = q.where(t.revisions.c.kind.in_([RevisionKind(k).value for k in flt.kinds]))
    if flt.limit is not None:
        q = q.limit(flt.limit)
    return q


# revision number -> key -> two texts of the version it wrote (which two: the query's)
Bodies = dict[int, dict[ResourceKey, tuple[str | None, str | None]]]


def _by_revision(out: Bodies, rows: Iterable[Any]) -> Bodies:
    for number, kind, namespace, name, first, second in rows:
        out.setdefault(number, {})[ResourceKey(kind, namespace, name)] = (first, second)
    return out


def _bodies(conn: Connection, numbers: list[int]) -> Bodies:
    """(before, after) body JSON of every resource touched by those revisions.

    "Before" is the latest earlier version of the same key, found through the
    primary key index, so no back-pointer has to be stored or trusted.
    """
    prev = rv.alias("prev")
    before = (
        select(prev.c.body)
        .where(prev.c.kind == rv.c.kind, prev.c.namespace == rv.c.namespace,
               prev.c.name == rv.c.name, prev.c.revision < rv.c.revision)
        .order_by(prev.c.revision.desc())
        .limit(1)
        .scalar_subquery()
    )
    out: Bodies = {}
    for i in range(0, len(numbers), _CHUNK):
        q = select(rv.c.revision, rv.c.kind, rv.c.namespace, rv.c.name, before, rv.c.body).where(
            rv.c.revision.in_(numbers[i : i + _CHUNK])
        )
        _by_revision(out, conn.execute(q))
    return out


def _revision(row: Any, bodies: Mapping[ResourceKey, tuple[str | None, str | None]]) -> Revision:
    changes = []
    for record in json.loads(row.changes):
        key = chain.record_key(record)
        before_body, after_body = bodies.get(key, (None, None))
        changes.append(codec.change_from_record(record, before_body, after_body))
    return Revision(row.number, row.created_at, codec.meta_from_row(row), tuple(changes),
                    row.prev_hash, row.hash)


def _stored_revisions(conn: Connection) -> Iterator[chain.StoredRevision]:
    last = 0
    while True:
        rows = conn.execute(
            select(t.revisions).where(t.revisions.c.number > last)
            .order_by(t.revisions.c.number).limit(_CHUNK)
        ).all()
        if not rows:
            return
        q = select(rv.c.revision, rv.c.kind, rv.c.namespace, rv.c.name, rv.c.body, rv.c.digest)
        q = q.where(rv.c.revision > last, rv.c.revision <= rows[-1].number)
        versions = _by_revision({}, conn.execute(q))  # (body, digest)
        for row in rows:
            yield chain.StoredRevision(
                row.number, row.created_at, codec.meta_from_row(row), row.changes,
                row.prev_hash, row.hash, versions.get(row.number, {}),
            )
        last = rows[-1].number
