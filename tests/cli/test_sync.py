"""`reconcile sync status|now|suspend|resume` on the store the syncing daemon reads."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from reconciler.cli.main import cli
from reconciler.state import RevisionKind, open_store
from reconciler.state.contract import SyncPhase


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_suspend_resume_are_recorded_with_the_actor(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    open_store(db).close()
    assert "(no sync has run)" in run("sync", "status", "--store", db).output
    done = run("sync", "suspend", "--store", db, "--actor", "ops-anna", "-m", "freeze")
    assert done.exit_code == 0, done.output
    shown = json.loads(run("sync", "status", "--store", db, "--format", "json").output)
    assert (shown["state"], shown["suspendedBy"], shown["reason"]) == (
        "Suspended", "ops-anna", "freeze")
    assert run("sync", "resume", "--store", db, "--actor", "ops-ben").exit_code == 0
    again = run("sync", "resume", "--store", db)
    assert again.exit_code == 1 and "not suspended" in again.output
    with open_store(db) as store:
        revs = store.revisions()
        assert [(r.meta.kind, r.meta.actor, r.meta.message) for r in revs] == [
            (RevisionKind.SYNC, "ops-ben", "sync resumed"),
            (RevisionKind.SYNC, "ops-anna", "sync suspended: freeze")]
        assert store.sync.get().phase is SyncPhase.OUT_OF_SYNC


def test_sync_now_asks_the_daemon(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    open_store(db).close()
    assert run("sync", "now", "--store", db, "--override-window").exit_code == 0
    with open_store(db) as store:
        rec = store.sync.get()
    assert rec.requested_at is not None and rec.override_window
