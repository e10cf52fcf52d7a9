"""Retention (issue 6): delivered events and stale markers go, everything the desk has not
got and every marker whose mail can still be listed stays. Backdated rows, on SQLite and
PostgreSQL; the marker re-dating through the real runner against Dovecot."""
# Fixtures are imported from the kits (no conftest of our own), so parameters
# named like them look like redefinitions to ruff.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from peers.dovecot import DovecotInstance, MailUser
from peers.smtp import PeerCerts
from sqlalchemy import Connection

from reconciler.incoming.pipeline.run import process
from reconciler.incoming.retention import IncomingRetention
from reconciler.incoming.service import incoming_parts
from reconciler.incoming.store import IncomingStore, JudgedMail
from reconciler.runtime.settings import DaemonSettings
from reconciler.state import SqlStore
from reconciler.state import schema as t
from reconciler.state.location import create_store_engine, parse_location, writer_engine

from .incoming_kit import (
    NS,
    corpus,
    incoming_server,
    loop_of,
    options,
    password,  # noqa: F401 - fixture
    pipeline_context,
    put_config,
    running,
    settings,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MAILS = ["01-new-request-plain.eml", "10-alternative-text-html.eml",
         "13-attachments-pdf-docx.eml", "19-attachment-rfc2231-name.eml"]


def record(store: SqlStore, name: str, marker: str, at: datetime,
           server: str = "support") -> int:
    result = process(corpus(name), pipeline_context(store, server))
    assert result.event is not None, result.reason
    [done] = IncomingStore.of_store(store).record_many(NS, server, [JudgedMail(marker, result)],
                                                       now=at)
    assert done.event_id is not None
    return done.event_id


@contextmanager
def tables(store_url: str) -> Iterator[Connection]:
    """The store's tables directly, past the contract: what retention left behind."""
    engine = create_store_engine(parse_location(store_url))
    try:
        with writer_engine(engine).begin() as conn:
            yield conn
    finally:
        engine.dispose()


def markers(store_url: str) -> set[str]:
    with tables(store_url) as conn:
        return {r[0] for r in conn.execute(t.incoming_markers.select().with_only_columns(
            t.incoming_markers.c.marker))}


def test_only_delivered_events_past_the_retention_are_deleted(store: SqlStore,
                                                             store_url: str) -> None:
    incoming = IncomingStore.of_store(store)
    old_delivered, old_pending, old_rejected, young_delivered = (
        record(store, name, f"m{i}", NOW - 60 * DAY) for i, name in enumerate(MAILS))
    newest = record(store, "20-attachment-too-large.eml", "m9", NOW - 60 * DAY)
    incoming.delivered([old_delivered, newest], now=NOW - 50 * DAY)
    incoming.delivered([young_delivered], now=NOW - 5 * DAY)
    incoming.reject(old_rejected, "HTTP 400")
    assert incoming.event(old_delivered) is not None
    kept_file = next(e for e in incoming.events() if e.id == young_delivered)

    done = IncomingRetention(incoming, event_days=30, marker_days=None).purge(NOW)

    assert done.events == 1
    left = {e.id for e in incoming.events()}
    assert old_delivered not in left
    # never the desk's only copy; and the newest id stays, so SQLite never hands it out again
    assert {old_pending, old_rejected, young_delivered, newest} == left
    assert kept_file.state == "delivered"
    with tables(store_url) as conn:
        files = {r.event_id for r in conn.execute(t.ticket_event_attachments.select())}
    assert old_delivered not in files and young_delivered in files  # attachments went along
    # the markers are not the events' business: they stay
    assert markers(store_url) == {"m0", "m1", "m2", "m3", "m9"}
    # nothing more to delete on a second pass; 0 days keeps everything
    assert IncomingRetention(incoming, event_days=30, marker_days=None).purge(NOW).events == 0
    assert not IncomingRetention(incoming, event_days=0, marker_days=0).active


def test_a_new_event_after_a_purge_gets_a_fresh_id(store: SqlStore) -> None:
    incoming = IncomingStore.of_store(store)
    ids = [record(store, name, f"m{i}", NOW - 60 * DAY) for i, name in enumerate(MAILS)]
    incoming.acknowledge(max(ids), now=NOW - 40 * DAY)
    IncomingRetention(incoming, event_days=30, marker_days=None).purge(NOW)
    assert [e.id for e in incoming.events()] == [max(ids)]
    later = record(store, "20-attachment-too-large.eml", "m9", NOW)
    assert later > max(ids)  # a desk whose cursor is max(ids) sees it


def test_markers_go_only_when_unlisted_on_a_server_that_is_listed(store: SqlStore,
                                                                 store_url: str) -> None:
    incoming = IncomingStore.of_store(store)
    for server in ("support", "paused", "silent"):
        old = process(corpus(MAILS[0]), pipeline_context(store, server))
        incoming.record_many(NS, server, [JudgedMail(f"{server}-old", old)], now=NOW - 100 * DAY)
        young = process(corpus(MAILS[1]), pipeline_context(store, server))
        incoming.record_many(NS, server, [JudgedMail(f"{server}-young", young)],
                             now=NOW - 10 * DAY)
    listed = process(corpus(MAILS[2]), pipeline_context(store))
    incoming.record_many(NS, "support", [JudgedMail("support-listed", listed)],
                         now=NOW - 100 * DAY)
    # support fetches; its listing still shows one old mail (unread, or POP3)
    incoming.fetch_succeeded(NS, "support", error_folder_count=None, now=NOW - DAY)
    assert incoming.is_done_refreshing(NS, "support", "support-listed",
                                       refresh_before=NOW - 45 * DAY, now=NOW - DAY)
    assert not incoming.is_done_refreshing(NS, "support", "never-seen",
                                           refresh_before=NOW - 45 * DAY)
    # paused: fetched lately but stopped by its error folder; silent: no good fetch for long
    incoming.fetch_succeeded(NS, "paused", error_folder_count=3, now=NOW - DAY)
    incoming.set_paused(NS, "paused", "the error folder holds 3 mails (stopFetchingAfter 3)")
    incoming.fetch_succeeded(NS, "silent", error_folder_count=None, now=NOW - 60 * DAY)

    done = IncomingRetention(incoming, event_days=None, marker_days=90).purge(NOW)

    assert done.markers == 1
    assert markers(store_url) == {"support-young", "support-listed", "paused-old", "paused-young",
                              "silent-old", "silent-young"}
    # the Message-IDs stay: the old mail, fetched again, is a duplicate, not a new ticket
    again = process(corpus(MAILS[0]), pipeline_context(store))
    assert again.event is None and again.audit[-1].details["code"] == "duplicate"


async def test_the_runner_keeps_the_marker_of_a_mail_still_unread(
        store: SqlStore, store_url: str, dovecot: DovecotInstance, mailbox: MailUser,
        certs: PeerCerts, password: str) -> None:
    """A crash after the commit left the mail unread: each listing shows it again, so its
    marker must outlive any retention while it stays there."""
    put_config(store, incoming_server(dovecot, mailbox), settings())
    dovecot.deliver(mailbox, corpus(MAILS[0]))
    incoming = IncomingStore.of_store(store)
    async with running(store, certs.ca_file) as runner:
        await runner.wait_for(lambda: len(incoming.events()) == 1)
    [marker] = markers(store_url)
    dovecot.doveadm("flags", "remove", "-u", mailbox.name, "\\Seen", "mailbox", "INBOX", "ALL")
    long_ago = datetime.now(UTC) - 200 * DAY
    with tables(store_url) as conn:
        conn.execute(t.incoming_markers.update().values(created_at=long_ago))

    async with running(store, certs.ca_file,
                       options=options(marker_retention_seconds=90 * 86400)) as runner:
        await runner.wait_for(lambda: loop_of(runner) is not None
                              and loop_of(runner).cycles >= 2)
    retention = IncomingRetention(incoming, event_days=None, marker_days=90)
    assert retention.purge().markers == 0
    assert markers(store_url) == {marker}
    assert len(incoming.events()) == 1  # and it was never judged twice


def test_the_daemon_runs_retention_with_its_settings(store: SqlStore, store_url: str) -> None:
    def parts(**kw: float) -> dict[str, object]:
        daemon = DaemonSettings(store_url=store_url, **kw)
        return incoming_parts(store, daemon).tasks()

    made = incoming_parts(store, DaemonSettings(store_url=store_url))
    assert made.retention is not None
    assert (made.retention.event_days, made.retention.marker_days) == (30.0, 90.0)
    assert made.runner.options.marker_retention_seconds == 90 * 86400
    assert "incoming retention" in parts()
    assert "incoming retention" not in parts(event_retention_days=0, marker_retention_days=0)

    async def one_pass() -> None:
        incoming = IncomingStore.of_store(store)
        old = record(store, MAILS[0], "m0", NOW - 60 * DAY)
        record(store, MAILS[1], "m1", NOW - 60 * DAY)
        incoming.delivered([old], now=NOW - 50 * DAY)
        stop = asyncio.Event()
        task = asyncio.create_task(made.retention.run(stop))  # type: ignore[union-attr]
        while incoming.event(old) is not None:
            await asyncio.sleep(0.02)
        stop.set()
        await task

    asyncio.run(asyncio.wait_for(one_pass(), 30))
