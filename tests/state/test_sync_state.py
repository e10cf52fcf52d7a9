"""store.sync: one shared row of sync state, and empty ``sync`` revisions (SPEC X5)."""

from __future__ import annotations

from reconciler.state import RevisionKind, SqlStore
from reconciler.state.contract import SyncPhase

from .kit import meta


def test_sync_row_starts_empty_and_keeps_what_was_set(store: SqlStore) -> None:
    assert store.sync.get().phase is SyncPhase.OUT_OF_SYNC and store.sync.get().source == ""
    store.sync.update(source="file:///repo", phase=SyncPhase.FAILED, reason="x.yaml:3: bad")
    row = store.sync.update(last_fetched="a" * 40)
    assert (row.source, row.phase, row.reason, row.last_fetched) == (
        "file:///repo", SyncPhase.FAILED, "x.yaml:3: bad", "a" * 40)
    assert store.sync.get() == row
    assert row.to_json()["state"] == "Failed"


def test_a_sync_revision_records_the_actor_without_changes(store: SqlStore) -> None:
    rev = store.commit([], meta("ops", RevisionKind.SYNC, message="sync suspended"),
                       base_revision=0)
    assert store.revision(rev.number).meta.kind is RevisionKind.SYNC
    assert store.verify().ok
