"""Create / update / delete round trips, snapshots as of older revisions, status vs spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.config.desired import ResourceKey
from reconciler.state import (
    DEFAULT_STORE,
    Action,
    FieldChange,
    RevisionKind,
    SecretValueRefused,
    SqlStore,
    StoreError,
    UnknownRevision,
    open_store,
)

from .kit import create, delete, meta, res, update


def test_new_store_is_empty(store: SqlStore) -> None:
    assert store.head() == 0
    snap = store.snapshot()
    assert (snap.revision, len(snap), snap.lineage) == (0, 0, store.lineage)
    assert store.revisions() == []
    assert store.last_revision(RevisionKind.APPLY) == 0


def test_create_update_delete_round_trip(store: SqlStore) -> None:
    a1 = res("gmail", labels={"env": "prod"}, host="smtp.gmail.com", port=587)
    b1 = res("office", ns="acme", host="smtp.office365.com")
    rev1 = store.commit([create(a1), create(b1)], meta(git_commit="abc123", git_branch="main",
                                                        pull_request="42"), base_revision=0)
    assert rev1.number == 1 and store.head() == 1
    assert store.snapshot().resources == {a1.key: a1, b1.key: b1}

    a2 = res("gmail", labels={"env": "prod"}, host="smtp.gmail.com", port=465)
    port = FieldChange("spec.port", 587, 465)
    store.commit([update(a1, a2, port), delete(b1)], meta("bob"), base_revision=1)
    live = store.snapshot()
    assert live.revision == 2
    assert live.resources == {a2.key: a2}
    assert live.resources[a2.key].digest == a2.digest

    shown = store.revision(2)
    assert shown.meta.actor == "bob"
    assert [(c.action, c.key) for c in shown.changes] == [
        (Action.UPDATE, a1.key), (Action.DELETE, b1.key)]
    upd, dele = shown.changes
    assert (upd.before, upd.after, upd.fields) == (a1, a2, (port,))
    assert (dele.before, dele.after) == (b1, None)

    first = store.revision(1)
    assert (first.meta.git_commit, first.meta.git_branch, first.meta.pull_request) == (
        "abc123", "main", "42")
    assert first.changes[0].before is None and first.changes[0].after == a1
    assert shown.prev_hash == first.hash


def test_snapshot_as_of_older_revisions(store: SqlStore) -> None:
    a1, b1 = res("a", host="one"), res("b", ns="acme")
    a2 = res("a", host="two")
    store.commit([create(a1), create(b1)], meta(), base_revision=0)
    store.commit([update(a1, a2)], meta(), base_revision=1)
    store.commit([delete(a2)], meta(), base_revision=2)
    store.commit([create(a1)], meta(), base_revision=3)  # re-created as it first was

    assert store.snapshot(0).resources == {}
    assert store.snapshot(1).resources == {a1.key: a1, b1.key: b1}
    assert store.snapshot(2).resources == {a2.key: a2, b1.key: b1}
    assert store.snapshot(3).resources == {b1.key: b1}
    assert store.snapshot(4).resources == store.snapshot().resources == {a1.key: a1, b1.key: b1}
    assert store.snapshot(2).revision == 2
    # The re-create's "before" is the deletion, i.e. nothing.
    assert store.revision(4).changes[0].before is None
    for bad in (5, -1):
        with pytest.raises(UnknownRevision, match="revisions run from 1 to 4"):
            store.snapshot(bad)


def test_missing_revision_is_a_clear_error(store: SqlStore) -> None:
    with pytest.raises(StoreError, match="nothing has been applied yet"):
        store.revision(1)
    store.commit([create(res("a"))], meta(), base_revision=0)
    with pytest.raises(UnknownRevision, match="there is no revision 7"):
        store.revision(7)


def test_out_of_band_and_last_revision_by_kind(store: SqlStore) -> None:
    a1, a2 = res("a", host="one"), res("a", host="two")
    store.commit([create(a1)], meta(), base_revision=0)
    store.commit([update(a1, a2)], meta("admin-api", RevisionKind.OUT_OF_BAND,
                                        message="changed in the console"), base_revision=1)
    store.commit([], meta("alice", RevisionKind.AUTH, message="auth login a"), base_revision=2)
    assert store.last_revision(RevisionKind.APPLY) == 1
    assert store.last_revision(RevisionKind.OUT_OF_BAND) == 2
    assert store.last_revision(RevisionKind.AUTH) == 3
    assert store.revision(2).meta.kind is RevisionKind.OUT_OF_BAND
    assert store.revision(3).changes == ()
    assert store.snapshot().resources == {a2.key: a2}


def test_status_is_kept_apart_from_spec(store: SqlStore) -> None:
    a = res("a")
    store.commit([create(a)], meta(), base_revision=0)
    before = store.snapshot()

    store.status_put(a.key, {"health": "Unreachable", "lastError": "timed out",
                             "activeHost": "alt.example.com", "sent": 12})
    store.status_put(a.key, {"health": "Reachable", "sent": 13})  # replaces, not merges
    after = store.snapshot()
    assert after == before
    assert after.resources[a.key].digest == a.digest
    assert store.head() == 1 and len(store.revisions()) == 1
    assert store.status_get(a.key) == {"health": "Reachable", "sent": 13}
    assert store.statuses() == {a.key: {"health": "Reachable", "sent": 13}}
    assert store.status_get(ResourceKey("OutgoingServer", "default", "nope")) == {}

    store.commit([delete(a)], meta(), base_revision=1)
    assert store.status_get(a.key) == {}  # runtime facts of a deleted server mean nothing


def test_secret_references_round_trip_unchanged(store: SqlStore) -> None:
    spec = {"host": "smtp.example.com",
            "auth": {"type": "basic", "username": "desk", "password": {"secretRef": "env:X"}},
            "clientSecret": {"secretRef": "enc:v1:gAAAAABk"}}
    a = res("a", **spec)
    store.commit([create(a)], meta(), base_revision=0)
    assert store.snapshot().resources[a.key].spec == spec
    assert store.snapshot(1).resources[a.key].spec == spec
    assert store.revision(1).changes[0].after == a


@pytest.mark.parametrize("spec", [
    {"auth": {"password": "hunter2"}},
    {"clientSecret": "s3cr3t"},
    {"servers": [{"token": {"value": "abc"}}]},
])
def test_literal_secret_values_are_refused(store: SqlStore, spec: dict[str, object]) -> None:
    with pytest.raises(SecretValueRefused) as err:
        store.commit([create(res("a", **spec))], meta(), base_revision=0)
    assert "hunter2" not in str(err.value) and "s3cr3t" not in str(err.value)
    assert "secretRef" in str(err.value)
    assert store.head() == 0


def test_reopen_keeps_lineage_and_data(store_url: str) -> None:
    a = res("a")
    with open_store(store_url) as s:
        lineage = s.lineage
        s.commit([create(a)], meta(), base_revision=0)
    with open_store(store_url) as s:
        assert s.lineage == lineage
        assert s.snapshot().resources == {a.key: a}
        assert s.verify().ok


def test_sqlite_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store() as s:
        assert s.dialect == "sqlite" and s.location == DEFAULT_STORE
    assert (tmp_path / DEFAULT_STORE).is_file()
    with open_store(f"sqlite:///{tmp_path}/deep/er/x.db") as s:
        assert s.head() == 0
    assert (tmp_path / "deep" / "er" / "x.db").is_file()
