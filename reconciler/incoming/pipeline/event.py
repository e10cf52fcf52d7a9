"""What the pipeline hands back: the audit lines and, for a processed mail, a ticket event.

:class:`TicketEvent` is one processed mail normalised (SPEC I8): ``create`` a
ticket, ``reply`` to one, or a ``command`` on one. Its JSON form (orjson, sorted
keys) is described by ``schemas/events/ticket-event.json``, whose ``version``
changes whenever a field changes meaning.

The event lists kept attachments by name, type, size and sha256;
:attr:`PipelineResult.attachment_data` maps each sha256 to the bytes, so the
runner stores them once (two identical files share one entry).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from reconciler.state.base import AuditEntry, AuditStatus

EVENT_SCHEMA = "https://reconciler.dev/schemas/events/ticket-event.json"
EVENT_VERSION = 1


class EventKind(StrEnum):
    CREATE = "create"  # a new ticket
    REPLY = "reply"  # a conversation on an existing ticket
    COMMAND = "command"  # an email command (edit, close, pick up) on an existing ticket


class RefSource(StrEnum):
    SUBJECT = "subject"  # ##RE-123## in the subject
    THREAD = "thread"  # In-Reply-To / References named a message the desk knows
    COMMAND = "command"  # $RequestID=123$ in the body of a command mail


@dataclass(frozen=True, slots=True)
class Address:
    email: str
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"email": self.email, "name": self.name}


@dataclass(frozen=True, slots=True)
class TicketRef:
    """Which ticket a reply or command is about."""

    module: str  # request, task, change, ... (MailSettings.requestIdPrefixes keys)
    number: str  # digits as written, leading zeros dropped
    source: RefSource

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.module, "number": self.number, "source": str(self.source)}


@dataclass(frozen=True, slots=True)
class EventAttachment:
    name: str
    content_type: str
    size: int
    sha256: str
    inline: bool = False  # shown in the body (multipart/related, Content-ID)
    content_id: str | None = None  # without angle brackets, as cid: URLs name it

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "contentType": self.content_type, "size": self.size,
                "sha256": self.sha256, "inline": self.inline, "contentId": self.content_id}


@dataclass(frozen=True, slots=True)
class TicketEvent:
    kind: EventKind
    namespace: str
    server: str  # IncomingServer name
    mailbox: str  # the support address the mail reached
    ticket: TicketRef | None  # None for create
    operation: str | None  # email command operation (AddRequest, EditRequest, ...)
    requester: Address  # sender, or Reply-To when MailSettings.useReplyTo
    sender: Address  # the From address as written
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    subject: str
    text_body: str
    html_body: str | None
    attachments: tuple[EventAttachment, ...]
    fields: Mapping[str, str]  # ticket fields after defaults, rules and commands
    field_sources: Mapping[str, str]  # field -> "defaults" | "rule:<name>" | "command"
    message_id: str
    in_reply_to: str | None
    references: tuple[str, ...]
    received_at: datetime  # when the fetcher got it (UTC)
    sent_at: datetime | None  # the Date header, when it parses
    notes: tuple[str, ...] = ()  # things worth knowing that did not stop processing
    # @@resource.question=answer@@ of an email command: resource -> question -> answers
    resources: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "$schema": EVENT_SCHEMA,
            "version": EVENT_VERSION,
            "kind": str(self.kind),
            "namespace": self.namespace,
            "server": self.server,
            "mailbox": self.mailbox,
            "ticket": self.ticket.to_dict() if self.ticket else None,
            "operation": self.operation,
            "requester": self.requester.to_dict(),
            "from": self.sender.to_dict(),
            "to": [a.to_dict() for a in self.to],
            "cc": [a.to_dict() for a in self.cc],
            "subject": self.subject,
            "textBody": self.text_body,
            "htmlBody": self.html_body,
            "attachments": [a.to_dict() for a in self.attachments],
            "fields": dict(self.fields),
            "fieldSources": dict(self.field_sources),
            "messageId": self.message_id,
            "inReplyTo": self.in_reply_to,
            "references": list(self.references),
            "receivedAt": _iso(self.received_at),
            "sentAt": _iso(self.sent_at) if self.sent_at else None,
            "notes": list(self.notes),
            "resources": {r: {q: list(a) for q, a in qs.items()}
                          for r, qs in self.resources.items()},
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class Audience(StrEnum):
    SENDER = "sender"  # whoever sent the mail
    ERROR_RECIPIENTS = "error-recipients"  # technicians set up for processing-error notices


@dataclass(frozen=True, slots=True)
class Notice:
    """A notification for the runner to send (the pipeline sends nothing): which
    stripped attachments (I5) were dropped and why."""

    audience: tuple[Audience, ...]
    sender: str | None  # the address behind Audience.SENDER
    subject: str
    reason: str
    items: tuple[str, ...] = ()  # e.g. "report.exe: extension .exe is not accepted"


@dataclass(frozen=True)
class PipelineResult:
    """The outcome of one mail.

    ``audit``: a RECEIVED entry, one ATTACHMENT_PROCESSED_FAILED per stripped
    attachment, and one final entry whose status is ``status``. ``event`` only
    when PROCESSED. ``move_to_error_folder`` when the mail could not be handled
    at all (unreadable, an unexpected error): a person should look at it.
    """

    status: AuditStatus
    code: str  # verdict.Code of the final audit entry (its details["code"])
    reason: str
    stage: str  # name of the stage that decided
    message_id: str
    audit: tuple[AuditEntry, ...]
    event: TicketEvent | None = None
    attachment_data: Mapping[str, bytes] = field(default_factory=dict)
    notices: tuple[Notice, ...] = ()
    move_to_error_folder: bool = False
