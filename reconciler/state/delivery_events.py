"""Delivery events (SPEC O14): what became of each recipient of a sent notification.

Every outgoing audit entry that ends a recipient's story (SENT, SEND_FAILED,
SEND_IGNORED, BOUNCED) becomes one event, modelled on anymail's tracking
events: one per recipient, with the event type, time, notification id,
Message-ID, recipient, an ESP-style ``rejectReason`` and the server's words.
With an events webhook configured (``store.delivery_events``) the event is
queued in ``ticket_events`` (kind ``delivery``) in the same transaction as its
audit row, so the one event sink delivers it, in order, after a restart too.
``GET /v1/notifications/{id}`` shows the same events, built from the audit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, insert

from reconciler.state import schema as t
from reconciler.state.base import AuditEntry, AuditStatus
from reconciler.state.contract import PENDING

KIND = "delivery"  # ticket_events.kind of a delivery event
SCHEMA = "https://reconciler.dev/schemas/events/delivery-event.json"
VERSION = 1

# audit status -> anymail's event type
EVENT_TYPES = {AuditStatus.SENT: "sent", AuditStatus.SEND_FAILED: "failed",
               AuditStatus.SEND_IGNORED: "rejected", AuditStatus.BOUNCED: "bounced"}


def _reject_reason(entry: AuditEntry) -> str | None:
    """anymail's vocabulary: why a recipient did not get the mail, in one word."""
    if entry.status == AuditStatus.BOUNCED:
        return "bounced"
    if entry.status == AuditStatus.SEND_IGNORED:
        return "blocked"  # a recipient filter or rule of ours kept it back
    return "other" if entry.status == AuditStatus.SEND_FAILED else None


def delivery_event(entry: AuditEntry, at: datetime) -> dict[str, Any]:
    """The event JSON of one audit entry (``schemas/events/delivery-event.json``)."""
    details = dict(entry.details or {})
    bounce = None
    if entry.status == AuditStatus.BOUNCED:
        bounce = {k: details.get(k) for k in ("status", "kind", "diagnostic", "reportingMta")}
    return {
        "$schema": SCHEMA, "version": VERSION,
        "event": EVENT_TYPES[entry.status], "status": entry.status.value,
        "timestamp": (entry.created_at or at).isoformat().replace("+00:00", "Z"),
        "namespace": entry.namespace, "server": entry.server,
        "notificationId": entry.outbox_id, "messageId": entry.message_id,
        "recipient": entry.recipient, "attempt": entry.attempt,
        "rejectReason": _reject_reason(entry), "description": entry.reason,
        "bounce": bounce, "metadata": {"module": entry.module},
    }


def queue_events(conn: Connection, entries: Sequence[AuditEntry], now: datetime) -> None:
    """Queue the events of ``entries`` for the sink, in the caller's transaction; each
    entry must already be redacted the way its audit row is (``entry_row``)."""
    rows = [{"namespace": e.namespace, "server": e.server or "", "kind": KIND,
             "message_id": (e.message_id or "").strip("<>") or None,
             "payload": orjson.dumps(delivery_event(e, now),
                                     option=orjson.OPT_SORT_KEYS).decode(),
             "created_at": now, "state": PENDING, "attempts": 0, "next_attempt_at": now}
            for e in entries if e.status in EVENT_TYPES and e.recipient is not None]
    if rows:
        conn.execute(insert(t.ticket_events), rows)
