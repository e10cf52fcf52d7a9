"""Writing one revision (SPEC P3, P4): inside the commit's write transaction, which
excludes other writers (SQLite ``BEGIN IMMEDIATE``; PostgreSQL an advisory
transaction lock plus ``SELECT ... FOR UPDATE`` on the meta row), so two commits
never interleave and the loser gets :class:`StaleRevision`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from reconciler.config.desired import ResourceKey, canonical_json
from reconciler.state import bindings, chain, codec
from reconciler.state import schema as t
from reconciler.state.base import ChangeRejected, StaleRevision
from reconciler.state.location import first_line
from reconciler.state.revisions import Action, Change, Revision, RevisionKind, RevisionMeta

# Arbitrary constant shared by every reconcile process: "someone is committing".
PG_COMMIT_LOCK = 0x7265636F6E636D74  # "reconcmt"
_SMALL_CHANGESET = 200  # below this, look up touched keys only; above, read all keys
_BINDS = frozenset({RevisionKind.APPLY, RevisionKind.HEAL, RevisionKind.ROLLBACK})

rv = t.resource_versions
# The current (revision, digest) of each touched key, read inside the commit.
Live = dict[ResourceKey, tuple[int, str]]


def write_revision(conn: Connection, lineage: str, changes: list[Change], rmeta: RevisionMeta,
                   base_revision: int, live: Live) -> Revision:
    """Write ``changes`` as the revision after ``base_revision``, inside ``conn``'s
    write transaction; ``live`` receives the touched keys' (revision, digest) so a
    failed insert can be explained (:func:`rejected`)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(PG_COMMIT_LOCK)))
    head, head_hash = conn.execute(
        select(t.meta.c.head, t.meta.c.head_hash).where(t.meta.c.id == 1).with_for_update()
    ).one()
    if head != base_revision:
        raise StaleRevision(
            f"the store moved on: it is at revision {head}, but these changes were "
            f"planned against revision {base_revision}. Nothing was written; re-run "
            "plan to see the changes against the current state."
        )
    live.update(_live_keys(conn, [c.key for c in changes]))
    # Stamped only now that we hold the write lock, so time order is revision order.
    created_at = datetime.now(UTC)
    number = head + 1
    prev_hash = head_hash or chain.genesis_hash(lineage)
    records = [
        chain.change_record(c, live[c.key][1] if c.key in live else None) for c in changes
    ]
    digest_hash = chain.revision_hash(
        prev_hash, chain.revision_content(number, created_at, rmeta, records)
    )
    conn.execute(insert(t.revisions).values(
        number=number, created_at=created_at, changes=canonical_json(records),
        prev_hash=prev_hash, hash=digest_hash, **codec.meta_columns(rmeta),
    ))
    if changes:
        conn.execute(insert(rv), [
            {"kind": c.key.kind, "namespace": c.key.namespace, "name": c.key.name,
             "revision": number,
             "body": codec.body_json(c.after) if c.after is not None else None,
             "digest": rec["after"]}
            for c, rec in zip(changes, records, strict=True)
        ])
    _apply_to_resources(conn, changes, records, number, live)
    # A heal or rollback writes back what an apply approved: its bindings go with it.
    if rmeta.kind in _BINDS:
        bindings.rebind(conn, changes, number)
    conn.execute(
        update(t.meta).where(t.meta.c.id == 1).values(head=number, head_hash=digest_hash)
    )
    return Revision(number, created_at, rmeta, tuple(changes), prev_hash, digest_hash)


def _live_keys(conn: Connection, keys: list[ResourceKey]) -> Live:
    """Current (revision, digest) of the touched keys, read inside the commit."""
    cols = (t.resources.c.kind, t.resources.c.namespace, t.resources.c.name,
            t.resources.c.revision, t.resources.c.digest)
    if not keys:
        return {}
    q = select(*cols)
    if len(keys) <= _SMALL_CHANGESET:
        q = q.where(tuple_(*cols[:3]).in_([tuple(k) for k in keys]))
    wanted = set(keys)
    out = {}
    for kind, namespace, name, revision, digest in conn.execute(q):
        key = ResourceKey(kind, namespace, name)
        if key in wanted:
            out[key] = (revision, digest)
    return out


def _apply_to_resources(conn: Connection, changes: list[Change], records: list[dict[str, Any]],
                        number: int, live: Live) -> None:
    """Bulk statements, one per action: a 10,000-resource apply is three round trips."""
    by_action: dict[Action, list[tuple[Change, dict[str, Any]]]] = {a: [] for a in Action}
    for change, record in zip(changes, records, strict=True):
        by_action[change.action].append((change, record))

    def key_params(c: Change) -> dict[str, str]:
        return {"k_kind": c.key.kind, "k_namespace": c.key.namespace, "k_name": c.key.name}

    def where(table: Any) -> tuple[Any, ...]:
        return (table.c.kind == bindparam("k_kind"),
                table.c.namespace == bindparam("k_namespace"),
                table.c.name == bindparam("k_name"))

    if deletes := by_action[Action.DELETE]:
        keys = [key_params(c) for c, _ in deletes]
        result = conn.execute(delete(t.resources).where(*where(t.resources)), keys)
        _expect_rows(result.rowcount, deletes, live, "delete")
        conn.execute(delete(t.status).where(*where(t.status)), keys)
    if updates := by_action[Action.UPDATE]:
        stmt = update(t.resources).where(*where(t.resources)).values(
            api_version=bindparam("v_api_version"), labels=bindparam("v_labels"),
            spec=bindparam("v_spec"), digest=bindparam("v_digest"),
            revision=bindparam("v_revision"),
        )
        params = []
        for c, rec in updates:
            assert c.after is not None
            row = codec.resource_row(c.after, number, rec["after"])
            params.append(key_params(c) | {f"v_{k}": row[k] for k in
                          ("api_version", "labels", "spec", "digest", "revision")})
        result = conn.execute(stmt, params)
        _expect_rows(result.rowcount, updates, live, "update")
    if creates := by_action[Action.CREATE]:
        rows = []
        for c, rec in creates:
            assert c.after is not None
            rows.append(codec.resource_row(c.after, number, rec["after"]))
        # An existing key fails on the primary key here, mid-transaction; the
        # whole revision rolls back and commit() explains which key it was.
        conn.execute(insert(t.resources), rows)


def _expect_rows(rowcount: int, items: list[tuple[Change, dict[str, Any]]], live: Live,
                 verb: str) -> None:
    if rowcount == len(items):
        return
    missing = [str(c.key) for c, _ in items if c.key not in live]
    raise ChangeRejected(
        f"cannot {verb} {', '.join(missing[:5]) or 'some resources'}"
        f"{' and others' if len(missing) > 5 else ''}: not in the store. Nothing was "
        "written; re-run plan."
    )


def rejected(changes: list[Change], live: Live, exc: IntegrityError) -> ChangeRejected:
    existing = [str(c.key) for c in changes if c.action is Action.CREATE and c.key in live]
    if existing:
        return ChangeRejected(
            f"cannot create {', '.join(existing[:5])}{' and others' if len(existing) > 5 else ''}"
            ": already in the store. Nothing was written; re-run plan."
        )
    return ChangeRejected(
        f"the store refused the changes ({first_line(exc)}). Nothing was written; check the "
        "resource names and re-run plan."
    )
