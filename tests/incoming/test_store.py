"""IncomingStore on SQLite and PostgreSQL: one commit per mail, exactly once by marker,
Message-IDs for duplicates and threading, sealed error details, the fetch lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.incoming.store import IncomingStore
from reconciler.state import SqlStore
from reconciler.state.base import AuditStatus

from .incoming_kit import NS, SEAL_KEY, corpus, record_mail


def test_a_marker_is_recorded_once_with_its_event_and_audit(store: SqlStore) -> None:
    raw = corpus("01-new-request-plain.eml")
    first, result = record_mail(store, raw, "imap:INBOX:7:1")
    again, _ = record_mail(store, raw, "imap:INBOX:7:1")
    incoming = IncomingStore.of_store(store)
    assert first.event_id is not None and not first.duplicate_marker
    assert again.event_id is None and again.duplicate_marker
    assert len(incoming.events()) == 1
    assert store.audit.count(server="support") == len(result.audit) == 2
    assert incoming.is_done(NS, "support", "imap:INBOX:7:1")
    assert not incoming.is_done(NS, "other", "imap:INBOX:7:1")


def test_a_processed_message_id_makes_a_copy_a_duplicate(store: SqlStore) -> None:
    raw = corpus("01-new-request-plain.eml")
    record_mail(store, raw, "imap:INBOX:7:1")
    _, second = record_mail(store, raw, "imap:INBOX:7:2")  # the same mail delivered twice
    assert second.status == AuditStatus.RECEIVED_IGNORED
    assert second.audit[-1].details["code"] == "duplicate"
    assert len(IncomingStore.of_store(store).events()) == 1


def test_an_ignored_mail_is_not_remembered_as_processed(store: SqlStore) -> None:
    raw = corpus("04-outlook-auto-reply.eml")
    _, result = record_mail(store, raw, "imap:INBOX:7:1")
    assert result.status == AuditStatus.RECEIVED_IGNORED
    assert not IncomingStore.of_store(store).seen_message_id(NS, result.message_id)


def test_replies_are_threaded_through_earlier_message_ids(store: SqlStore) -> None:
    incoming = IncomingStore.of_store(store)
    _, reply = record_mail(store, corpus("02-reply-subject-id.eml"), "imap:INBOX:7:1")
    assert reply.event is not None and reply.event.ticket is not None
    ticket = (reply.event.ticket.module, reply.event.ticket.number)
    assert incoming.thread_lookup(NS, ["unknown@x", f"<{reply.message_id}>"]) == ticket
    incoming.link_ticket(NS, "<created-by-desk@acme.example>", "request", "900")
    assert incoming.thread_lookup(NS, ["created-by-desk@acme.example"]) == ("request", "900")
    assert incoming.thread_lookup("elsewhere", [reply.message_id]) is None


def test_error_details_are_sealed_and_need_the_key(store: SqlStore) -> None:
    raw = b"X-Account: PLANTED-9981\r\n" + corpus("49-no-from.eml")
    record_mail(store, raw, "imap:INBOX:7:1", to_error_folder=True)
    record_mail(store, raw.replace(b"nofrom-0049", b"nofrom-b"), "imap:INBOX:7:2",
                seal_key=None, to_error_folder=True)
    with_key = IncomingStore.of_store(store, SEAL_KEY).errors(NS, "support")
    assert [e.code for e in with_key] == ["no-sender", "no-sender"]
    assert "PLANTED-9981" in with_key[0].details["headers"]  # type: ignore[index]
    assert with_key[1].details is None and not with_key[1].sealed  # no key: codes only
    other_key = b"2S8tkNTKwIoW4t_zwlX4lDNrCpz-8Zg0Zpa9AOtEIAw="
    assert IncomingStore.of_store(store, other_key).errors(NS, "support")[0].details is None
    # no marker: should the move fail, the mail is judged again
    assert not IncomingStore.of_store(store).is_done(NS, "support", "imap:INBOX:7:1")


def test_one_daemon_holds_a_server_until_its_lease_runs_out(store: SqlStore) -> None:
    incoming = IncomingStore.of_store(store)
    now = datetime.now(UTC)
    assert incoming.claim(NS, "support", "daemon-a", lease_seconds=60, now=now)
    assert not incoming.claim(NS, "support", "daemon-b", lease_seconds=60, now=now)
    assert incoming.claim(NS, "support", "daemon-a", lease_seconds=60, now=now)  # renew
    later = now + timedelta(seconds=61)
    assert incoming.claim(NS, "support", "daemon-b", lease_seconds=60, now=later)
    incoming.release(NS, "support", "daemon-b")
    assert incoming.claim(NS, "support", "daemon-a", lease_seconds=60, now=later)


def test_failures_count_up_and_a_success_resets_them(store: SqlStore) -> None:
    incoming = IncomingStore.of_store(store)
    for _ in range(3):
        state = incoming.fetch_failed(NS, "support", "auth", "login refused")
    assert state.consecutive_failures == 3 and state.last_error == "login refused"
    incoming.set_notified(NS, "support")
    before = incoming.fetch_succeeded(NS, "support", error_folder_count=4)
    assert before.failure_notified and before.consecutive_failures == 3
    after = incoming.server_state(NS, "support")
    assert after.consecutive_failures == 0 and not after.failure_notified
    assert after.error_folder_count == 4 and after.last_success_at is not None


def test_due_events_stop_at_one_that_waits_for_a_retry(store: SqlStore) -> None:
    for i, name in enumerate(("01-new-request-plain.eml", "10-alternative-text-html.eml")):
        record_mail(store, corpus(name), f"imap:INBOX:7:{i}")
    incoming = IncomingStore.of_store(store)
    incoming.retry_later(1, "HTTP 503", datetime.now(UTC) + timedelta(hours=1))
    assert incoming.due_events() == []  # the second never overtakes the first
    assert incoming.event(1).attempts == 1  # type: ignore[union-attr]
