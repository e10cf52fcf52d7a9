"""How one attempt at a message ends: the outbox result and its audit rows (SPEC O7, O8).

:class:`Attempt` keeps what the worker learns step by step (recipients, the
revision and server it was routed with, the Message-ID) for the audit rows. An
attempt ends in one of three ways:

- **Not sent** (:class:`NotSent`, raised before the transport): one SEND_FAILED
  row per recipient; the message fails or is ignored.
- **Try later** (:class:`TryLater`, or an internal error): a problem on our side,
  retried on the default schedule.
- **A transport's result** (:func:`read_result`): the ``SendResult`` as the
  transport classified it; the worker never re-classifies errors itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reconciler.mail.envelope import Envelope
from reconciler.mail.outcome import NotSentReason, Outcome, RecipientResult, SendResult
from reconciler.runtime.backoff import RetryPolicy
from reconciler.state.base import (
    AuditEntry,
    AuditStatus,
    Completion,
    OutboxMessage,
    OutboxState,
    RoutingSnapshot,
)

log = logging.getLogger(__name__)

NOT_SENT = "not_sent"  # metrics outcome of a message that never reached a transport


class NotSent(Exception):
    """The message ends without a send: an O8 "not sent" case."""

    def __init__(self, detail: str, reason: NotSentReason | None = None,
                 state: OutboxState = OutboxState.FAILED) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.state = state
        self.text = f"{reason.value}: {detail}" if reason else detail


class TryLater(NotSent):
    """Not sent this time for a reason on our side; try again later."""


@dataclass(frozen=True, slots=True)
class Finished:
    completion: Completion
    audit: tuple[AuditEntry, ...]
    server: str | None = None
    outcome: str = NOT_SENT


@dataclass
class Attempt:
    msg: OutboxMessage
    recipients: tuple[str, ...] = ()
    revision: int | None = None
    server: str | None = None
    message_id: str | None = None
    audit: list[AuditEntry] = field(default_factory=list)
    fallback: dict[str, Any] = field(default_factory=dict)  # on every row (primary fallback)
    decision: dict[str, Any] | None = None  # set when routed afresh on this attempt

    def entry(self, status: AuditStatus, reason: str, *, recipient: str | None = None,
              host: str | None = None, details: Mapping[str, Any] | None = None) -> AuditEntry:
        info: dict[str, Any] = {} if self.revision is None else {"configRevision": self.revision}
        info.update(self.fallback)
        info.update(details or {})
        return AuditEntry(
            status=status, reason=reason, namespace=self.msg.namespace, server=self.server,
            host=host, attempt=self.msg.attempts, recipient=recipient,
            message_id=self.message_id, outbox_id=self.msg.id, module=self.msg.module,
            details=info or None,
        )

    def per_recipient(self, status: AuditStatus, reason: str, **kw: Any) -> None:
        """One row per recipient (so a search by address finds it), or one without."""
        targets: tuple[str | None, ...] = self.recipients or (None,)
        self.audit.extend(self.entry(status, reason, recipient=r, **kw) for r in targets)

    def finish(self, state: OutboxState, error: str | None, next_at: datetime | None = None,
               outcome: str = NOT_SENT) -> Finished:
        return Finished(Completion(self.msg.id, state, error, next_at, self.routing(),
                                   self.decision), tuple(self.audit), self.server, outcome)

    def routing(self) -> RoutingSnapshot | None:
        """The route taken, when this attempt chose it (not kept from an earlier one)."""
        if self.msg.routing is not None or self.revision is None or self.server is None:
            return None
        return RoutingSnapshot(self.revision, self.server)

    def not_sent(self, stop: NotSent) -> Finished:
        if isinstance(stop, TryLater):
            return self.retry_later(stop.detail)
        self.per_recipient(AuditStatus.SEND_FAILED, stop.text)
        log.warning("outbox %s not sent: %s", self.msg.id, stop.text,
                    extra={"outbox_id": self.msg.id, "server": self.server})
        return self.finish(stop.state, stop.text)

    def retry_later(self, detail: str) -> Finished:
        """A problem on our side (store, a bug): retry with the default backoff."""
        next_at = self.next_at(RetryPolicy.from_settings())
        if next_at is None:
            self.per_recipient(AuditStatus.SEND_FAILED,
                               f"gave up after {self.msg.attempts} attempts: {detail}")
            return self.finish(OutboxState.FAILED, detail)
        self.per_recipient(AuditStatus.RETRYING, detail,
                           details={"nextAttemptAt": next_at.isoformat()})
        return self.finish(OutboxState.RETRY_WAIT, detail, next_at)

    def next_at(self, policy: RetryPolicy, retry_after: float | None = None) -> datetime | None:
        now = datetime.now(UTC)
        return policy.next_attempt(self.msg.attempts, self.msg.first_attempt_at or now, now,
                                   retry_after_seconds=retry_after)


class _Rows:
    """The audit rows of one transport result: per recipient, with what the server said."""

    def __init__(self, attempt: Attempt, envelope: Envelope, result: SendResult) -> None:
        self.attempt = attempt
        self.result = result
        self.recipients = result.recipients or tuple(
            RecipientResult(a, result.outcome) for a in envelope.rcpt_to)
        self.common: dict[str, Any] = {"failure": str(result.failure)} if result.failure else {}
        if result.used_alternate:
            self.common["usedAlternate"] = True

    def add(self, status: AuditStatus, reason: str, r: RecipientResult | None = None,
            **extra: Any) -> None:
        details = {**self.common, **extra}
        if r is not None and r.code is not None:
            details["code"] = r.code
        self.attempt.audit.append(self.attempt.entry(
            status, reason, recipient=r.address if r else None, host=self.result.host,
            details=details))

    def each(self, status: AuditStatus, prefix: str = "", **extra: Any) -> None:
        for r in self.recipients:
            self.add(status, prefix + _why(self.result, r), r, **extra)

    def sent(self, envelope: Envelope) -> None:
        reason = self.result.detail
        extra: dict[str, Any] = {"serverReply": self.result.server_reply}
        if ticket := self.attempt.msg.payload.get("ticket"):
            # The Message-ID -> ticket link replies thread by (incoming thread_lookup):
            # part of the SENT row, so it is durable in the same commit, at no extra write.
            extra["ticket"] = ticket
        if dropped := envelope.dropped_attachments:
            reason += "; attachments dropped: " + "; ".join(
                f"{d.name} ({d.reason})" for d in dropped)
            extra["droppedAttachments"] = [
                {"name": d.name, "size": d.size, "reason": d.reason} for d in dropped]
        for r in self.recipients:
            if r.accepted:
                self.add(AuditStatus.SENT, reason, r, **extra)
                continue
            refusal = f"refused by the server: {_reply(r)}"
            if r.outcome == Outcome.TRANSIENT:
                refusal += (" (a temporary refusal; not retried because the message "
                            "was accepted for the other recipients)")
            self.add(AuditStatus.SEND_FAILED, refusal, r)


def read_result(attempt: Attempt, envelope: Envelope, result: SendResult,
                policy: RetryPolicy) -> Finished:
    """The outbox result and audit rows of a send, as the transport classified it."""
    rows = _Rows(attempt, envelope, result)
    outcome = str(result.outcome)
    if result.outcome == Outcome.SENT:
        rows.sent(envelope)
        return attempt.finish(OutboxState.SENT, None, outcome=outcome)
    if result.outcome == Outcome.IGNORED:
        rows.add(AuditStatus.SEND_FAILED, f"{NotSentReason.NO_RECIPIENTS.value}: {result.detail}")
        return attempt.finish(OutboxState.IGNORED, result.detail, outcome=outcome)
    if result.outcome != Outcome.TRANSIENT:
        rows.each(AuditStatus.SEND_FAILED)
        return attempt.finish(OutboxState.FAILED, result.detail, outcome=outcome)
    msg = attempt.msg
    next_at = attempt.next_at(policy, result.retry_after)
    if next_at is not None:
        asked = {} if result.retry_after is None else {"retryAfterSeconds": result.retry_after}
        rows.each(AuditStatus.RETRYING, nextAttemptAt=next_at.isoformat(), **asked)
        log.info("outbox %s: temporary failure via %s, attempt %d, next at %s: %s",
                 msg.id, attempt.server, msg.attempts, next_at.isoformat(), result.detail,
                 extra={"outbox_id": msg.id, "server": attempt.server, "host": result.host})
        return attempt.finish(OutboxState.RETRY_WAIT, result.detail, next_at, outcome)
    gave_up = f"gave up after {msg.attempts} attempts: "
    if result.retry_after is not None and msg.attempts < policy.max_attempts:
        gave_up += f"the server asked to wait {result.retry_after:g}s, past the retry lifetime: "
    rows.each(AuditStatus.SEND_FAILED, gave_up)
    return attempt.finish(OutboxState.FAILED, gave_up + result.detail, outcome=outcome)


def _reply(r: RecipientResult) -> str:
    return f"{r.code} {r.reason}".strip() if r.code is not None else (r.reason or "no reason")


def _why(result: SendResult, r: RecipientResult) -> str:
    """The attempt's detail, plus what the server said about this recipient if it adds to it."""
    said = _reply(r) if r.reason else ""
    if said and r.reason not in result.detail:
        return f"{result.detail}: {said}"
    return result.detail
