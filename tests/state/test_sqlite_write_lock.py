"""SQLite's write lock between writers of the same file: a writer waits for another
process's write transaction about as long as it is held, and gives up after the busy
timeout with a message naming the cause."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from reconciler.mail.envelope import Notification
from reconciler.state import SqlStore, StoreError, open_store
from reconciler.state import location as location_module
from reconciler.state.base import EnqueueRequest

# Takes the write lock in another process, says so, holds it until stdin closes.
HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


def _request() -> EnqueueRequest:
    return EnqueueRequest(Notification.model_validate(
        {"module": "request", "namespace": "default", "to": ["jane@corp.example"],
         "subject": "s", "textBody": "t"}), "default")


@pytest.fixture
def sqlite_store(tmp_path: Path) -> SqlStore:
    return open_store(str(tmp_path / "state.db"))


def _hold(path: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_writer_waits_for_another_process_and_then_writes(
    sqlite_store: SqlStore, tmp_path: Path
) -> None:
    holder = _hold(tmp_path / "state.db")
    release = threading.Timer(0.3, holder.stdin.close)  # type: ignore[union-attr]
    release.start()
    try:
        [result] = sqlite_store.outbox.enqueue_many([_request()])
    finally:
        release.join()
        holder.wait(10)
    assert holder.returncode == 0  # it rolled back only after our write had waited
    assert not result.duplicate and sqlite_store.outbox.get(result.id) is not None


def test_a_writer_gives_up_after_the_busy_timeout_saying_why(
    sqlite_store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(location_module, "BUSY_TIMEOUT_S", 0.3)
    holder = _hold(tmp_path / "state.db")
    try:
        with pytest.raises(StoreError, match="stayed locked by another process"):
            sqlite_store.outbox.enqueue_many([_request()])
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(10)
    # The connection is usable again, with its normal busy timeout for reads.
    assert sqlite_store.outbox.depth()
    [result] = sqlite_store.outbox.enqueue_many([_request()])
    assert result.id >= 1
    with sqlite3.connect(tmp_path / "state.db") as check:
        assert check.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1
