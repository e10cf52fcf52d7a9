"""`reconcile outbox` (SPEC O13) against `reconcile daemon` processes and real SMTP sinks:
a held message stays unsent across daemon restarts until released; a cancel racing a
send in flight either wins before it or says the message was sent, never both."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from daemon.app_kit import (
    CountingSink,
    audit_of,
    commit,
    daemon_process,
    enqueue,
    mail_settings,
    note,
    smtp_server,
    wait_for,
)

from reconciler.cli.main import cli
from reconciler.state import SqlStore
from reconciler.state.base import AuditStatus, OutboxState


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """SQLite only: the store contract tests run these actions on PostgreSQL too; here
    the point is the daemon processes, which cost seconds each."""
    return str(tmp_path / "state.db")


@contextmanager
def running_daemon(store_url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = daemon_process(store_url, "--health-interval", "3600", "--poll-interval", "0.1",
                             log=log)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def reconcile(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def state(store: SqlStore, id: int) -> OutboxState | None:
    m = store.outbox.get(id)
    return m.state if m is not None else None


def sent_now(store: SqlStore, id: int) -> bool:
    return state(store, id) is OutboxState.SENT


def test_held_mail_survives_restarts_until_released(store: SqlStore, store_url: str,
                                                    tmp_path: Path) -> None:
    with CountingSink() as sink:
        commit(store, smtp_server("main", sink.port, primary=True), mail_settings())
        held = enqueue(store, note("jane@corp.example", subject="hold me"))
        out = reconcile("outbox", "hold", held, "--store", store_url, "--actor", "anna",
                        "--reason", "wrong text")
        assert out.exit_code == 0 and out.stdout.strip() == f"held 1 message: {held} (by anna)"
        with running_daemon(store_url, tmp_path / "daemon.log"):
            other = enqueue(store, note("bob@corp.example", subject="first run"))
            wait_for(lambda: sent_now(store, other), "the other mail to be sent")
        assert state(store, held) is OutboxState.HELD

        listed = reconcile("outbox", "list", "--state", "held", "--store", store_url)
        assert listed.exit_code == 0
        assert f"{held}  held" in listed.stdout and "1 matching: 1 held" in listed.stdout
        as_json = json.loads(reconcile("outbox", "list", "--recipient", "JANE@corp.example",
                                       "--format", "json", "--store", store_url).stdout)
        assert [m["id"] for m in as_json["messages"]] == [held]
        bad = reconcile("outbox", "requeue", held, "--to-server", "nope", "--store", store_url)
        assert bad.exit_code == 1 and "server 'nope' does not exist" in bad.stderr
        unnamed = reconcile("outbox", "retry", "--store", store_url)
        assert unnamed.exit_code == 1 and "exactly one of" in unnamed.stderr

        with running_daemon(store_url, tmp_path / "daemon.log"):  # restarted: still held
            other = enqueue(store, note("bob@corp.example", subject="second run"))
            wait_for(lambda: sent_now(store, other), "the other mail to be sent")
            assert state(store, held) is OutboxState.HELD
            assert "hold me" not in [a.subject for a in sink.arrivals()]
            out = reconcile("outbox", "release", "--all", "--store", store_url)
            assert out.exit_code == 0, out.stderr
            wait_for(lambda: sent_now(store, held), "the released mail to be sent")
        shown = reconcile("outbox", "show", held, "--store", store_url).stdout
        assert "routing: server main via primary" in shown
        assert "SEND_HELD by anna" in shown and "attempt 1 at" in shown
    assert [a.subject for a in sink.arrivals()].count("hold me") == 1


def test_cancel_of_a_message_being_sent_reports_it_sent_never_both(
        store: SqlStore, store_url: str, tmp_path: Path) -> None:
    with CountingSink(delay=3.0) as sink:
        commit(store, smtp_server("main", sink.port, primary=True), mail_settings())
        with running_daemon(store_url, tmp_path / "daemon.log"):
            flying = enqueue(store, note("jane@corp.example"))
            wait_for(lambda: state(store, flying) is OutboxState.LEASED, "the send to start")
            out = reconcile("outbox", "cancel", flying, "--reason", "duplicate",
                            "--store", store_url)
            assert out.exit_code == 1
            assert "waiting up to 30s" in out.stderr
            assert f"message {flying}: not cancelled: it was already sent" in out.stderr
            assert sent_now(store, flying)
    assert sink.count() == 1
    assert AuditStatus.SEND_CANCELLED not in {e.status for e in audit_of(store, flying)}
