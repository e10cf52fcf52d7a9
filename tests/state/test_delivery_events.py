"""Delivery events (O14) are queued with the audit rows they come from, in one
transaction, one per recipient whose story ended, in order, redacted, and only when
the daemon has a receiver for them; every one matches the published schema."""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft202012Validator, FormatChecker

from reconciler.state import SqlStore
from reconciler.state.base import AuditEntry, AuditStatus, Completion, OutboxState
from reconciler.state.contract import MailRecord

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "events" / "delivery-event.json"
VALIDATOR = Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")),
                                 format_checker=FormatChecker())


def send_outcomes(store: SqlStore) -> int:
    outbox_id = store.outbox.enqueue({"module": "request", "to": ["a@x.example"]},
                                     namespace="default", idempotency_key=None).id
    [claimed] = store.outbox.claim("w", 1, 60)

    def entry(status: AuditStatus, recipient: str, reason: str) -> AuditEntry:
        return AuditEntry(status, reason, server="desk", recipient=recipient, attempt=1,
                          message_id="<m-1@desk.example>", outbox_id=claimed.id,
                          module="request")

    store.outbox.complete_many("w", [Completion(claimed.id, OutboxState.SENT)], audit=[
        entry(AuditStatus.SENT, "a@x.example", "250 2.0.0 queued"),
        entry(AuditStatus.SEND_IGNORED, "b@x.example", "ignored by filter partners"),
        entry(AuditStatus.RETRYING, "c@x.example", "421 busy"),  # not the end of a story
        entry(AuditStatus.SEND_FAILED, "c@x.example", "535 AUTH failed password=hunter2"),
    ])
    return outbox_id


def test_each_ended_recipient_is_one_queued_event_in_order(store: SqlStore) -> None:
    store.delivery_events = True
    outbox_id = send_outcomes(store)
    events = store.incoming.events()
    assert {(e.kind, e.server, e.message_id, e.state) for e in events} == {
        ("delivery", "desk", "m-1@desk.example", "pending")}
    bodies = [json.loads(e.payload) for e in events]
    for body in bodies:
        VALIDATOR.validate(body)
    assert [(b["event"], b["recipient"], b["rejectReason"]) for b in bodies] == [
        ("sent", "a@x.example", None), ("rejected", "b@x.example", "blocked"),
        ("failed", "c@x.example", "other")]
    assert {b["notificationId"] for b in bodies} == {outbox_id}
    assert "hunter2" not in events[2].payload and "password=***" in bodies[2]["description"]


def test_a_bounce_recorded_by_incoming_is_an_event_too(store: SqlStore) -> None:
    store.delivery_events = True
    bounced = AuditEntry(AuditStatus.BOUNCED, "hard bounce 5.1.1: user unknown",
                         server="desk", recipient="a@x.example", message_id="<m-1@d>",
                         outbox_id=3, details={"status": "5.1.1", "kind": "hard",
                                               "diagnostic": "550 5.1.1 user unknown",
                                               "reportingMta": "mx.x.example"})
    store.incoming.record("default", "support", [MailRecord("uid-1", [bounced])])
    [event] = store.incoming.events()
    body = json.loads(event.payload)
    VALIDATOR.validate(body)
    assert (body["event"], body["rejectReason"], body["bounce"]["status"],
            body["bounce"]["kind"]) == ("bounced", "bounced", "5.1.1", "hard")
    assert [e.status for e in store.audit.search(outbox_id=3)] == [AuditStatus.BOUNCED]


def test_without_a_receiver_nothing_piles_up(store: SqlStore) -> None:
    assert store.delivery_events is False
    send_outcomes(store)
    assert store.incoming.events() == []
    assert len(store.audit.search()) == 4
