"""History listing and its filters: resource, namespace, actor, time range, kinds, limit."""

from __future__ import annotations

import pytest

from reconciler.state import HistoryFilter, RevisionKind, SqlStore

from .kit import create, delete, meta, res, update

A1, A2 = res("a", host="one"), res("a", host="two")
B1, B2 = res("b", ns="acme", host="one"), res("b", ns="acme", host="two")


@pytest.fixture
def five(store: SqlStore) -> SqlStore:
    store.commit([create(A1), create(B1)], meta("alice"), base_revision=0)
    store.commit([update(A1, A2)], meta("bob"), base_revision=1)
    store.commit([update(B1, B2)], meta("admin-api", RevisionKind.OUT_OF_BAND), base_revision=2)
    store.commit([], meta("alice", RevisionKind.AUTH), base_revision=3)
    store.commit([delete(A2)], meta("alice"), base_revision=4)
    return store


def numbers(store: SqlStore, **kw: object) -> list[int]:
    return [r.number for r in store.revisions(HistoryFilter(**kw))]  # type: ignore[arg-type]


def test_newest_first_unfiltered(five: SqlStore) -> None:
    assert numbers(five) == [5, 4, 3, 2, 1]
    assert [r.number for r in five.revisions()] == [5, 4, 3, 2, 1]


def test_filter_by_resource(five: SqlStore) -> None:
    assert numbers(five, resource=A1.key) == [5, 2, 1]
    assert numbers(five, resource=B1.key) == [3, 1]
    assert numbers(five, resource=res("never").key) == []


def test_filter_by_namespace_actor_and_kind(five: SqlStore) -> None:
    assert numbers(five, namespace="acme") == [3, 1]
    assert numbers(five, actor="alice") == [5, 4, 1]
    assert numbers(five, kinds=[RevisionKind.OUT_OF_BAND]) == [3]
    assert numbers(five, kinds=[RevisionKind.AUTH, RevisionKind.OUT_OF_BAND]) == [4, 3]
    assert numbers(five, actor="alice", kinds=[RevisionKind.APPLY]) == [5, 1]
    assert numbers(five, namespace="default", actor="bob") == [2]


def test_filter_by_time_range_and_limit(five: SqlStore) -> None:
    when = {r.number: r.created_at for r in five.revisions()}
    assert numbers(five, since=when[2], until=when[3]) == [3, 2]
    assert numbers(five, since=when[5]) == [5]
    assert numbers(five, until=when[1]) == [1]
    assert numbers(five, limit=2) == [5, 4]
    assert numbers(five, resource=A1.key, limit=1) == [5]


def test_listed_revisions_carry_their_changes(five: SqlStore) -> None:
    by_number = {r.number: r for r in five.revisions(HistoryFilter(resource=A1.key))}
    (change,) = by_number[2].changes
    assert (change.before, change.after) == (A1, A2)
    (gone,) = by_number[5].changes
    assert (gone.before, gone.after) == (A2, None)
    assert by_number[1].meta.actor == "alice"
