"""The pipeline's stages, in order. Each is a small function over :class:`Work`.

A stage either returns None (carry on) or a :class:`Verdict` (stop: the mail
is ignored or failed, with a reason). The order matters and is chosen so
that the cheapest, most certain reasons come first and each verdict is the
one a person would expect: a duplicate of an auto-reply is reported as an
auto-reply; a guest's mail to a Cc-only mailbox is reported as Cc-only only
after it is known to be a new ticket. docs/incoming.md explains each reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from reconciler.config.models.base import MatchMode
from reconciler.config.models.incoming_email_rule import IncomingAction
from reconciler.config.models.recipient_filter import FilterType
from reconciler.incoming.pipeline import attachments as att
from reconciler.incoming.pipeline.bounce import bounce_verdict, looks_like_bounce
from reconciler.incoming.pipeline.commands import Commands, applies, parse_commands
from reconciler.incoming.pipeline.context import ConditionSet, PipelineContext
from reconciler.incoming.pipeline.directory import UserStatus
from reconciler.incoming.pipeline.event import (
    Address,
    EventAttachment,
    EventKind,
    RefSource,
    TicketRef,
)
from reconciler.incoming.pipeline.forwarded import inline_original_sender
from reconciler.incoming.pipeline.parse import ParsedMail, parse
from reconciler.incoming.pipeline.verdict import Code, Verdict, failed, ignored
from reconciler.runtime.routing import evaluate


@dataclass(slots=True)
class Work:
    """One mail on its way through the stages; each stage fills in what it learns."""

    raw: bytes
    ctx: PipelineContext
    received_at: datetime
    mail: ParsedMail = None  # type: ignore[assignment]  # set by the parse stage, as are:
    sender: Address = None  # type: ignore[assignment]
    requester: Address = None  # type: ignore[assignment]
    fields: _MailFields = None  # type: ignore[assignment]  # what filters and rules test
    mailbox: str = ""
    kind: EventKind = EventKind.CREATE
    ticket: TicketRef | None = None
    commands: Commands | None = None
    rule_fields: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (value, rule)
    kept: list[EventAttachment] = field(default_factory=list)
    data: dict[str, bytes] = field(default_factory=dict)
    stripped: list[att.Rejected] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _MailFields(Mapping[str, str]):
    """The fields spam filters and incoming rules test: subject, from, fromName,
    replyTo, to, cc, body, plus any header as ``header:Name``."""

    def __init__(self, mail: ParsedMail) -> None:
        assert mail.sender is not None  # the parse stage stops a mail without one
        self._mail = mail
        self._base = {
            "subject": mail.subject,
            "from": mail.sender.email,
            "fromName": mail.sender.name or "",
            "replyTo": ", ".join(a.email for a in mail.reply_to),
            "to": ", ".join(a.email for a in mail.to),
            "cc": ", ".join(a.email for a in mail.cc),
            "body": mail.text_body,
        }

    def __getitem__(self, key: str) -> str:
        if key in self._base:
            return self._base[key]
        prefix, _, name = key.partition(":")
        value = self._mail.header(name) if prefix.casefold() == "header" and name else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)


def matches(conditions: ConditionSet, fields: Mapping[str, str]) -> bool:
    results = (evaluate(c, fields).matched for c in conditions.conditions)
    return any(results) if conditions.match == MatchMode.ANY else all(results)


# --- the stages -------------------------------------------------------------------------------

def read(w: Work) -> Verdict | None:
    try:
        w.mail = parse(w.raw)
    except ValueError as exc:
        return failed(Code.UNREADABLE, f"the mail could not be read: {exc}", error_folder=True)
    w.notes.extend(w.mail.notes)
    if w.mail.sender is None:
        if w.mail.message.get_content_type() == "multipart/report":
            # bounces often have no usable From: still a report, matched like any other
            return bounce_verdict(w.mail, w.ctx.namespace, w.ctx.server_name, w.ctx.sent_lookup)
        return failed(Code.NO_SENDER, "the mail has no usable From address, so there is no one "
                      "to create a ticket for", error_folder=True)
    w.sender = w.mail.sender
    reply_to = w.mail.reply_to
    w.requester = reply_to[0] if reply_to and w.ctx.settings.use_reply_to else w.sender
    w.fields = _MailFields(w.mail)
    return None


def own_mail(w: Work) -> Verdict | None:
    address = w.sender.email
    if address.casefold() in w.ctx.own_addresses:
        return ignored(Code.OWN_MAIL, f"sent from the desk's own address {address}: the "
                       "desk's own acknowledgements never become tickets", address=address)
    return None


def self_reference(w: Work) -> Verdict | None:
    m = w.mail
    if not m.message_id_synthetic and (m.in_reply_to == m.message_id
                                       or m.message_id in m.references):
        return ignored(Code.SELF_REFERENCE, "In-Reply-To/References name the mail itself: a "
                       "mail loop, not a reply", message_id=m.message_id)
    return None


_AUTO_PRECEDENCE = frozenset({"bulk", "junk", "auto_reply", "auto-reply"})
_AUTO_SUPPRESS = ("all", "oof", "autoreply")


# Header -> does this value mark an automatic reply?
_AUTO_HEADERS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("Auto-Submitted", lambda v: v.split(";")[0].strip().casefold() != "no"),
    ("Precedence", lambda v: v.strip().casefold() in _AUTO_PRECEDENCE),
    ("X-Auto-Response-Suppress",
     lambda v: any(t.strip().casefold() in _AUTO_SUPPRESS for t in v.split(","))),
    ("X-Autoreply", lambda v: True),
    ("X-Autorespond", lambda v: True),
)


def auto_reply(w: Work) -> Verdict | None:
    m = w.mail
    if looks_like_bounce(m, w.sender.email):
        return bounce_verdict(m, w.ctx.namespace, w.ctx.server_name, w.ctx.sent_lookup)
    for header, is_auto in _AUTO_HEADERS:
        value = m.header(header)
        if value is not None and is_auto(value):
            return ignored(Code.AUTO_REPLY, f"an automatic reply ({header}: {value}); answering "
                           "it could start a mail loop", header=header, value=value)
    return None


def duplicate(w: Work) -> Verdict | None:
    if w.ctx.seen_message_id(w.mail.message_id):
        return ignored(Code.DUPLICATE, f"this mail was processed before (Message-ID "
                       f"<{w.mail.message_id}>)", message_id=w.mail.message_id)
    return None


def sender_filter(w: Work) -> Verdict | None:
    flt = w.ctx.sender_filter
    if flt is None:
        return None
    checks = [("sender", w.sender.email, Code.SENDER_IGNORED, Code.SENDER_NOT_ALLOWED)]
    if w.ctx.settings.use_reply_to and w.mail.reply_to:
        checks.append(("Reply-To", w.mail.reply_to[0].email, Code.REPLY_TO_IGNORED,
                       Code.REPLY_TO_NOT_ALLOWED))
    allow = flt.type == FilterType.ALLOW
    for role, address, on_ignore, not_allowed in checks:
        hit = flt.entry_for(address)
        if allow and hit is None:
            return ignored(not_allowed, f"{role} {address} is not on allow list {flt.name}",
                           filter=flt.name, address=address)
        if not allow and hit is not None:
            return ignored(on_ignore, f"{role} {address} matches {hit[1]} on ignore list "
                           f"{flt.name}", filter=flt.name, address=address, entry=hit[1])
    return None


def forwarded_sender(w: Work) -> Verdict | None:
    flt = w.ctx.sender_filter
    if flt is None or flt.type != FilterType.IGNORE:
        return None
    originals = list(w.mail.forwarded_from)
    inline = inline_original_sender(w.mail.subject, w.mail.text_body)
    if inline is not None:
        originals.append(inline)
    for original in originals:
        entry = flt.entry_for(original.email)
        if entry is not None:
            return failed(Code.FORWARDED_IGNORED, f"a forwarded mail whose original sender "
                          f"{original.email} matches {entry[1]} on ignore list {flt.name}",
                          filter=flt.name, address=original.email)
    return None


def sender_status(w: Work) -> Verdict | None:
    if w.ctx.directory is None:
        return None
    user = w.ctx.directory.lookup(w.sender.email)
    if user is not None and user.status != UserStatus.ACTIVE:
        return ignored(Code.SENDER_INACTIVE, f"sender {w.sender.email} belongs to a user who "
                       f"is {user.status}; restore the user to accept their mail",
                       address=w.sender.email, user_status=str(user.status))
    return None


def spam_filter(w: Work) -> Verdict | None:
    for spam in w.ctx.spam_filters:
        if matches(spam, w.fields):
            return ignored(Code.SPAM, f"matched spam filter {spam.name}", filter=spam.name)
    return None


def incoming_rules(w: Work) -> Verdict | None:
    for rule in w.ctx.rules:
        if not matches(rule, w.fields):
            continue
        if rule.action == IncomingAction.IGNORE:
            return ignored(Code.RULE_IGNORE, f"ignored by incoming email rule {rule.name}",
                           rule=rule.name)
        for key, value in rule.set_fields:
            # Rules run in order; the first rule that sets a field decides it.
            w.rule_fields.setdefault(key, (value, rule.name))
        if rule.stop_processing:
            break
    return None


def email_command(w: Work) -> Verdict | None:
    command = w.ctx.command
    if command is None or not applies(command, w.mail.subject):
        return None
    if command.authorized_senders_only:
        user = w.ctx.directory.lookup(w.sender.email) if w.ctx.directory else None
        if user is None or not user.commands or user.status != UserStatus.ACTIVE:
            w.notes.append(f"email commands not read: {w.sender.email} is not authorised to "
                           "send them")
            return None
    parsed = parse_commands(w.mail.text_body, command)
    w.notes.extend(parsed.notes)
    if parsed.error:
        return failed(Code.COMMAND_FAILED, parsed.error, command=command.name)
    w.commands = parsed
    return None


def threading(w: Work) -> Verdict | None:
    m, ctx = w.mail, w.ctx
    commands = w.commands
    found, unknown = ctx.request_ids.find(m.subject)
    if commands is not None and commands.request_id is not None:
        w.ticket = TicketRef(ctx.request_ids.default_module, commands.request_id, RefSource.COMMAND)
    elif found is not None:
        w.ticket = TicketRef(found[0], found[1], RefSource.SUBJECT)
    else:
        ids = ([m.in_reply_to] if m.in_reply_to else []) + [
            r for r in reversed(m.references) if r != m.in_reply_to]
        hit = ctx.thread_lookup(ids) if ids else None
        if hit is not None:
            w.ticket = TicketRef(hit[0], str(hit[1]), RefSource.THREAD)
    operation = commands.operation if commands else None
    if operation == "AddRequest":
        if w.ticket is not None:
            w.notes.append(f"Operation=AddRequest: a new ticket, although the mail names "
                           f"{w.ticket.module} {w.ticket.number}")
        w.ticket, w.kind = None, EventKind.CREATE
    elif operation is not None:
        if w.ticket is None:
            return failed(Code.COMMAND_NO_TICKET, f"email command {operation} needs a request "
                          "ID ($RequestID=..$ in the body or the ID in the subject)",
                          operation=operation)
        w.kind = EventKind.COMMAND
    else:
        w.kind = EventKind.REPLY if w.ticket is not None else EventKind.CREATE
    if w.kind == EventKind.CREATE and unknown is not None and operation is None:
        return failed(Code.OTHER_PREFIX, f"the subject carries {unknown}, a reference with a "
                      "prefix no module uses; such references thread replies and do not create "
                      "tickets", reference=unknown)
    return None


def guest(w: Work) -> Verdict | None:
    directory = w.ctx.directory
    if directory is None or w.ctx.settings.guest_tickets:
        return None
    if directory.lookup(w.requester.email) is None:
        return failed(Code.GUEST, f"{w.requester.email} is not a user of the desk and guest "
                      "tickets are off, so guests may not create or update tickets",
                      address=w.requester.email)
    return None


def recipients(w: Work) -> Verdict | None:
    mailboxes = w.ctx.mailboxes
    named = ((via, a.email) for via, group in (("to", w.mail.to), ("cc", w.mail.cc))
             for a in group if a.email.casefold() in mailboxes)
    # Delivered to the mailbox without naming it: a blind copy.
    via, w.mailbox = next(named, ("bcc", w.ctx.server.spec.email))
    if w.kind != EventKind.CREATE:
        return None
    settings = w.ctx.settings
    if via == "cc" and not settings.create_from_cc:
        return ignored(Code.CC_DISABLED, f"the support address {w.mailbox} is only in Cc and "
                       "creating tickets from Cc is off", mailbox=w.mailbox)
    if via == "bcc" and not settings.create_from_bcc:
        return ignored(Code.BCC_DISABLED, f"the support address {w.mailbox} is in neither To "
                       "nor Cc (a blind copy) and creating tickets from Bcc is off",
                       mailbox=w.mailbox)
    return None


def email_to_request(w: Work) -> Verdict | None:
    if w.kind == EventKind.CREATE and not w.ctx.settings.email_to_request:
        return failed(Code.EMAIL_TO_REQUEST_OFF, "no ticket created: email-to-request is off "
                      "in the namespace's MailSettings")
    return None


def creation_restriction(w: Work) -> Verdict | None:
    if w.kind != EventKind.CREATE or not w.ctx.server.spec.creation.disable_new_requests:
        return None
    address = w.sender.email.casefold()
    if address in w.ctx.creation_emails or \
            address.rpartition("@")[2] in w.ctx.creation_domains:
        return None
    return failed(Code.CREATION_DISABLED, f"no ticket created: new tickets by mail are disabled "
                  f"on {w.ctx.server_name} and {w.sender.email} is not among its allowed "
                  "emails or domains", address=w.sender.email)


def attachments(w: Work) -> Verdict | None:
    for index, item in enumerate(w.mail.attachments, start=1):
        checked = att.check(item, w.ctx.attachments, index)
        if isinstance(checked, att.Rejected):
            w.stripped.append(checked)
        else:
            w.kept.append(checked)
            w.data[checked.sha256] = item.data
    return None


Stage = Callable[[Work], "Verdict | None"]

STAGES: tuple[tuple[str, Stage], ...] = (
    ("parse", read),
    ("own-mail", own_mail),
    ("self-reference", self_reference),
    ("auto-reply", auto_reply),
    ("duplicate", duplicate),
    ("sender-filter", sender_filter),
    ("forwarded-sender", forwarded_sender),
    ("sender-status", sender_status),
    ("spam-filter", spam_filter),
    ("incoming-rules", incoming_rules),
    ("email-command", email_command),
    ("threading", threading),
    ("guest", guest),
    ("recipients", recipients),
    ("email-to-request", email_to_request),
    ("creation-restriction", creation_restriction),
    ("attachments", attachments),
)
"""(name, function) in the order they run; the names appear in results and audit details."""
