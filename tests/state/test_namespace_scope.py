"""The store's filters for a namespace-limited caller (SPEC S3): audit, outbox search,
count and actions, ticket events, on SQLite and PostgreSQL."""

from __future__ import annotations

from incoming.incoming_kit import SEAL_KEY, corpus, pipeline_context

from reconciler.incoming.pipeline.run import process
from reconciler.incoming.store import IncomingStore, JudgedMail
from reconciler.state import SqlStore
from reconciler.state.base import AuditEntry, AuditStatus, OutboxState
from reconciler.state.outbox_control import QueueFilter

ACME = ("acme",)


def _fill(store: SqlStore) -> dict[str, int]:
    ids = {}
    mails = {"default": "01-new-request-plain.eml", "acme": "10-alternative-text-html.eml"}
    for ns, mail in mails.items():
        ids[ns] = store.outbox.enqueue({"module": "requests", "subject": ns, "textBody": "x",
                                        "to": [{"email": "r@example.com"}]},
                                       namespace=ns, idempotency_key=ns).id
        store.audit.record([AuditEntry(AuditStatus.SENT, "sent", ns, outbox_id=ids[ns])])
        raw = corpus(mail)
        IncomingStore.of_store(store, SEAL_KEY).record_many(ns, "support", [JudgedMail(
            f"imap:INBOX:1:{ns}", process(raw, pipeline_context(store)), raw, False)])
    return ids


def test_audit_and_outbox_keep_to_the_namespaces_given(store: SqlStore) -> None:
    ids = _fill(store)
    sent = AuditStatus.SENT
    assert {e.namespace for e in store.audit.search(namespaces=ACME)} == {"acme"}
    assert store.audit.search(namespaces=ACME, namespace="default") == []
    assert store.audit.count(namespaces=ACME, status=sent) == 1
    assert len(store.audit.search(namespaces=None, status=sent)) == 2
    limited = QueueFilter(namespaces=ACME)
    assert [m.id for m in store.outbox.search(limited)] == [ids["acme"]]
    assert store.outbox.count(limited)[OutboxState.QUEUED] == 1
    held = store.outbox.hold(QueueFilter(ids=(ids["default"], ids["acme"]), namespaces=ACME),
                             actor="test")
    assert held.changed == (ids["acme"],)
    # another namespace's message is reported as absent, its state untold
    assert held.refused == ((ids["default"], None),)
    assert store.outbox.get(ids["default"]).state is OutboxState.QUEUED


def test_ticket_events_keep_to_the_namespaces_given(store: SqlStore) -> None:
    _fill(store)
    incoming = store.incoming
    every = incoming.events(after=0)
    assert {e.namespace for e in every} == {"default", "acme"}
    [acme] = incoming.events(after=0, namespaces=ACME)
    assert acme.namespace == "acme"
    assert incoming.events(after=0, namespaces=ACME, namespace="default") == []
    assert incoming.last_event_id(namespaces=ACME) == acme.id
    assert incoming.event_counts(ACME) == {"pending": 1, "delivered": 0, "rejected": 0}
    assert incoming.acknowledge(max(e.id for e in every), namespaces=ACME) == 1
    assert incoming.event_counts(ACME)["delivered"] == 1
    assert incoming.event_counts(("default",))["pending"] == 1
