"""``process(raw, ctx)``: run the stages over one mail and assemble the result.

Never raises for anything in the mail: an exception escaping a stage becomes
PROCESSED_FAILED "unexpected error in stage X" with ``move_to_error_folder``
set, so one strange mail cannot stop a fetch loop.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from reconciler.incoming.pipeline.context import PipelineContext
from reconciler.incoming.pipeline.event import (
    Audience,
    EventKind,
    Notice,
    PipelineResult,
    TicketEvent,
)
from reconciler.incoming.pipeline.stages import STAGES, Work
from reconciler.incoming.pipeline.verdict import Code, Verdict, failed
from reconciler.state.base import AuditEntry, AuditStatus

_SUBJECT_IN_AUDIT = 200  # characters: enough to recognise a mail, not a copy of it


def process(raw: bytes, ctx: PipelineContext, *,
            received_at: datetime | None = None) -> PipelineResult:
    """Judge one fetched mail (its raw RFC 5322 bytes) with a compiled PipelineContext."""
    work = Work(raw=raw, ctx=ctx, received_at=received_at or datetime.now(UTC))
    verdict: Verdict | None = None
    stage = "event"
    for name, run in STAGES:
        try:
            verdict = run(work)
        except Exception as exc:  # the promise of this module: no mail raises
            verdict = _unexpected(f"in stage {name}", exc)
        if verdict is not None:
            stage = name
            break
    try:
        return _result(work, verdict, stage)
    except Exception as exc:
        work.kept.clear()
        work.stripped.clear()
        return _result(work, _unexpected("building the event", exc), stage)


def _unexpected(where: str, exc: Exception) -> Verdict:
    return failed(Code.UNEXPECTED, f"unexpected error {where}: {type(exc).__name__}: {exc}"[:500],
                  error_folder=True)


def _result(w: Work, verdict: Verdict | None, stage: str) -> PipelineResult:
    ctx = w.ctx
    mail = w.mail
    message_id = mail.message_id if mail is not None else ""
    sender = mail.sender.email if mail is not None and mail.sender else None

    def entry(status: AuditStatus, reason: str, **details: Any) -> AuditEntry:
        return AuditEntry(status=status, reason=reason, namespace=ctx.namespace,
                          server=ctx.server_name, recipient=sender,
                          message_id=message_id or None, details=details)

    subject = mail.subject[:_SUBJECT_IN_AUDIT] if mail is not None else ""
    audit = [entry(AuditStatus.RECEIVED, f"fetched by {ctx.server_name}", subject=subject)]
    if verdict is not None:
        audit.extend(verdict.entries or [entry(verdict.status, verdict.reason,
                                               code=verdict.code, stage=stage,
                                               **verdict.details)])
        return PipelineResult(verdict.status, verdict.code, verdict.reason, stage, message_id,
                              tuple(audit), move_to_error_folder=verdict.error_folder)

    for r in w.stripped:
        audit.append(entry(AuditStatus.ATTACHMENT_PROCESSED_FAILED,
                           f"attachment {r.name} removed: {r.reason}", code=str(r.problem),
                           stage="attachments", attachment=r.name, content_type=r.content_type,
                           size=r.size))
    notices = (Notice(
        audience=(Audience.SENDER, Audience.ERROR_RECIPIENTS),
        sender=w.sender.email,
        subject=f"Attachments removed from your mail: {mail.subject}"[:200],
        reason="some attachments could not be accepted and were removed",
        items=tuple(f"{r.name}: {r.reason}" for r in w.stripped)),) if w.stripped else ()

    event = _event(w)
    ticket = f"{event.ticket.module} {event.ticket.number}" if event.ticket else ""
    code, reason = {
        EventKind.CREATE: (Code.CREATED, "a new ticket"),
        EventKind.REPLY: (Code.REPLIED, f"a reply to {ticket}"),
        EventKind.COMMAND: (Code.COMMAND, f"command {event.operation} on {ticket}"),
    }[event.kind]
    audit.append(entry(AuditStatus.PROCESSED, reason, code=code, stage="event",
                       kind=str(event.kind), kept_attachments=len(event.attachments),
                       stripped_attachments=len(w.stripped)))
    return PipelineResult(AuditStatus.PROCESSED, code, reason, "event", message_id, tuple(audit),
                          event=event, attachment_data=dict(w.data), notices=notices)


def _event(w: Work) -> TicketEvent:
    # (field, value, source); a later one wins: defaults < incoming rules < commands.
    layers = [(key, value, "defaults") for key, value in w.ctx.defaults]
    layers += [(key, value, f"rule:{rule}") for key, (value, rule) in w.rule_fields.items()]
    if w.commands is not None:
        layers += [(key, value, "command") for key, value in w.commands.fields.items()]
    fields = {key: value for key, value, _ in layers}
    sources = {key: source for key, _, source in layers}
    m = w.mail
    return TicketEvent(
        kind=w.kind,
        namespace=w.ctx.namespace,
        server=w.ctx.server_name,
        mailbox=w.mailbox,
        ticket=w.ticket,
        operation=w.commands.operation if w.commands else None,
        requester=w.requester,
        sender=w.sender,
        to=m.to,
        cc=m.cc,
        subject=m.subject,
        text_body=m.text_body,
        html_body=m.html_body,
        attachments=tuple(w.kept),
        fields=fields,
        field_sources=sources,
        message_id=m.message_id,
        in_reply_to=m.in_reply_to,
        references=m.references,
        received_at=w.received_at.astimezone(UTC),
        sent_at=m.sent_at,
        notes=tuple(dict.fromkeys(w.notes)),
        resources={r: {q: tuple(a) for q, a in qs.items()}
                   for r, qs in (w.commands.resources if w.commands else {}).items()},
    )
