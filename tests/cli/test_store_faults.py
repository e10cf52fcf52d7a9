"""Store faults seen from the command line: one paragraph with the fix, exit 1,
no traceback, and the store left as it was."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from peers.smtp_sink import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "config"


def reconcile(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize("command", [
    ["plan", str(EXAMPLES)],
    ["apply", str(EXAMPLES), "--yes"],
    ["history"],
    ["drift", str(EXAMPLES)],
])
def test_unreachable_postgresql_is_one_message(command: list[str]) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"  # nothing listens there
    result = reconcile(*command, "--store", url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert "127.0.0.1" in result.stderr
    assert "cannot connect to the PostgreSQL store" in result.stderr


def test_store_from_a_newer_version_is_refused_and_untouched(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    assert reconcile("apply", str(EXAMPLES), "--yes", "--store", str(db)).returncode == 0
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    before = _dump(db)
    for command in (["plan", str(EXAMPLES)], ["apply", str(EXAMPLES), "--yes"], ["history"]):
        result = reconcile(*command, "--store", str(db))
        assert result.returncode == 1, command
        assert "Traceback" not in result.stderr
        assert "newer version of reconcile" in result.stderr
    assert _dump(db) == before


def _dump(db: Path) -> list[str]:
    # compare content, not bytes: SQLite folds its WAL into the file on close
    with sqlite3.connect(db) as conn:
        return list(conn.iterdump())


def test_unwritable_sqlite_location_is_one_message(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    result = reconcile("apply", str(EXAMPLES), "--yes", "--store", str(blocker / "state.db"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(blocker) in result.stderr
