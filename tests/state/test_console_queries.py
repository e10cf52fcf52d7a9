"""The store queries behind the console (SPEC X6): keyset pages of the audit and of
the history, scoped to namespaces, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.state import SqlStore
from reconciler.state.base import AuditEntry, AuditStatus
from state.kit import create, meta, res, update

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_audit_pages_walk_every_row_once_newest_first(store: SqlStore) -> None:
    store.audit.record([
        AuditEntry(AuditStatus.SENT, f"row {i}", namespace=("acme" if i % 3 else "beta"),
                   recipient=f"user{i % 4}@example.com", created_at=T0 + timedelta(minutes=i))
        for i in range(23)])
    seen: list[str] = []
    before = None
    while page := store.audit.page(before=before, limit=5, namespaces=["acme"]):
        seen += [e.reason for e in page]
        before = page[-1].id
    assert seen == [f"row {i}" for i in reversed(range(23)) if i % 3]


def test_audit_page_combines_filters_with_the_namespace_scope(store: SqlStore) -> None:
    store.audit.record([
        AuditEntry(AuditStatus.SENT, "a", namespace="acme", recipient="Jane@Example.com"),
        AuditEntry(AuditStatus.SEND_FAILED, "b", namespace="acme", recipient="jane@example.com"),
        AuditEntry(AuditStatus.SENT, "c", namespace="beta", recipient="jane@example.com"),
        AuditEntry(AuditStatus.RECEIVED, "d", namespace="acme", recipient="jane@example.com"),
    ])
    got = store.audit.page(recipient="JANE@example.com", namespaces=["acme"],
                           direction="outgoing")
    assert [e.reason for e in got] == ["b", "a"]
    assert [e.reason for e in store.audit.page(status="SENT", namespaces=[])] == []
    assert [e.reason for e in store.audit.page(status="SENT")] == ["c", "a"]


def test_revision_summaries_page_and_hide_other_namespaces(store: SqlStore) -> None:
    a, b = res("a", ns="acme"), res("b", ns="beta")
    store.commit([create(a), create(b)], meta(message="both"), base_revision=0)
    store.commit([create(res("c", ns="beta"))], meta(message="beta only"), base_revision=1)
    a2 = res("a", ns="acme", host="a2")
    store.commit([update(a, a2)], meta(actor="bob", message="acme again",
                                       git_commit="abc123"), base_revision=2)

    everything = store.revision_summaries()
    assert [s.number for s in everything] == [3, 2, 1]
    assert everything[2].resources == (a.key, b.key)
    assert everything[0].meta.git_commit == "abc123"

    scoped = store.revision_summaries(namespaces=["acme"])
    assert [(s.number, s.resources) for s in scoped] == [(3, (a.key,)), (1, (a.key,))]
    assert [s.number for s in store.revision_summaries(before=3, limit=1)] == [2]


def test_waiting_errors_lists_every_server_scoped_and_skips_moved_back(
        store: SqlStore) -> None:
    from reconciler.state.contract import ErrorDetails, MailRecord

    for ns, server in (("acme", "support"), ("acme", "sales"), ("beta", "desk")):
        store.incoming.record(ns, server, [MailRecord(f"m-{ns}-{server}",
                                                      error=ErrorDetails("no-sender", None))])
    store.incoming.errors_moved_back("acme", "sales")
    assert [(e.namespace, e.server) for e in store.incoming.waiting_errors()] == [
        ("beta", "desk"), ("acme", "support")]
    assert [e.server for e in store.incoming.waiting_errors(["acme"])] == ["support"]
