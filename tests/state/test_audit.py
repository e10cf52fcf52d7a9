"""The email audit (SPEC O8): search filters, paging, and no secret ever stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from peers.postgres import RawSql

from reconciler.state import SqlStore
from reconciler.state.audit import redact_text
from reconciler.state.base import AuditDirection, AuditEntry, AuditStatus, OutboxState

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def seed(store: SqlStore) -> None:
    store.audit.record([
        AuditEntry(AuditStatus.SENT, "250 2.0.0 OK queued as 1A2B", server="gmail",
                   host="smtp.gmail.com:587", attempt=1, recipient="Jane.Doe@Example.com",
                   message_id="<m1@desk.example>", outbox_id=1, module="requests",
                   created_at=at(0)),
        AuditEntry(AuditStatus.SEND_IGNORED, "recipient filter corp-only", server="gmail",
                   recipient="mallory@outside.example", outbox_id=1, created_at=at(1)),
        AuditEntry(AuditStatus.RETRYING, "421 4.7.0 try later", server="office365",
                   attempt=1, recipient="jane.doe@example.com", outbox_id=2, created_at=at(2)),
        AuditEntry(AuditStatus.SEND_FAILED, "recipients list is empty", namespace="acme",
                   outbox_id=3, created_at=at(3)),
        AuditEntry(AuditStatus.SENT, "250 OK", server="office365", attempt=2,
                   recipient="JANE.DOE@example.com", outbox_id=2, created_at=at(4)),
        AuditEntry(AuditStatus.RECEIVED, "fetched", server="imap-desk",
                   recipient="desk@example.com", created_at=at(5)),
    ])


def reasons(entries: list[AuditEntry]) -> list[str]:
    return [e.reason for e in entries]


def test_search_is_newest_first_and_returns_what_was_recorded(store: SqlStore) -> None:
    seed(store)
    found = store.audit.search()
    assert [e.created_at for e in found] == [at(m) for m in (5, 4, 3, 2, 1, 0)]
    oldest = found[-1]
    assert oldest.id is not None
    assert (oldest.status, oldest.direction, oldest.server, oldest.host, oldest.attempt,
            oldest.recipient, oldest.message_id, oldest.outbox_id, oldest.module) == (
        AuditStatus.SENT, AuditDirection.OUTGOING, "gmail", "smtp.gmail.com:587", 1,
        "Jane.Doe@Example.com", "<m1@desk.example>", 1, "requests")
    assert found[0].direction is AuditDirection.INCOMING


def test_search_filters(store: SqlStore) -> None:
    seed(store)
    audit = store.audit
    assert reasons(audit.search(status=AuditStatus.SENT)) == [
        "250 OK", "250 2.0.0 OK queued as 1A2B"]
    assert len(audit.search(status=["SEND_FAILED", AuditStatus.SEND_IGNORED])) == 2
    # recipient: the whole address, whatever its case when recorded or searched
    assert [e.created_at for e in audit.search(recipient="jane.DOE@example.COM")] == [
        at(4), at(2), at(0)]
    assert audit.search(recipient="jane") == []
    assert [e.created_at for e in audit.search(server="office365")] == [at(4), at(2)]
    assert [e.created_at for e in audit.search(since=at(1), until=at(3))] == [
        at(3), at(2), at(1)]
    assert len(audit.search(direction="incoming")) == 1
    assert len(audit.search(direction=AuditDirection.OUTGOING)) == 5
    assert reasons(audit.search(namespace="acme")) == ["recipients list is empty"]
    assert len(audit.search(outbox_id=2)) == 2
    assert len(audit.search(message_id="m1@desk.example")) == 1
    assert len(audit.search(message_id="<m1@desk.example>")) == 1
    combined = audit.search(status="SENT", recipient="jane.doe@example.com", since=at(1))
    assert [e.created_at for e in combined] == [at(4)]
    assert audit.count(recipient="JANE.doe@example.com") == 3 and audit.count() == 6
    with pytest.raises(ValueError):
        audit.search(status="DELIVERED")


def test_paging_walks_every_entry_once(store: SqlStore) -> None:
    seed(store)
    pages = [store.audit.search(limit=4, offset=0), store.audit.search(limit=4, offset=4),
             store.audit.search(limit=4, offset=8)]
    assert [len(p) for p in pages] == [4, 2, 0]
    ids = [e.id for p in pages for e in p]
    assert len(set(ids)) == 6 and ids == [e.id for e in store.audit.search(limit=None)]


def test_entries_of_one_moment_keep_insertion_order_newest_first(store: SqlStore) -> None:
    store.audit.record([AuditEntry(AuditStatus.SENT, str(i), created_at=T0) for i in range(3)])
    assert reasons(store.audit.search()) == ["2", "1", "0"]


def test_entries_without_a_time_are_stamped(store: SqlStore) -> None:
    before = datetime.now(UTC)
    store.audit.record([AuditEntry(AuditStatus.SEND_FAILED, "no enabled outgoing server")])
    [entry] = store.audit.search()
    assert entry.created_at is not None and entry.created_at >= before - timedelta(seconds=1)
    store.audit.record([])  # nothing to do, no transaction


def test_unknown_status_is_refused_before_writing(store: SqlStore) -> None:
    with pytest.raises(ValueError):
        store.audit.record([AuditEntry(AuditStatus.SENT), AuditEntry("LOST")])  # type: ignore[arg-type]
    assert store.audit.search() == []


def test_purge_removes_old_entries_only(store: SqlStore) -> None:
    seed(store)
    assert store.audit.purge(at(3)) == 3
    assert [e.created_at for e in store.audit.search()] == [at(5), at(4), at(3)]


# -- no secrets in the audit (SPEC C5) ------------------------------------------

SECRETS = ("hunter2", "AGFsaWNlAGh1bnRlcjI=", "eyJhbGciOi.J9.sig-abc", "s3cr3t-client",
           "gAAAAABmZ3Jvb3Q", "tok_live_123")


def test_no_secret_reaches_the_database(store: SqlStore, raw_sql: RawSql) -> None:
    store.audit.record([AuditEntry(
        AuditStatus.SEND_FAILED,
        reason=("535 5.7.8 authentication failed for AUTH PLAIN AGFsaWNlAGh1bnRlcjI= "
                "via postgresql://desk:hunter2@db.example/mail; Authorization: Bearer "
                "eyJhbGciOi.J9.sig-abc; client_secret=s3cr3t-client api_key: 'tok_live_123'"),
        host="smtp://desk:hunter2@smtp.example.com:587",
        details={
            "server": {"auth": {"clientSecret": {"secretRef": "enc:v1:gAAAAABmZ3Jvb3Q="},
                                "password": "hunter2"}},
            "transcript": ["AUTH XOAUTH2 AGFsaWNlAGh1bnRlcjI="],
            "token": {"value": "tok_live_123"},
        },
    )])
    # and the outbox's last_error goes through the same redaction
    mid = store.outbox.enqueue({"module": "m"}, namespace="default", idempotency_key="k").id
    store.outbox.claim("daemon-a", 1, 60)
    store.outbox.complete(mid, "daemon-a", OutboxState.FAILED,
                          error="login failed: password=hunter2")

    stored = " ".join(str(v) for table in ("audit", "outbox")
                      for row in raw_sql(f"SELECT * FROM {table}") for v in row)
    for secret in SECRETS:
        assert secret not in stored, f"{secret!r} was written to the store"
    [entry] = store.audit.search()
    assert "535 5.7.8 authentication failed" in entry.reason  # the useful part stays
    assert entry.details is not None
    assert entry.details["server"]["auth"]["clientSecret"]["secretRef"].startswith("enc:v1:***")
    assert entry.host == "smtp://desk:***@smtp.example.com:587"


@pytest.mark.parametrize(("text", "expected"), [
    ("AUTH LOGIN ZGVzaw==", "AUTH LOGIN ***"),
    ("Bearer abc.def-ghi", "Bearer ***"),
    ('{"password": "pw123"}', '{"password": ***}'),
    ("https://u:p@host/x", "https://u:***@host/x"),
    ("550 5.1.1 <jane@example.com>: no such user", "550 5.1.1 <jane@example.com>: no such user"),
    ("token expired", "token expired"),
])
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_long_reasons_are_cut(store: SqlStore) -> None:
    store.audit.record([AuditEntry(AuditStatus.SEND_FAILED, "x" * 10_000)])
    [entry] = store.audit.search()
    assert 1000 < len(entry.reason) <= 2000
