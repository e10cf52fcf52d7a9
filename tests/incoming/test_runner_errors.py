"""Error folder (I6): a mail that cannot be processed is moved away with its details
sealed; `reconcile incoming retry` brings it back; a full folder stops fetching."""
# Fixtures are imported from the kits (no conftest of our own), so parameters
# named like them look like redefinitions to ruff.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from peers.dovecot import DovecotInstance, MailUser
from peers.postgres import RawSql
from peers.smtp import PeerCerts

from reconciler.cli.main import cli
from reconciler.incoming.store import IncomingStore
from reconciler.runtime.notifier import Notifier
from reconciler.state import SqlStore
from reconciler.state import schema as t
from reconciler.state.base import AuditStatus

from .incoming_kit import (
    NS,
    SEAL_KEY,
    Receiver,
    corpus,
    incoming_server,
    loop_of,
    password,  # noqa: F401 - fixture
    put_config,
    running,
    settings,
)

PLANTED = "ACCT-7731-PRIVATE-NOTE"


def failing_mail(n: int = 0) -> bytes:
    """The corpus mail without a From header (the pipeline sends it to the error folder),
    with a header only the sealed details may hold."""
    raw = corpus("49-no-from.eml")
    raw = raw.replace(b"nofrom-0049@", f"nofrom-0049-{n}@".encode())
    return f"X-Customer-Account: {PLANTED}\r\n".encode() + raw


def all_rows(raw_sql: RawSql) -> str:
    return "\n".join(repr(raw_sql(f"SELECT * FROM {name}")) for name in t.metadata.tables)


def failed_count(store: SqlStore) -> int:
    return store.audit.count(status=AuditStatus.PROCESSED_FAILED, server="support")


def reconcile(store_url: str, *args: str, key: bool = True) -> Any:
    env = {"RECONCILE_TOKEN_KEY": SEAL_KEY.decode()} if key else {}
    return CliRunner().invoke(cli, [*args, "--store", store_url], env=env)


async def test_a_failing_mail_goes_to_the_error_folder_sealed_and_retry_reprocesses_it(
        store: SqlStore, store_url: str, raw_sql: RawSql, dovecot: DovecotInstance,
        mailbox: MailUser, certs: PeerCerts, password: str) -> None:
    put_config(store, incoming_server(dovecot, mailbox), settings())
    dovecot.deliver(mailbox, failing_mail())
    dovecot.deliver(mailbox, corpus("01-new-request-plain.eml"))
    incoming = IncomingStore.of_store(store, SEAL_KEY)
    async with running(store, certs.ca_file) as runner:
        await runner.wait_for(lambda: len(incoming.events()) == 1 and failed_count(store) == 1)
        await runner.wait_for(lambda: dovecot.message_count(mailbox, "desk-errors") == 1)
        assert dovecot.message_count(mailbox) == 1  # the good one stays, read

        [error] = incoming.errors(NS, "support")
        assert error.code == "no-sender"
        assert error.details is not None and PLANTED in error.details["headers"]
        assert PLANTED not in all_rows(raw_sql)
        if "://" not in store_url:
            for path in Path(store_url).parent.iterdir():
                assert PLANTED.encode() not in path.read_bytes(), path

        shown = await asyncio.to_thread(reconcile, store_url, "incoming", "errors", "support")
        assert shown.exit_code == 0, shown.output
        assert PLANTED in shown.output and "no-sender" in shown.output

        result = await asyncio.to_thread(reconcile, store_url, "incoming", "retry", "support",
                                         "--ca-file", str(certs.ca_file))
        assert result.exit_code == 0, result.output
        assert "moved 1 mail(s) from desk-errors back to INBOX" in result.output
        # processed again: a second PROCESSED_FAILED, and back in the error folder
        await runner.wait_for(lambda: failed_count(store) == 2)
    assert [e.moved_back_at is not None for e in
            incoming.errors(NS, "support", include_moved_back=True)] == [True, False]


async def test_a_full_error_folder_stops_fetching_until_retry(
        store: SqlStore, store_url: str, dovecot: DovecotInstance, mailbox: MailUser,
        certs: PeerCerts, password: str) -> None:
    put_config(store, incoming_server(dovecot, mailbox, errorFolder={
        "enabled": True, "name": "desk-errors", "stopFetchingAfter": 2}), settings())
    receiver = Receiver().start()
    notifier = Notifier(receiver.url, attempts=1)
    incoming = IncomingStore.of_store(store, SEAL_KEY)
    dovecot.deliver_many(mailbox, [failing_mail(1), failing_mail(2)])
    try:
        async with running(store, certs.ca_file, notifier=notifier) as runner:
            await runner.wait_for(lambda: bool(loop_of(runner)) and loop_of(runner).paused)
            assert "desk-errors holds 2 mails" in loop_of(runner).paused
            dovecot.deliver(mailbox, corpus("01-new-request-plain.eml"))
            cycles = loop_of(runner).cycles
            await runner.wait_for(lambda: loop_of(runner).cycles >= cycles + 3)
            assert incoming.events() == []  # stopped: the new mail waits
            state = incoming.server_state(NS, "support")
            assert state.paused and state.error_folder_count == 2

            result = await asyncio.to_thread(reconcile, store_url, "incoming", "retry",
                                             "support", "--ca-file", str(certs.ca_file))
            assert result.exit_code == 0, result.output
            await runner.wait_for(lambda: len(incoming.events()) == 1)
        events = [b["event"] for b in receiver.bodies()]
        assert events.count("incoming.stopped") >= 1
        assert events.count("incoming.error-folder") >= 2
        stopped = next(b for b in receiver.bodies() if b["event"] == "incoming.stopped")
        assert stopped["kind"] == "IncomingServer" and stopped["server"] == "support"
        assert "reconcile incoming retry support" in stopped["hint"]
    finally:
        receiver.stop()
    status = reconcile(store_url, "incoming", "status", "--format", "json")
    assert status.exit_code == 0, status.output
    [row] = json.loads(status.output)["servers"]
    assert row["server"] == "support" and row["consecutiveFailures"] == 0
