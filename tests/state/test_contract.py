"""The one store contract (``state.base.Store`` and ``state.contract``), area by area,
on SQLite and PostgreSQL: what every caller (CLI, API, daemon, incoming, OAuth) relies on.
Typed against ``Store``: nothing here may need the SQL implementation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.state import (
    AuditEntry,
    AuditStatus,
    HistoryFilter,
    OutboxState,
    StaleRevision,
    Store,
    open_store,
)
from reconciler.state.contract import (
    DELIVERED,
    PENDING,
    ErrorDetails,
    MailRecord,
    NewEvent,
    TokenWrite,
)

from .kit import create, delete, meta, res, update

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
NS = "default"


def test_snapshot_commit_and_history(store: Store) -> None:
    a, b = res("a"), res("b")
    first = store.commit([create(a), create(b)], meta("alice"), base_revision=0)
    a2 = res("a", host="a2")
    store.commit([update(a, a2), delete(b)], meta("bob"), base_revision=first.number)
    with pytest.raises(StaleRevision):
        store.commit([delete(a2)], meta(), base_revision=first.number)
    assert store.head() == 2
    assert list(store.snapshot().resources) == [a2.key]
    assert set(store.snapshot(1).resources) == {a.key, b.key}
    assert [r.number for r in store.revisions(HistoryFilter(actor="bob"))] == [2]
    assert store.revision(1).meta.actor == "alice" and store.verify().ok
    store.status_put(a2.key, {"health": "up"})
    assert store.status_get(a2.key) == {"health": "up"} == store.statuses()[a2.key]


def test_outbox_enqueue_claim_complete_with_audit(store: Store) -> None:
    queued = store.outbox.enqueue({"to": ["a@example.com"], "subject": "hi"}, namespace=NS,
                                  idempotency_key="k1", now=T0)
    again = store.outbox.enqueue({"subject": "other"}, namespace=NS, idempotency_key="k1",
                                 now=T0)
    assert again.duplicate and again.id == queued.id
    [claimed] = store.outbox.claim("w1", 10, 60, now=T0)
    assert store.outbox.claim("w2", 10, 60, now=T0) == []
    entry = AuditEntry(AuditStatus.SENT, "250 ok", recipient="a@example.com",
                       outbox_id=claimed.id, created_at=T0)
    assert store.outbox.complete(claimed.id, "w1", OutboxState.SENT, audit=[entry], now=T0)
    assert store.outbox.get(claimed.id).state is OutboxState.SENT  # type: ignore[union-attr]
    assert store.outbox.depth() == {OutboxState.QUEUED: 0, OutboxState.LEASED: 0,
                                    OutboxState.RETRY_WAIT: 0, OutboxState.HELD: 0}


def test_audit_records_searches_and_purges(store: Store) -> None:
    store.audit.record([
        AuditEntry(AuditStatus.SENT, "ok", recipient="Jane@Example.com", created_at=T0),
        AuditEntry(AuditStatus.SEND_FAILED, "password=hunter2 refused", created_at=T0
                   + timedelta(minutes=1)),
    ])
    [jane] = store.audit.search(recipient="jane@example.com")
    assert jane.status is AuditStatus.SENT
    [failed] = store.audit.search(status=AuditStatus.SEND_FAILED)
    assert "hunter2" not in failed.reason
    assert store.audit.count() == 2
    assert store.audit.purge(T0 + timedelta(seconds=30)) == 1 and store.audit.count() == 1


def _mail(marker: str, *, error: bool = False) -> MailRecord:
    event = NewEvent("create", f"{marker}@example.com", '{"kind": "create"}',
                     {"ab" * 32: b"file"}, ("request", "7"))
    entry = AuditEntry(AuditStatus.PROCESSED, "ticket", namespace=NS, server="support",
                       created_at=T0)
    return MailRecord(marker, [entry], event if not error else None,
                      f"<{marker}@example.com>", ErrorDetails("unreadable", None) if error
                      else None)


def test_incoming_records_each_mail_once_and_tracks_events(store: Store) -> None:
    incoming = store.incoming
    first = incoming.record(NS, "support", [_mail("m1"), _mail("m2", error=True)], now=T0)
    again = incoming.record(NS, "support", [_mail("m1")], now=T0)
    assert first[0].event_id is not None and first[1].event_id is None
    assert again[0].duplicate_marker and again[0].event_id is None
    assert incoming.is_done(NS, "support", "m1")
    assert not incoming.is_done(NS, "support", "m2")  # error folder: judged again
    assert [e.code for e in incoming.errors(NS, "support")] == ["unreadable"]
    assert incoming.seen_message_id(NS, "m1@example.com")
    assert incoming.thread_lookup(NS, ["<m1@example.com>"]) == ("request", "7")
    event_id = first[0].event_id
    assert event_id is not None
    assert incoming.attachment(event_id, "ab" * 32) == b"file"
    assert [e.id for e in incoming.due_events(now=T0)] == [event_id]
    incoming.delivered([event_id], now=T0)
    assert incoming.event_counts()[DELIVERED] == 1 and incoming.event_counts()[PENDING] == 0
    assert incoming.last_event_id(NS) == event_id


def test_incoming_fetch_state_and_lease(store: Store) -> None:
    incoming = store.incoming
    assert incoming.claim(NS, "support", "d1", lease_seconds=30, now=T0)
    assert not incoming.claim(NS, "support", "d2", lease_seconds=30, now=T0)
    assert incoming.claim(NS, "support", "d2", lease_seconds=30, now=T0 + timedelta(minutes=1))
    after = incoming.fetch_failed(NS, "support", "connect", "refused", now=T0)
    assert after.consecutive_failures == 1
    before = incoming.fetch_succeeded(NS, "support", error_folder_count=2, now=T0)
    assert before.consecutive_failures == 1
    assert incoming.server_state(NS, "support").consecutive_failures == 0
    assert [s.name for s in incoming.server_states(NS)] == ["support"]


def test_tokens_are_written_by_generation(store: Store) -> None:
    key = ("OutgoingServer", NS, "mail")
    tokens = store.tokens
    assert tokens.write(key, TokenWrite("d", "clientCredentials", None, "sealed-1"),
                        expect_generation=None) == 1
    assert tokens.write(key, TokenWrite("d", "clientCredentials", None, "sealed-2"),
                        expect_generation=0) is None  # another writer was first
    assert tokens.write(key, TokenWrite("d", "clientCredentials", None, error="revoked",
                                        error_permanent=True), expect_generation=1) == 2
    row = tokens.get(key)
    assert row is not None and row.sealed_text == "sealed-1" and row.last_error == "revoked"
    tokens.expire_access(key, 2)
    assert [r.key for r in tokens.all()] == [key]
    assert tokens.get(key).access_expires_at is None  # type: ignore[union-attr]


def test_one_leader_per_role(store: Store, store_url: str) -> None:
    with open_store(store_url) as other:
        mine, theirs = store.leases.leader("test"), other.leases.leader("test")
        elsewhere = other.leases.leader("another role")
        try:
            assert mine.acquire() and mine.acquire()  # still leading
            assert elsewhere.acquire()  # roles do not block each other
            shared = store_url.startswith("postgresql")
            assert theirs.acquire() is not shared  # SQLite: one daemon per file, it leads
            mine.release()
            assert theirs.acquire()
        finally:
            for leader in (mine, theirs, elsewhere):
                leader.release()
