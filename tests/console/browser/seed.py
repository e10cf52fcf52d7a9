"""Rows for every console screen, written into the store the examples were applied to:
outbox messages (deferred and held), audit lines, an out-of-band revision (history and
drift), error-folder entries and the sync state, in both example namespaces (acme,
globex) so that a namespace-limited user has another tenant's rows to not see."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from reconciler.config.desired import CanonicalResource, DesiredState, ResourceKey
from reconciler.plan.diff import diff
from reconciler.state import RevisionKind, RevisionMeta, SqlStore, open_store
from reconciler.state.base import AuditEntry, AuditStatus, OutboxState
from reconciler.state.contract import ErrorDetails, MailRecord, SyncPhase
from reconciler.state.outbox_control import QueueFilter

OWNER = "browser-test"
# Subjects and recipients the tests look for; the globex ones must never reach acme.
ACME_SUBJECT = "Printer on floor 3 is jammed"
HOLD_SUBJECT = "Badge reader offline"
GLOBEX_SUBJECT = "Globex VPN maintenance"
ACME_RECIPIENT = "ana@acme.example"
GLOBEX_RECIPIENT = "otto@globex.example"
GLOBEX_EDIT = "mail-backup.factory.globex.example"


@dataclass(frozen=True)
class Seeded:
    acme_message: int
    hold_message: int
    globex_message: int
    globex_revision: int


def _deferred(store: SqlStore, namespace: str, subject: str, error: str) -> int:
    note = {"module": "requests", "to": [f"desk@{namespace}.example"], "subject": subject,
            "textBody": "seeded for the browser tests"}
    stored = store.outbox.enqueue(note, namespace=namespace, idempotency_key=None)
    claimed = [m.id for m in store.outbox.claim(OWNER, 1000, 60) if m.id == stored.id]
    assert claimed, "a message just enqueued could not be claimed"
    store.outbox.schedule_retry(stored.id, OWNER, datetime.now(UTC) + timedelta(days=1), error)
    return stored.id


def _audit(store: SqlStore) -> None:
    now = datetime.now(UTC)
    rows = [(AuditStatus.SENT, "acme", "gmail-notifications", ACME_RECIPIENT, "250 2.0.0 OK"),
            (AuditStatus.SEND_FAILED, "acme", "o365-hr", "hr@acme.example",
             "550 5.1.1 mailbox unknown"),
            (AuditStatus.RETRYING, "acme", "gmail-notifications", ACME_RECIPIENT,
             "451 4.3.0 try later"),
            (AuditStatus.SENT, "globex", "factory-ews", GLOBEX_RECIPIENT, "250 2.0.0 OK"),
            (AuditStatus.BOUNCED, "globex", "graph-desk", GLOBEX_RECIPIENT, "mailbox full")]
    store.audit.record([
        AuditEntry(status, reason, namespace=ns, server=server, recipient=rcpt, attempt=1,
                   created_at=now - timedelta(minutes=10 * (len(rows) - i)))
        for i, (status, ns, server, rcpt, reason) in enumerate(rows)])


def _out_of_band(store: SqlStore) -> int:
    """Someone moved globex's EWS host by hand: a revision for history, drift for sync."""
    live = store.snapshot()
    key = ResourceKey("OutgoingServer", "globex", "factory-ews")
    old = live.resources[key]
    edited = CanonicalResource.build(key, old.api_version, {**old.spec, "host": GLOBEX_EDIT},
                                     old.labels)
    resources = [edited if r.key == key else r for r in live]
    changes = diff(DesiredState.of(resources), live, prune=True).changes
    meta = RevisionMeta(actor="carol", message="EWS moved to the backup host",
                        kind=RevisionKind.OUT_OF_BAND)
    return store.commit(changes, meta, base_revision=live.revision).number


def seed_store(store_url: str) -> Seeded:
    with open_store(store_url) as store:
        acme = _deferred(store, "acme", ACME_SUBJECT, "451 4.3.0 try later")
        hold = _deferred(store, "acme", HOLD_SUBJECT, "421 4.7.0 too many connections")
        _deferred(store, "globex", "Globex payroll run notice", "450 4.2.1 mailbox busy")
        globex = _deferred(store, "globex", GLOBEX_SUBJECT, "454 4.7.0 TLS not available")
        # Audit lines before the hold: ids and times then both grow, as in a real store.
        _audit(store)
        store.outbox.hold(QueueFilter(ids=(globex,), states=(OutboxState.RETRY_WAIT,)),
                          actor="seed", reason="waiting for the change window")
        revision = _out_of_band(store)
        store.incoming.record("acme", "gmail-support", [
            MailRecord("imap:INBOX:1:7", error=ErrorDetails("no-sender", None))])
        store.incoming.record("globex", "graph-inbox", [
            MailRecord("graph:inbox:AAMk42", error=ErrorDetails("too-large", None))])
        store.sync.update(phase=SyncPhase.OUT_OF_SYNC, reason="waiting for the sync window",
                          last_fetched="b1c2d3e4f5a6", last_applied="a1b2c3d4e5f6",
                          source="https://git.example/it/mail-config.git")
    return Seeded(acme, hold, globex, revision)
