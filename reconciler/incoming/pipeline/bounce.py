"""Bounces (SPEC O14): a returned delivery report matched to the notification it is about.

Two shapes arrive on a desk's mailbox:

- **DSN** (RFC 3464): ``multipart/report; report-type=delivery-status`` with a
  ``message/delivery-status`` part (one block per recipient: Final-Recipient,
  Action, Status, Diagnostic-Code) and the returned message or its headers
  (``message/rfc822``, ``text/rfc822-headers``), whose Message-ID names the
  notification. Postfix, Exchange, Gmail and most MTAs send this.
- **Plain-text bounces** ("Undelivered Mail Returned to Sender", "failure
  notice", "Mail delivery failed", ...) from ``MAILER-DAEMON``: the original
  headers are quoted in the text or attached; each paragraph naming an address
  and an SMTP status is one failed recipient.

A bounce whose Message-ID matches a SENT audit entry of the namespace becomes one
BOUNCED entry per failed recipient (hard for 5.x.x, soft for 4.x.x), on the
notification's outbox id; anything else stays RECEIVED_IGNORED delivery-report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

from reconciler.incoming.pipeline.context import SentLookup
from reconciler.incoming.pipeline.parse import ParsedMail
from reconciler.incoming.pipeline.verdict import Code, Verdict, ignored
from reconciler.state.base import AuditEntry, AuditStatus

BOUNCE_SENDERS = frozenset({"mailer-daemon", "postmaster"})
_SUBJECTS = re.compile(
    r"undeliver|returned to sender|returned mail|delivery status notification|"
    r"delivery (?:has )?failed|mail delivery failed|failure notice|delivery failure|"
    r"non[- ]?delivery", re.I)
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"\b([45])\d\d\b")
_ADDRESS = re.compile(r"<?([A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,})>?")
_MESSAGE_ID = re.compile(r"^(?:X-Original-)?Message-ID:\s*<([^<>\s]+)>", re.I | re.M)
_FAILED_ACTIONS = frozenset({"failed", "delayed"})
_DIAGNOSTIC = 300  # characters of the server's words kept


@dataclass(frozen=True, slots=True)
class BouncedRecipient:
    recipient: str
    status: str  # RFC 3463 enhanced status, e.g. 5.1.1
    diagnostic: str  # the remote server's words

    @property
    def kind(self) -> str:
        return "hard" if self.status.startswith("5") else "soft"


@dataclass(frozen=True, slots=True)
class Bounce:
    message_ids: tuple[str, ...]  # the returned message's Message-ID(s), bare
    recipients: tuple[BouncedRecipient, ...]
    reporting_mta: str | None


def looks_like_bounce(mail: ParsedMail, sender: str) -> bool:
    """A report, mail from a mailer daemon, or an automatic mail titled like a bounce
    (Exchange sends its NDRs "Undeliverable: ..." from a system mailbox)."""
    automatic = (mail.header("Auto-Submitted") or "no").split(";")[0].strip().casefold()
    return (mail.message.get_content_type() == "multipart/report"
            or sender.partition("@")[0].casefold() in BOUNCE_SENDERS
            or (automatic != "no" and bool(_SUBJECTS.search(mail.subject))))


def read_bounce(mail: ParsedMail) -> Bounce:
    """What the report says; recipients may be empty (a success DSN, an unknown text)."""
    ids: list[str] = []
    recipients: list[BouncedRecipient] = []
    mta = None
    texts: list[str] = []
    for part in mail.message.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            blocks = _blocks(part)
            mta, found = _dsn(blocks)
            recipients += found
            ids += _original_ids(blocks)
        elif kind == "message/rfc822" and isinstance(part.get_payload(), list):
            ids += _ids_of(part.get_payload()[0])
        elif kind == "text/rfc822-headers":
            ids += _ids_of(HeaderParser().parsestr(_text(part)))
        elif kind == "text/plain" and not ids:
            texts.append(_text(part))
    text = "\n\n".join(texts)
    ids += _MESSAGE_ID.findall(text)
    if not recipients:
        recipients = _from_text(text)
    return Bounce(tuple(dict.fromkeys(ids)), tuple(recipients), mta)


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode(part.get_content_charset() or "utf-8", "replace")
    raw = part.get_payload()
    return raw if isinstance(raw, str) else ""


def _ids_of(headers: Message, name: str = "Message-ID") -> list[str]:
    return [m.group(1) for m in re.finditer(r"<([^<>\s]+)>", str(headers.get(name, "")))]


def _original_ids(blocks: list[Message]) -> list[str]:
    """Message-IDs some MTAs name in the per-message block (Gmail, Exchange)."""
    return [i for name in ("Original-Message-ID", "X-Original-Message-ID")
            for i in _ids_of(blocks[0], name)] if blocks else []


def _blocks(part: Message) -> list[Message]:
    """The per-message block, then one per recipient; parsed again if it came encoded."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        return payload
    text = _text(part).replace("\r\n", "\n")
    return [HeaderParser().parsestr(b) for b in re.split(r"\n\s*\n", text) if b.strip()]


def _field(block: Message, name: str) -> str:
    """A DSN field without its type prefix (``rfc822;``, ``dns;``, ``smtp;``)."""
    value = " ".join(str(block.get(name, "")).split())
    return value.split(";", 1)[1].strip() if ";" in value else value


def _dsn(blocks: list[Message]) -> tuple[str | None, list[BouncedRecipient]]:
    mta = _field(blocks[0], "Reporting-MTA") or None if blocks else None
    out = []
    for block in blocks[1:]:
        recipient = _field(block, "Final-Recipient") or _field(block, "Original-Recipient")
        action = _field(block, "Action").casefold()
        status = _STATUS.search(_field(block, "Status"))
        if not recipient or action not in _FAILED_ACTIONS or status is None:
            continue
        diagnostic = _field(block, "Diagnostic-Code") or f"action {action}"
        out.append(BouncedRecipient(recipient.strip("<>"), status.group(0),
                                    diagnostic[:_DIAGNOSTIC]))
    return mta, out


def _from_text(text: str) -> list[BouncedRecipient]:
    """A plain-text bounce: each paragraph with an address and an SMTP status."""
    out: dict[str, BouncedRecipient] = {}
    for paragraph in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        if _MESSAGE_ID.search(paragraph):
            break  # the returned headers start: their addresses are not recipients
        address = _ADDRESS.search(paragraph)
        status = _STATUS.search(paragraph) or _SMTP_CODE.search(paragraph)
        if address is None or status is None:
            continue
        code = status.group(0) if status.re is _STATUS else f"{status.group(1)}.0.0"
        words = " ".join(paragraph.split())[:_DIAGNOSTIC]
        out.setdefault(address.group(1).casefold(), BouncedRecipient(address.group(1), code, words))
    return list(out.values())


def bounce_verdict(mail: ParsedMail, namespace: str, incoming_server: str,
                   sent: SentLookup) -> Verdict:
    """BOUNCED per failed recipient when the report names a notification the desk sent."""
    bounce = read_bounce(mail)
    matched = next((found for i in bounce.message_ids if (found := sent(i))), [])
    if not matched or not bounce.recipients:
        why = ("it names no message the desk sent" if bounce.recipients else
               "it reports no failed recipient")
        return ignored(Code.DELIVERY_REPORT, f"a delivery status report (bounce) from a mail "
                       f"server, not a message from a person; {why}",
                       original_message_ids=list(bounce.message_ids))
    entries = tuple(_entry(matched, r, bounce, incoming_server) for r in bounce.recipients)
    listed = ", ".join(f"{r.recipient} ({r.status})" for r in bounce.recipients)
    return Verdict(AuditStatus.BOUNCED, Code.BOUNCED, f"bounce for {listed}",
                   {"original_message_id": matched[0].message_id}, entries=entries)


def _entry(sent: list[AuditEntry], r: BouncedRecipient, bounce: Bounce,
           incoming_server: str) -> AuditEntry:
    # The SENT entry of this recipient if there is one (an alias may have expanded).
    first = next((e for e in sent if (e.recipient or "").casefold() == r.recipient.casefold()),
                 sent[0])
    return AuditEntry(
        status=AuditStatus.BOUNCED, namespace=first.namespace, server=first.server,
        reason=f"{r.kind} bounce {r.status}: {r.diagnostic}", recipient=r.recipient,
        message_id=first.message_id, outbox_id=first.outbox_id, module=first.module,
        details={"code": Code.BOUNCED, "status": r.status, "kind": r.kind,
                 "diagnostic": r.diagnostic, "reportingMta": bounce.reporting_mta,
                 "incomingServer": incoming_server})

