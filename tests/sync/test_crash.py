"""One syncer among daemons, and crashes (SPEC X5 item 8): killing the syncing daemon
hands the role over at once (its lease is its PostgreSQL session), and a kill -9 in the
middle of a sync leaves the store at the old or the new revision, never between."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from daemon.app_kit import daemon_process, wait_for
from peers.git_repo import Repo

from reconciler.state import open_store
from reconciler.state.contract import SyncPhase

from .kit import APPLY, server_yaml, syncer_for

SYNC_ARGS = ("--sync-path", "config", "--sync-interval", "0.2", "--health-interval", "3600")


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


async def test_killing_the_syncer_hands_the_role_over(repo: Repo, postgres_url: str,
                                                       tmp_path: Path) -> None:
    first = repo.commit({"config/s.yaml": server_yaml(2525), "config/p.yaml": APPLY}, "one")
    proc = daemon_process(postgres_url, "--sync-repo", str(repo.bare), *SYNC_ARGS,
                          "--sync-cache-dir", str(tmp_path / "a"), log=tmp_path / "a.log")
    with open_store(postgres_url) as store:
        try:
            wait_for(lambda: store.sync.get().last_applied == first, "the first daemon's sync")
            standby = store.leases.leader("sync")
            assert not standby.acquire()  # exactly one daemon syncs
        finally:
            kill(proc)
        wait_for(standby.acquire, "the role to be free")
        standby.release()
        second = repo.commit({"config/s.yaml": server_yaml(2526)}, "two")
        syncer = syncer_for(store, repo, tmp_path)
        rec = await syncer.sync_once()
        assert (rec.phase, rec.last_applied) == (SyncPhase.SYNCED, second)


def test_kill_9_mid_sync_leaves_old_or_new_revision(repo: Repo, tmp_path: Path) -> None:
    servers = {f"config/s{i}.yaml": server_yaml(3000 + i, name=f"desk{i}", primary="false")
               for i in range(400)}
    repo.commit({**servers, "config/s.yaml": server_yaml(2525), "config/p.yaml": APPLY}, "one")
    db = str(tmp_path / "state.db")
    open_store(db).close()
    proc = daemon_process(db, "--sync-repo", str(repo.bare), *SYNC_ARGS,
                          "--sync-cache-dir", str(tmp_path / "c"), log=tmp_path / "d.log")
    with open_store(db) as store:
        try:
            wait_for(lambda: store.sync.get().phase is SyncPhase.PROGRESSING, "the apply")
        finally:
            kill(proc)
        assert store.verify().ok
        head = store.head()
        assert (head, len(store.snapshot())) in ((0, 0), (1, 402))
