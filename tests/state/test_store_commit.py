"""Commit is one transaction: base revision checked, all or nothing, never interleaved."""

from __future__ import annotations

import threading

import pytest
from peers.postgres import RawSql

from reconciler.state import (
    Action,
    Change,
    ChangeRejected,
    SqlStore,
    StaleRevision,
    open_store,
)

from .kit import create, delete, meta, res, update

TABLES = ("resources", "revisions", "resource_versions", "status")


def _dump(raw_sql: RawSql) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every store table, to prove a failed commit changed nothing."""
    out = {t: sorted(tuple(r) for r in raw_sql(f"SELECT * FROM {t}")) for t in TABLES}
    out["meta"] = [tuple(r) for r in raw_sql("SELECT head, head_hash, lineage FROM meta")]
    return out


def test_stale_base_revision_is_refused(store_url: str) -> None:
    with open_store(store_url) as mine, open_store(store_url) as theirs:
        planned_at = mine.head()
        theirs.commit([create(res("theirs"))], meta("bob"), base_revision=0)
        with pytest.raises(StaleRevision) as err:
            mine.commit([create(res("mine"))], meta(), base_revision=planned_at)
        assert "revision 1" in str(err.value) and "re-run plan" in str(err.value)
        assert [r.key.name for r in mine.snapshot()] == ["theirs"]
        assert mine.head() == 1


def _seed(store: SqlStore) -> None:
    store.commit([create(res("keep")), create(res("old")), create(res("taken"))], meta(),
                 base_revision=0)
    store.status_put(res("keep").key, {"health": "Reachable"})


def test_failure_half_way_leaves_the_store_unchanged(store: SqlStore, raw_sql: RawSql) -> None:
    _seed(store)
    before = _dump(raw_sql)
    changes = [
        update(res("keep"), res("keep", host="changed")),
        delete(res("old")),
        create(res("fresh")),
        create(res("taken")),  # already exists: the primary key refuses it mid-transaction
    ]
    with pytest.raises(ChangeRejected, match="cannot create OutgoingServer/default/taken"):
        store.commit(changes, meta(), base_revision=1)
    assert _dump(raw_sql) == before
    assert store.head() == 1 and store.verify().ok
    assert sorted(r.key.name for r in store.snapshot()) == ["keep", "old", "taken"]


def test_check_constraint_violation_rolls_back(store: SqlStore, raw_sql: RawSql) -> None:
    _seed(store)
    before = _dump(raw_sql)
    nameless = res("")  # passes the Python checks; the CHECK constraint refuses it
    with pytest.raises(ChangeRejected, match="Nothing was written") as err:
        store.commit([create(res("fresh")), create(nameless)], meta(), base_revision=1)
    assert "Traceback" not in str(err.value) and "sqlalche.me" not in str(err.value)
    assert _dump(raw_sql) == before


def test_update_or_delete_of_a_missing_resource_is_rejected(
    store: SqlStore, raw_sql: RawSql
) -> None:
    _seed(store)
    before = _dump(raw_sql)
    with pytest.raises(ChangeRejected, match="cannot update OutgoingServer/default/ghost"):
        store.commit([create(res("fresh")), update(res("ghost"), res("ghost", host="h"))],
                     meta(), base_revision=1)
    with pytest.raises(ChangeRejected, match="cannot delete OutgoingServer/default/ghost"):
        store.commit([delete(res("ghost"))], meta(), base_revision=1)
    assert _dump(raw_sql) == before


def test_malformed_change_sets_are_refused_before_writing(store: SqlStore) -> None:
    a = res("a")
    with pytest.raises(ChangeRejected, match="appears twice"):
        store.commit([create(a), create(a)], meta(), base_revision=0)
    with pytest.raises(ChangeRejected, match="carries the resource"):
        store.commit([Change(Action.UPDATE, a.key, a, res("b"))], meta(), base_revision=0)
    assert store.head() == 0


def test_large_apply_round_trips(store: SqlStore) -> None:
    """Bulk paths (beyond the small-change-set lookup) for create, update, delete."""
    n = 1500
    first = [res(f"s{i:05d}", ns=f"tenant{i % 7}", port=i) for i in range(n)]
    store.commit([create(r) for r in first], meta(), base_revision=0)
    second = [res(r.key.name, ns=r.key.namespace, port=-i) for i, r in enumerate(first)]
    store.commit([update(a, b) for a, b in zip(first, second, strict=True)], meta(),
                 base_revision=1)
    store.commit([delete(r) for r in second[: n // 2]], meta(), base_revision=2)
    assert store.snapshot().resources == {r.key: r for r in second[n // 2 :]}
    assert store.snapshot(1).resources == {r.key: r for r in first}
    assert len(store.revision(2).changes) == n
    assert store.verify().ok


def test_concurrent_commits_never_interleave(store_url: str) -> None:
    """Writers without the apply lock: each commit lands whole or is told it is stale."""
    per_writer, writers = 8, 3
    errors: list[BaseException] = []
    open_store(store_url).close()  # migrate once, up front

    def writer(w: int) -> None:
        try:
            with open_store(store_url) as s:
                done = 0
                while done < per_writer:
                    try:
                        s.commit([create(res(f"w{w}-{done}"))], meta(f"writer{w}"),
                                 base_revision=s.head())
                        done += 1
                    except StaleRevision:
                        continue
        except BaseException as exc:  # surfaced to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with open_store(store_url) as s:
        assert s.head() == per_writer * writers
        assert len(s.snapshot()) == per_writer * writers
        assert all(len(r.changes) == 1 for r in s.revisions())
        assert s.verify().ok
