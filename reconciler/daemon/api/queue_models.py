"""What ``/v1/outbox`` answers and ``reconcile outbox ... --format json`` prints (O13).

Plain pydantic like :mod:`.schemas`, so the CLI imports it without FastAPI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import Field

from reconciler.daemon.api.schemas import ApiModel, Routing
from reconciler.runtime.queue_control import Action, refusal
from reconciler.state.audit import redact_text
from reconciler.state.base import AuditEntry, AuditStatus, OutboxMessage, OutboxState
from reconciler.state.outbox_control import ControlResult

_OPERATOR = frozenset({AuditStatus.SEND_CANCELLED, AuditStatus.SEND_HELD,
                       AuditStatus.SEND_RELEASED, AuditStatus.SEND_RETRY_NOW,
                       AuditStatus.SEND_REQUEUED})


def _recipients(payload: Mapping[str, Any]) -> list[str]:
    return [str(m.get("email")) for part in ("to", "cc", "bcc")
            for m in payload.get(part) or () if isinstance(m, Mapping)]


class QueueItem(ApiModel):
    """One message in the outbox, as ``outbox list`` shows it."""

    id: int
    namespace: str
    module: str | None
    state: OutboxState
    server: str | None = Field(description="The server it is routed through, once routed.")
    attempts: int = Field(description="Send attempts started so far.")
    recipients: list[str] = Field(description="to, cc and bcc addresses.")
    created_at: datetime
    next_attempt_at: datetime = Field(description="When it is (or was) due.")
    last_error: str | None = Field(description="Why the last attempt failed (redacted).")

    @classmethod
    def of(cls, m: OutboxMessage) -> QueueItem:
        return cls(id=m.id, namespace=m.namespace, module=m.module, state=m.state,
                   server=m.routing.server if m.routing else None, attempts=m.attempts,
                   recipients=_recipients(m.payload), created_at=m.created_at,
                   next_attempt_at=m.next_attempt_at,
                   last_error=redact_text(m.last_error) if m.last_error else None)


class QueueListing(ApiModel):
    messages: list[QueueItem]
    counts: dict[OutboxState, int] = Field(description="Every message matching the filters "
                                           "per state, beyond the page shown.")


class AttemptView(ApiModel):
    """One send attempt, from the audit."""

    attempt: int
    time: datetime | None
    server: str | None
    host: str | None = Field(description="host:port actually used.")
    statuses: list[AuditStatus]
    errors: list[str] = Field(description="What went wrong, per recipient (redacted).")


class OperatorAction(ApiModel):
    time: datetime | None
    status: AuditStatus
    actor: str | None
    reason: str


class QueueMessage(QueueItem):
    """One message in full: routing decision, attempts and operator actions."""

    idempotency_key: str | None
    subject: str | None
    first_attempt_at: datetime | None
    routing: Routing | None
    history: list[AttemptView] = Field(description="Every attempt, oldest first.")
    actions: list[OperatorAction] = Field(description="hold, release, retry, cancel and "
                                          "requeue by operators, oldest first.")

    @classmethod
    def with_audit(cls, m: OutboxMessage, entries: Sequence[AuditEntry]) -> QueueMessage:
        attempts: dict[int, list[AuditEntry]] = {}
        actions = []
        for e in sorted(entries, key=lambda e: (e.created_at or datetime.min, e.id or 0)):
            if e.status in _OPERATOR:
                actions.append(OperatorAction(time=e.created_at, status=e.status,
                                              actor=(e.details or {}).get("actor"),
                                              reason=e.reason))
            elif e.attempt is not None:
                attempts.setdefault(e.attempt, []).append(e)
        history = [AttemptView(
            attempt=n, time=rows[0].created_at, server=rows[0].server,
            host=next((r.host for r in rows if r.host), None),
            statuses=list(dict.fromkeys(r.status for r in rows)),
            errors=list(dict.fromkeys(r.reason for r in rows if r.status != AuditStatus.SENT)))
            for n, rows in sorted(attempts.items())]
        return cls(**QueueItem.of(m).model_dump(), idempotency_key=m.idempotency_key,
                   subject=m.payload.get("subject"), first_attempt_at=m.first_attempt_at,
                   routing=Routing.of(m), history=history, actions=actions)


class ActionRequest(ApiModel):
    """Which messages an action applies to: ids, or a server / namespace selection."""

    ids: list[int] = Field(default_factory=list, max_length=1000)
    server: str | None = Field(None, description="Every message routed through this server.")
    namespace: str | None = None
    all_deferred: bool = Field(False, description="retry: every message waiting for a retry.")
    all_held: bool = Field(False, description="release: every held message.")
    reason: str = Field("", max_length=1000, description="Recorded in the audit; required "
                        "for cancel.")
    to_server: str | None = Field(None, description="requeue: the server to send through "
                                  "(same namespace, existing and enabled).")


class RefusedItem(ApiModel):
    id: int
    state: OutboxState | None = Field(description="Its state; null: no such message.")
    detail: str


class ActionResult(ApiModel):
    action: Action
    actor: str = Field(description="Who did it, as the audit records it.")
    changed: list[int]
    refused: list[RefusedItem] = Field(description="Named messages left as they were, "
                                       "and why.")

    @classmethod
    def of(cls, action: Action, actor: str, result: ControlResult) -> ActionResult:
        return cls(action=action, actor=actor, changed=list(result.changed),
                   refused=[RefusedItem(id=i, state=s, detail=refusal(action, i, s))
                            for i, s in result.refused])
