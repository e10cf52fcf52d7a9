"""What the daemon's API answers, as models: they give the OpenAPI document its
described schemas, and ``reconcile audit --format json`` prints the same
shape as ``GET /v1/audit``.

Plain pydantic, no FastAPI, so the CLI can import this cheaply. Names are
camelCase on the wire, like the config and the intake body.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from reconciler.config.desired import ResourceKey
from reconciler.state.audit import redact_details, redact_text
from reconciler.state.base import (
    AuditDirection,
    AuditEntry,
    AuditStatus,
    OutboxMessage,
    OutboxState,
)


class ApiModel(BaseModel):
    """camelCase on the wire, immutable."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class DroppedAttachmentItem(ApiModel):
    """An attachment the server the notification was routed to will leave out (O4)."""

    name: str = Field(description="The attachment's name as submitted.")
    size: int = Field(description="Its size in bytes (decoded data).")
    limit: int = Field(description="The server's attachment limit in bytes, for the "
                       "attachments together (attachmentLimitMB).")
    reason: str = Field(description="Why, in words: above the limit on its own, or it "
                        "would bring the total over it.")
    server: str = Field(description="The outgoing server intake routed it to.")


class Accepted(ApiModel):
    """The answer to a submission: stored durably before this was sent."""

    id: int = Field(description="Outbox id; `GET /v1/notifications/{id}` follows it.")
    duplicate: bool = Field(
        description="True when the idempotency key was already known in the namespace: `id` "
        "is the notification stored first and nothing new was stored (HTTP 200). False for "
        "a new notification (HTTP 202).")
    status: OutboxState = Field(
        description="`queued` for a new notification; for a duplicate, the current state of "
        "the notification stored first.")
    dropped_attachments: list[DroppedAttachmentItem] = Field(
        default_factory=list,
        description="Only on a 202, and only when not empty: each attachment the server "
        "it was routed to will leave out, being over that server's limit (its "
        "`attachments.oversize` is `drop`; with `refuse` the answer is 422 instead). Routed "
        "with the live config at intake; the SENT audit entry records what was sent.")


class RuleOutcome(ApiModel):
    """One rule tried before the decision, and why it did or did not pick its server."""

    rule: str
    order: int
    server: str
    verdict: str = Field(description="matched, not matched, rule disabled, server disabled, "
                         "server missing.")
    note: str = ""
    failed: list[str] = Field(default_factory=list,
                              description="The conditions that did not hold, in words.")


class Routing(ApiModel):
    """The routing decision a notification keeps across retries (O12) and why (O13)."""

    config_revision: int | None = Field(description="Live config revision it was routed "
                                        "with; null when no server could be chosen.")
    server: str | None = Field(description="Outgoing server chosen.")
    via: str | None = Field(None, description="rule, primary, none, or requeue (an operator "
                            "moved it).")
    rule: str | None = Field(None, description="The rule that matched, if one did.")
    reason: str | None = Field(None, description="The decision in words.")
    rules: list[RuleOutcome] = Field(default_factory=list,
                                     description="Every rule tried, in order.")
    alternates: list[str] = Field(default_factory=list, description="The chosen server's "
                                  "alternate host:port, used while its main host is down.")

    @classmethod
    def of(cls, message: OutboxMessage) -> Routing | None:
        decision = dict(message.decision or {})
        snapshot = message.routing
        if snapshot is None and not decision:
            return None
        return cls(config_revision=snapshot.config_revision if snapshot else None,
                   server=snapshot.server if snapshot else decision.get("server"),
                   via=decision.get("via"), rule=decision.get("rule"),
                   reason=decision.get("reason"), rules=decision.get("rules") or [],
                   alternates=decision.get("alternates") or [])


class NotificationStatus(ApiModel):
    """What became of one submitted notification."""

    id: int
    namespace: str
    module: str | None
    idempotency_key: str | None
    state: OutboxState = Field(
        description="queued, leased (being sent), retry_wait, held, sent, failed, ignored "
        "or cancelled.")
    attempts: int = Field(description="Send attempts started so far.")
    last_error: str | None = Field(description="Why the last attempt failed (redacted).")
    routing: Routing | None = Field(description="Set once a worker has routed it: the "
                                    "server, the rule that matched and the rules skipped.")
    created_at: datetime = Field(description="When it was accepted.")
    updated_at: datetime
    next_attempt_at: datetime = Field(description="When it is (or was) due for a send.")
    first_attempt_at: datetime | None
    events: list[dict[str, Any]] = Field(
        default_factory=list, description="What became of each recipient, oldest first: "
        "sent, failed, rejected or bounced, as the events webhook gets them "
        "(schemas/events/delivery-event.json).")

    @classmethod
    def from_message(cls, message: OutboxMessage,
                     events: list[dict[str, Any]] | None = None) -> NotificationStatus:
        same = {name: getattr(message, name) for name in cls.model_fields
                if name not in ("last_error", "routing", "events")}
        return cls(**same, events=events or [],
                   last_error=redact_text(message.last_error) if message.last_error else None,
                   routing=Routing.of(message))


class AuditItem(ApiModel):
    """One email audit entry (O8): one recipient of one attempt."""

    id: int | None
    time: datetime | None = Field(description="When it was recorded (UTC).")
    status: AuditStatus
    direction: AuditDirection
    reason: str = Field(description="Why, in words: server reply, filter, config problem.")
    namespace: str
    server: str | None = Field(description="Server name from the config.")
    host: str | None = Field(description="host:port actually used (differs after failover).")
    attempt: int | None
    recipient: str | None
    message_id: str | None = Field(description="RFC 5322 Message-ID of the sent message.")
    outbox_id: int | None = Field(description="The notification's id in the outbox.")
    module: str | None
    details: dict[str, Any] | None = Field(description="E.g. dropped attachments (O4).")

    @classmethod
    def from_entry(cls, entry: AuditEntry) -> AuditItem:
        same = {name: getattr(entry, name) for name in cls.model_fields
                if name not in ("time", "details")}
        return cls(**same, time=entry.created_at,
                   details=dict(entry.details) if entry.details is not None else None)


class ResourceStatus(ApiModel):
    """Status recorded for one resource, e.g. a server's health (O9)."""

    kind: str
    namespace: str
    name: str
    status: dict[str, Any] = Field(description="As the health monitor wrote it, redacted.")

    @classmethod
    def from_store(cls, key: ResourceKey, status: dict[str, Any]) -> ResourceStatus:
        return cls(kind=key.kind, namespace=key.namespace, name=key.name,
                   status=redact_details(status))


class IntakeCounters(ApiModel):
    """Group commit since start: how many submissions each transaction stored."""

    batches: int
    messages: int
    largest_batch: int
    failed_batches: int
    handed_off: int = Field(0, description="Stored already leased to this process's worker "
                            "(it had room), skipping the queue.")


class IncomingServerStatus(ApiModel):
    """Fetch state of one IncomingServer (SPEC I6), as `reconcile incoming status` shows it."""

    namespace: str
    server: str
    consecutive_failures: int = Field(description="Connection failures in a row; 0 once a "
                                      "session works again.")
    last_error: str | None = Field(description="The last failure, redacted.")
    last_error_kind: str | None
    last_fetch: datetime | None
    last_success: datetime | None
    paused: str | None = Field(description="Why fetching is paused (e.g. an apply holds "
                               "the lock, or stopFetchingAfter was reached).")
    error_folder_count: int = Field(description="Mails moved to the error folder.")
    fetched_by: str | None = Field(description="The daemon holding this server's lease.")

    @classmethod
    def from_state(cls, state: Any) -> IncomingServerStatus:
        data = state.to_json()
        return cls.model_validate({k: v for k, v in data.items()
                                   if k not in ("failureNotified", "leaseExpires")})


class DaemonStatus(ApiModel):
    """One daemon's view: config, outbox, resource statuses."""

    version: str
    worker_id: str = Field(description="Owner of this daemon's outbox leases.")
    config_revision: int = Field(description="Live config revision in use; -1 before the "
                                 "first load.")
    namespaces: list[str] = Field(description="Namespaces that accept notifications.")
    outbox: dict[OutboxState, int] = Field(
        description="Messages per state; finished states only with `?finished=true`.")
    statuses: list[ResourceStatus] = Field(description="Every recorded resource status.")
    intake: IntakeCounters | None = Field(
        description="Submissions since start, the whole daemon's: null for a token "
        "limited to namespaces (they would count other namespaces' mail).")
    incoming: list[IncomingServerStatus] = Field(
        default_factory=list, description="Fetch state of every incoming server seen so far.")
    ticket_events: dict[str, int] = Field(
        default_factory=dict, description="Incoming ticket events per state (pending, "
        "delivered, rejected).")


class Problem(ApiModel):
    """An error with a sentence saying what to do."""

    detail: str


class FieldProblem(ApiModel):
    loc: list[str | int] = Field(description='Where: e.g. ["body", "to", 0, "email"].')
    field: str = Field(description="The same, readable: e.g. `to[0].email`.")
    msg: str = Field(description="What is wrong with it.")
    type: str = Field(description="Machine-readable kind, e.g. value_error, missing.")


class ValidationProblem(ApiModel):
    """The request was understood but a field is wrong (HTTP 422)."""

    detail: list[FieldProblem]


class Health(ApiModel):
    status: str = Field(description="`ok` while the process serves requests.")


# The failures every guarded route may answer.
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No or wrong bearer token."},
    403: {"model": Problem, "description": "The token lacks the role this needs (the "
          "detail names it), or is limited to namespaces and this is about another or "
          "about all of them."},
    422: {"model": ValidationProblem, "description": "A field is wrong; each one is named."},
    503: {"model": Problem, "description": "The state store is unavailable; retry later."},
}
