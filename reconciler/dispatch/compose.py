"""Build the RFC 5322 message for one notification and one server.

Decisions:

- ``email.message.EmailMessage`` with the ``SMTP`` policy (CRLF, RFC 2047 encoded
  non-ASCII headers, RFC 2231 attachment names). Bodies that are not plain
  short-lined ASCII go quoted-printable: 7-bit clean, no relay needs 8BITMIME.
- Fast path: without attachments, and with plain ASCII header text and bodies,
  the message is written directly as bytes (``_plain_message``) in the form the
  ``EmailMessage`` path gives.
- Header safety (SPEC S1): intake refuses values that could break a header line;
  compose checks again. :data:`~reconciler.mail.header_guard.GUARDED_SMTP` folds
  address headers itself (the package's drops the quotes of a long display name),
  refuses a header that would not be one line (raw CR/LF, a control byte) with a
  ``HeaderInjectionError`` (a ValueError: the worker fails the message for good)
  and folds other text over 998 bytes as encoded-words; the fast path writes only
  printable ASCII and leaves longer lines to it. Extra header names are checked
  again, so a notification that skipped intake cannot smuggle in a name with a
  colon or a header compose writes itself.
- An HTML body always has a text/plain alternative (made by
  :func:`~reconciler.mail.html_text.html_to_text` when the notification gives
  none) and an ``<html>`` element: the structure spam filters expect (docs/dispatch.md).
- Bcc recipients go into the envelope only, never into a header; without To
  recipients the To header is the empty group ``undisclosed-recipients:;``.
- The Message-ID uses the sender's domain; with an idempotency key it is derived
  from (namespace, key), so a retry after an ambiguous timeout carries the same
  one and receiving systems can recognise the duplicate.
- Attachment limit (O4, :mod:`reconciler.dispatch.oversize`): dropped attachments
  are returned by name for the SENT audit entry; whether the server refuses
  instead is the worker's to act on.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import re
import uuid
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from reconciler.config.header_text import check_header_name, check_header_text
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.dispatch.filters import FilterResult
from reconciler.dispatch.oversize import limit_mb, select_attachments
from reconciler.mail.envelope import (
    Envelope,
    Mailbox,
    Notification,
    validate_address,
)
from reconciler.mail.header_guard import GUARDED_SMTP
from reconciler.mail.header_write import PRINTABLE, address_header, text_header
from reconciler.mail.html_text import html_to_text

# To for mail with only Cc/Bcc recipients: an empty group, as sendmail and Postfix write
# it; a message without To is a spam filter's MISSING_HEADERS.
_UNDISCLOSED = "undisclosed-recipients:;"
_HTML_TAG = re.compile(r"<html[\s>]", re.IGNORECASE)

_last_date: tuple[datetime, str] | None = None


def _date_header(now: datetime) -> str:
    """RFC 5322 date of ``now`` (naive = UTC). Whole seconds, so under load most
    messages share the previous one's text: formatting cost ~1.5% of the CPU
    per message in bench/dispatch.py."""
    global _last_date
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    second = now.replace(microsecond=0)
    if _last_date is None or _last_date[0] != second or _last_date[0].tzinfo != now.tzinfo:
        _last_date = (second, format_datetime(second))
    return _last_date[1]


def compose(notification: Notification, server: OutgoingServer, recipients: FilterResult, *,
            now: datetime | None = None, message_seed: str | None = None) -> Envelope:
    """The envelope for ``notification`` sent through ``server`` to ``recipients`` (the
    filter's result; an empty one is the caller's "not sent" case, O8, refused here so it
    cannot slip through)."""
    if recipients.empty:
        raise ValueError("no recipients left to send to; record it as not sent")
    spec = server.spec
    sender, sender_name, reply_to = _server_identity(spec.email, spec.sender_name,
                                                     spec.reply_to)
    now = now or datetime.now(UTC)
    # Every attempt of a message carries the same Message-ID: from the idempotency key,
    # else from the caller's seed; with neither, a fresh one.
    seed = (f"{notification.namespace}\0{notification.idempotency_key}"
            if notification.idempotency_key else message_seed)
    token = hashlib.sha256(seed.encode()).hexdigest()[:32] if seed else uuid.uuid4().hex
    message_id = f"<{token}@{sender.rsplit('@', 1)[1]}>"
    for name in notification.headers:
        check_header_name(name)

    envelope = functools.partial(
        Envelope, mail_from=sender, sender_name=sender_name, reply_to=reply_to,
        to=recipients.to, cc=recipients.cc, bcc=recipients.bcc, message_id=message_id)
    if not notification.attachments:
        raw = _plain_message(notification, recipients, sender, sender_name, reply_to, now,
                             message_id)
        if raw is not None:
            return envelope(content=raw)

    msg = EmailMessage(policy=GUARDED_SMTP)
    msg["From"] = Address(display_name=sender_name or "", addr_spec=sender)
    if reply_to:
        msg["Reply-To"] = Address(addr_spec=reply_to)
    msg["To"] = tuple(_address(m) for m in recipients.to) or _UNDISCLOSED
    if recipients.cc:
        msg["Cc"] = tuple(_address(m) for m in recipients.cc)
    msg["Subject"] = notification.subject
    msg["Date"] = _date_header(now)
    msg["Message-ID"] = message_id
    for name, value in notification.headers.items():
        msg[name] = value

    for i, (body, subtype) in enumerate(_bodies(notification)):
        add = msg.add_alternative if i else msg.set_content
        add(body, subtype=subtype, cte=_cte(body))
    kept, dropped = select_attachments(notification.attachments, limit_mb(server))
    for item in kept:
        maintype, subtype = item.content_type.split("/", 1)
        msg.add_attachment(item.data, maintype=maintype, subtype=subtype, filename=item.name)
    # as_bytes raises rather than write an unsafe header
    return envelope(content=msg, dropped_attachments=tuple(dropped),
                    wire=msg.as_bytes(policy=GUARDED_SMTP))


@functools.lru_cache(maxsize=1024)  # per server: its From and Reply-To, checked once
def _server_identity(email: str, sender_name: str | None,
                     reply_to: str | None) -> tuple[str, str | None, str | None]:
    sender = validate_address(email, "server email")
    name = check_header_text(sender_name, "sender name") if sender_name else None
    reply = validate_address(reply_to, "server replyTo") if reply_to else None
    return sender, name, reply


def _address(mailbox: Mailbox) -> Address:
    if mailbox.name:  # again here: the package would refuse a raw CR/LF without saying where
        check_header_text(mailbox.name, f"the display name of {mailbox.email}")
    return Address(display_name=mailbox.name or "", addr_spec=mailbox.email)


def _cte(text: str) -> str:
    plain = text.isascii() and all(len(line) <= 78 for line in text.splitlines())
    return "7bit" if plain else "quoted-printable"


def _bodies(notification: Notification) -> list[tuple[str, str]]:
    """(text, subtype) of each body part, in order; no body at all is an empty text one.
    HTML goes out as a whole document with a text alternative made from it when the
    notification has none: spam filters score a bare fragment and HTML-only mail."""
    text, html = notification.text_body, notification.html_body
    if html is not None:
        if not _HTML_TAG.search(html):
            html = f"<html><body>\n{html}\n</body></html>"
        if text is None:
            text = html_to_text(html)
    parts = [(body, sub) for body, sub in ((text, "plain"), (html, "html")) if body is not None]
    return parts or [("", "plain")]


# -- fast path: the common all-ASCII notification written directly as bytes ----------


def _body_part(text: str, subtype: str) -> bytes | None:
    """Content headers and body of one text part, as ``set_content`` would write them."""
    if not text.isascii():
        return None
    lines = text.encode("ascii").splitlines()
    cte = _cte(text)
    if cte == "7bit":
        body = b"\r\n".join(lines) + b"\r\n"
    else:
        body = binascii.b2a_qp(b"\n".join(lines) + b"\n", istext=True).replace(b"\n", b"\r\n")
    head = (f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {cte}\r\n\r\n")
    return head.encode("ascii") + body


def _plain_message(notification: Notification, recipients: FilterResult, sender: str,
                   sender_name: str | None, reply_to: str | None, now: datetime,
                   message_id: str) -> bytes | None:
    """The message as bytes when everything in it is plain ASCII and there are no
    attachments; None to build it with ``EmailMessage`` instead."""
    if not PRINTABLE.match(message_id) or " " in message_id:
        return None
    headers: list[str | None] = [address_header("From", [(sender_name, sender)])]
    if reply_to:
        headers.append(address_header("Reply-To", [(None, reply_to)]))
    for name, boxes in (("To", recipients.to), ("Cc", recipients.cc)):
        if boxes:
            headers.append(address_header(name, [(m.name, m.email) for m in boxes]))
        elif name == "To":
            headers.append(f"To: {_UNDISCLOSED}\r\n")
    headers.append(text_header("Subject", notification.subject))
    headers.append(f"Date: {_date_header(now)}\r\n")
    headers.append(f"Message-ID: {message_id}\r\n")
    headers.extend(text_header(name, value) for name, value in notification.headers.items())
    if any(h is None for h in headers):
        return None
    head = "".join(h for h in headers if h is not None) + "MIME-Version: 1.0\r\n"

    parts: list[bytes] = []
    for body, subtype in _bodies(notification):
        part = _body_part(body, subtype)
        if part is None:
            return None
        parts.append(part)
    if len(parts) == 1:
        return head.encode("ascii") + parts[0]
    boundary = f"=_reconcile_{uuid.uuid4().hex}"
    head += f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'
    delimiter = f"--{boundary}\r\n".encode("ascii")
    return b"".join([head.encode("ascii"), *(delimiter + part + b"\r\n" for part in parts),
                     f"--{boundary}--\r\n".encode("ascii")])
