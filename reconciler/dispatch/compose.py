"""Build the RFC 5322 message for one notification and one server.

Decisions:

- The message is built with ``email.message.EmailMessage`` and the ``SMTP``
  policy (CRLF line ends, RFC 2047 encoded non-ASCII headers, RFC 2231 encoded
  attachment names). Bodies that are not plain short-lined ASCII are sent
  quoted-printable, so the message is 7-bit clean and no relay needs 8BITMIME.
- Bcc recipients go into the envelope only, never into a header.
- The Message-ID uses the sender's domain. With an idempotency key it is
  derived from (namespace, key), so a retry after an ambiguous timeout
  carries the same Message-ID and receiving systems can recognise the duplicate.
- Attachment limit (O4): ``attachmentLimitMB`` (MiB, 1 MB = 1,048,576 bytes
  of attachment data before encoding) caps the total of the attachments.
  They are taken in the order given; one that would push the total over the
  limit is dropped and the following ones are still considered. Dropped
  attachments are returned by name for the SENT audit entry.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from reconciler.config.derive import DEFAULT_ATTACHMENT_LIMIT_MB
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.dispatch.envelope import (
    Attachment,
    DroppedAttachment,
    Envelope,
    Mailbox,
    Notification,
    check_header_text,
    validate_address,
)
from reconciler.dispatch.filters import FilterResult

MIB = 1024 * 1024


def message_id_for(notification: Notification, domain: str) -> str:
    if notification.idempotency_key:
        seed = f"{notification.namespace}\0{notification.idempotency_key}".encode()
        token = hashlib.sha256(seed).hexdigest()[:32]
    else:
        token = uuid.uuid4().hex
    return f"<{token}@{domain}>"


def select_attachments(
    attachments: list[Attachment], limit_mb: float
) -> tuple[list[Attachment], list[DroppedAttachment]]:
    limit = int(limit_mb * MIB)
    kept: list[Attachment] = []
    dropped: list[DroppedAttachment] = []
    total = 0
    for item in attachments:
        if total + item.size > limit:
            reason = (
                f"{item.size} bytes is above the limit of {limit_mb:g} MB"
                if item.size > limit
                else f"would bring the attachments to {total + item.size} bytes, "
                f"above the limit of {limit_mb:g} MB"
            )
            dropped.append(DroppedAttachment(item.name, item.size, reason))
            continue
        kept.append(item)
        total += item.size
    return kept, dropped


def compose(
    notification: Notification,
    server: OutgoingServer,
    recipients: FilterResult,
    *,
    now: datetime | None = None,
    message_id: str | None = None,
) -> Envelope:
    """The envelope for ``notification`` sent through ``server`` to ``recipients``.

    ``recipients`` is the filter's result; an empty one is the caller's "not
    sent" case (O8) and is refused here so it cannot slip through.
    """
    if recipients.empty:
        raise ValueError("no recipients left to send to; record it as not sent")
    spec = server.spec
    sender = validate_address(spec.email, "server email")
    domain = sender.rsplit("@", 1)[1]
    sender_name = check_header_text(spec.sender_name, "sender name") if spec.sender_name else None
    reply_to = validate_address(spec.reply_to, "server replyTo") if spec.reply_to else None
    now = now or datetime.now(UTC)
    message_id = message_id or message_id_for(notification, domain)

    msg = EmailMessage(policy=SMTP)
    msg["From"] = Address(display_name=sender_name or "", addr_spec=sender)
    if reply_to:
        msg["Reply-To"] = Address(addr_spec=reply_to)
    if recipients.to:
        msg["To"] = tuple(_address(m) for m in recipients.to)
    if recipients.cc:
        msg["Cc"] = tuple(_address(m) for m in recipients.cc)
    msg["Subject"] = notification.subject
    msg["Date"] = format_datetime(now if now.tzinfo else now.replace(tzinfo=UTC))
    msg["Message-ID"] = message_id
    for name, value in notification.headers.items():
        msg[name] = value

    _set_body(msg, notification.text_body, notification.html_body)
    limit = spec.attachment_limit_mb or DEFAULT_ATTACHMENT_LIMIT_MB
    kept, dropped = select_attachments(notification.attachments, limit)
    for item in kept:
        maintype, subtype = item.content_type.split("/", 1)
        msg.add_attachment(item.data, maintype=maintype, subtype=subtype, filename=item.name)

    return Envelope(
        mail_from=sender,
        sender_name=sender_name,
        reply_to=reply_to,
        to=recipients.to,
        cc=recipients.cc,
        bcc=recipients.bcc,
        message=msg,
        message_id=message_id,
        dropped_attachments=tuple(dropped),
    )


def _address(mailbox: Mailbox) -> Address:
    return Address(display_name=mailbox.name or "", addr_spec=mailbox.email)


def _cte(text: str) -> str:
    plain = text.isascii() and all(len(line) <= 78 for line in text.splitlines())
    return "7bit" if plain else "quoted-printable"


def _set_body(msg: EmailMessage, text: str | None, html: str | None) -> None:
    if text is None and html is None:
        text = ""
    if text is not None:
        msg.set_content(text, cte=_cte(text))
        if html is not None:
            msg.add_alternative(html, subtype="html", cte=_cte(html))
    elif html is not None:
        msg.set_content(html, subtype="html", cte=_cte(html))
