"""The store queries behind the console at scale (SPEC X6), on SQLite and PostgreSQL:
every server's last send in one query (state.audit_latest) and keyset outbox pages
over a set of namespaces (state.outbox_control)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.state import SqlStore
from reconciler.state.audit_latest import CHUNK
from reconciler.state.base import AuditEntry, AuditStatus, EnqueueRequest, OutboxState
from reconciler.state.outbox_control import QueueFilter

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_last_sent_is_the_newest_sent_line_per_namespace_and_server(store: SqlStore) -> None:
    servers = [(f"ns{i % 7}", f"smtp{i}") for i in range(CHUNK + 30)]  # two statements
    store.audit.record([
        AuditEntry(status, "x", namespace=ns, server=name,
                   created_at=T0 + timedelta(minutes=minutes))
        for ns, name in servers[::10]
        for status, minutes in ((AuditStatus.SENT, 1), (AuditStatus.SENT, 5),
                                (AuditStatus.SEND_FAILED, 9), (AuditStatus.RETRYING, 8))])
    store.audit.record([AuditEntry(AuditStatus.SENT, "x", namespace="elsewhere",
                                   server="smtp0", created_at=T0 + timedelta(hours=1))])
    got = store.audit.last_sent(servers + servers[:3])  # repeats are harmless
    assert got == {pair: T0 + timedelta(minutes=5) for pair in servers[::10]}
    assert store.audit.last_sent([]) == {}
    assert store.audit.last_sent([("nobody", "smtp0")]) == {}


def _deferred(store: SqlStore, namespaces: list[str]) -> list[int]:
    results = store.outbox.enqueue_many([EnqueueRequest(
        {"module": "requests", "to": ["a@example.com"], "subject": str(i), "textBody": "x"},
        ns) for i, ns in enumerate(namespaces)])
    later = datetime.now(UTC) + timedelta(hours=1)
    for m in store.outbox.claim("test", 1000, 60):
        store.outbox.schedule_retry(m.id, "test", later, "451 later")
    return [r.id for r in results]


def test_outbox_pages_walk_a_namespace_set_in_id_order(store: SqlStore) -> None:
    namespaces = [("acme", "beta", "gamma")[i % 3] for i in range(40)]
    ids = _deferred(store, namespaces)
    mine = [i for i, ns in zip(ids, namespaces, strict=True) if ns != "gamma"]
    where = QueueFilter(states=(OutboxState.RETRY_WAIT,), namespaces=("acme", "beta"))
    seen: list[int] = []
    after = None
    while page := store.outbox.page(where, after=after, limit=7):
        seen += [m.id for m in page]
        after = page[-1].id
    assert seen == mine
    one = store.outbox.page(QueueFilter(namespaces=("beta",)), limit=100)
    assert {m.namespace for m in one} == {"beta"} and len(one) == namespaces.count("beta")
    assert store.outbox.page(QueueFilter(namespaces=()), limit=100) == []
    assert len(store.outbox.page(QueueFilter(), after=ids[-3], limit=100)) == 2
    held = store.outbox.page(QueueFilter(states=(OutboxState.HELD,)), limit=100)
    assert held == []
