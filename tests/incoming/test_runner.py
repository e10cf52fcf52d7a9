"""The runner against a real Dovecot and a real store (SQLite and PostgreSQL): mail in,
events and audit out, exactly once."""
# Fixtures are imported from the kits (no conftest of our own), so parameters
# named like them look like redefinitions to ruff.
# ruff: noqa: F811

from __future__ import annotations

import json

import pytest
from peers.dovecot import DovecotInstance, MailUser
from peers.smtp import PeerCerts

from reconciler.incoming.store import IncomingStore
from reconciler.mail.imap.fetcher import ImapFetcher
from reconciler.state import SqlStore
from reconciler.state.base import AuditDirection, AuditStatus

from .incoming_kit import (
    NS,
    corpus,
    incoming_server,
    loop_of,
    password,  # noqa: F401 - fixture
    put_config,
    running,
    settings,
)


def events_of(store: SqlStore) -> list[dict]:
    return [json.loads(e.payload) for e in IncomingStore.of_store(store).events(limit=1000)]


async def test_a_new_mail_becomes_one_event_and_a_processed_audit_entry(
        store: SqlStore, dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts,
        password: str) -> None:
    put_config(store, incoming_server(dovecot, mailbox), settings())
    dovecot.deliver(mailbox, corpus("01-new-request-plain.eml"))
    async with running(store, certs.ca_file) as runner:
        await runner.wait_for(lambda: len(events_of(store)) == 1)
    [event] = events_of(store)
    assert event["kind"] == "create"
    assert event["server"] == "support" and event["namespace"] == NS
    entries = store.audit.search(direction=AuditDirection.INCOMING, server="support")
    assert [e.status for e in reversed(entries)] == [AuditStatus.RECEIVED, AuditStatus.PROCESSED]
    # marked done on the server: \Seen, so no other client thinks it is new
    assert dovecot.doveadm("search", "-u", mailbox.name, "mailbox", "INBOX", "UNSEEN") == ""


async def test_a_restart_does_not_make_a_second_event(
        store: SqlStore, dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts,
        password: str) -> None:
    put_config(store, incoming_server(dovecot, mailbox), settings())
    dovecot.deliver(mailbox, corpus("01-new-request-plain.eml"))
    async with running(store, certs.ca_file) as runner:
        await runner.wait_for(lambda: len(events_of(store)) == 1)
    # the mail becomes unread again (a user clicked "mark unread"): the marker still holds
    dovecot.doveadm("flags", "remove", "-u", mailbox.name, "\\Seen", "mailbox", "INBOX", "ALL")
    dovecot.deliver(mailbox, corpus("10-alternative-text-html.eml"))
    async with running(store, certs.ca_file) as runner:
        await runner.wait_for(lambda: len(events_of(store)) == 2)
        loop = loop_of(runner)
        cycles = loop.cycles
        await runner.wait_for(lambda: loop.cycles >= cycles + 2)
    assert len(events_of(store)) == 2
    first, second = events_of(store)
    assert first["subject"] != second["subject"]


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs."""


class CrashAfterCommit(ImapFetcher):
    """A real IMAP fetcher whose process 'dies' after the commit, before \\Seen is set."""

    crashed = False

    async def mark_done(self, mail: object) -> None:
        CrashAfterCommit.crashed = True
        raise Crash


async def test_a_crash_between_commit_and_mark_done_makes_no_duplicate(
        store: SqlStore, dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts,
        password: str) -> None:
    put_config(store, incoming_server(dovecot, mailbox), settings())
    dovecot.deliver(mailbox, corpus("01-new-request-plain.eml"))

    def crashing(server, **kw):  # type: ignore[no-untyped-def]
        return CrashAfterCommit(server, token_provider=kw.get("token_provider"),
                                ca_file=kw.get("ca_file"))

    CrashAfterCommit.crashed = False
    with pytest.raises(Crash):
        async with running(store, certs.ca_file, fetcher_factory=crashing) as runner:
            await runner.wait_for(lambda: CrashAfterCommit.crashed)
    assert len(events_of(store)) == 1
    # still unread on the server: the mark never happened
    assert dovecot.doveadm("search", "-u", mailbox.name, "mailbox", "INBOX", "UNSEEN") != ""
    async with running(store, certs.ca_file) as runner:
        await runner.wait_for(lambda: loop_of(runner) is not None
                              and loop_of(runner).cycles >= 2)
    assert len(events_of(store)) == 1


async def test_two_copies_in_one_fetch_make_one_event(
        store: SqlStore, dovecot: DovecotInstance, mailbox: MailUser, certs: PeerCerts,
        password: str) -> None:
    put_config(store, incoming_server(dovecot, mailbox), settings())
    raw = corpus("01-new-request-plain.eml")
    dovecot.deliver_many(mailbox, [raw, raw])  # delivered twice (two aliases, say)
    async with running(store, certs.ca_file) as runner:
        await runner.wait_for(lambda: bool(loop_of(runner)) and loop_of(runner).processed == 2)
    assert len(events_of(store)) == 1
    codes = [e.details["code"] for e in store.audit.search(status=AuditStatus.RECEIVED_IGNORED)]
    assert codes == ["duplicate"]
