"""The composed message in Microsoft Graph's shape (SPEC O5).

The worker hands every transport the same :class:`Envelope`: addresses as data, the
rest as the RFC 5322 message ``compose`` wrote. Graph's ``sendMail`` wants a JSON
message resource instead, so this module reads subject, body, extra headers and
attachments back out of the MIME message and lays them out as Graph expects.

- Graph carries one body: the HTML part when there is one (mail clients show that
  one anyway), else the text part.
- ``internetMessageId`` keeps the Message-ID compose chose, so a retry after an
  ambiguous failure is recognisable downstream, as with SMTP.
- Graph accepts only ``X-`` headers in ``internetMessageHeaders``. Threading headers
  (``In-Reply-To``, ``References``) are not accepted there; a message carrying them
  goes out as MIME (``sendMail`` with a base64 body), which keeps every header, as long
  as it fits in one request. The MIME copy gets a ``Bcc`` header so Graph knows those
  recipients; Graph removes it before delivery.
- Attachments below :data:`INLINE_LIMIT` together travel inside the JSON; larger ones
  go through an upload session on a draft (see ``graph.transport``).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32
from typing import Any

from reconciler.mail.envelope import Envelope, Mailbox

# Graph takes attachments inline up to 3 MB per request (its 4 MB request limit less
# the base64 growth); anything more needs an upload session.
INLINE_LIMIT = 3 * 1024 * 1024
MAX_REQUEST_BYTES = 4 * 1024 * 1024
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_HEADER_END = re.compile(r"\r\n(?![ \t])")  # between two headers, not inside a folded one
_TEXT_PART = re.compile(r'text/(plain|html); charset="utf-8"')
_ALTERNATIVE = re.compile(r'multipart/alternative; boundary="([!-~]+)"')

# Headers compose owns and the JSON message already says in its own fields.
_OWN_HEADERS = frozenset({
    "from", "sender", "reply-to", "to", "cc", "bcc", "subject", "date", "message-id",
    "mime-version", "content-type", "content-transfer-encoding", "content-disposition",
})


@dataclass(frozen=True, slots=True)
class GraphAttachment:
    name: str
    content_type: str
    data: bytes

    def resource(self) -> dict[str, Any]:
        return {"@odata.type": "#microsoft.graph.fileAttachment", "name": self.name,
                "contentType": self.content_type,
                "contentBytes": base64.b64encode(self.data).decode("ascii")}


@dataclass(frozen=True)
class GraphMessage:
    """What the transport sends: the JSON message without attachments, and those apart."""

    message: dict[str, Any]
    attachments: tuple[GraphAttachment, ...] = ()
    other_headers: tuple[tuple[str, str], ...] = ()  # headers only MIME can carry
    mime: bytes | None = field(default=None, repr=False)  # the MIME form, when needed

    @property
    def attachment_bytes(self) -> int:
        return sum(len(a.data) for a in self.attachments)

    @property
    def needs_upload(self) -> bool:
        return self.attachment_bytes > INLINE_LIMIT

    def send_mail_body(self, save_to_sent_items: bool) -> dict[str, Any]:
        """The ``sendMail`` request: everything inline."""
        message = dict(self.message)
        if self.attachments:
            message["attachments"] = [a.resource() for a in self.attachments]
        return {"message": message, "saveToSentItems": save_to_sent_items}

    def draft_body(self) -> tuple[dict[str, Any], tuple[GraphAttachment, ...]]:
        """The draft to create and the attachments left for upload sessions: small ones
        ride along in the draft while they fit, largest last."""
        inline: list[GraphAttachment] = []
        large: list[GraphAttachment] = []
        room = INLINE_LIMIT
        for item in sorted(self.attachments, key=lambda a: len(a.data)):
            if len(item.data) <= room:
                inline.append(item)
                room -= len(item.data)
            else:
                large.append(item)
        message = dict(self.message)
        if inline:
            message["attachments"] = [a.resource() for a in inline]
        return message, tuple(large)


def _address(email: str, name: str | None) -> dict[str, Any]:
    return {"address": email, "name": name} if name else {"address": email}


def _recipients(mailboxes: Iterable[Mailbox]) -> list[dict[str, Any]]:
    return [{"emailAddress": _address(m.email, m.name)} for m in mailboxes]


def graph_message(envelope: Envelope) -> GraphMessage:
    quick = _plain_parts(envelope.content) if isinstance(envelope.content, bytes) else None
    if quick is None:
        parsed = _parsed(envelope)
        headers = [(name, _header_text(value)) for name, value in parsed.items()]
        body, attachments = _body_and_attachments(parsed)
    else:
        raw_headers, texts = quick
        headers = [(name, _header_text(value)) for name, value in raw_headers]
        body, attachments = _one_body(texts), ()
    message: dict[str, Any] = {
        "subject": next((v for n, v in headers if n.lower() == "subject"), ""),
        "body": body,
        "from": {"emailAddress": _address(envelope.mail_from, envelope.sender_name)},
        "toRecipients": _recipients(envelope.to),
        "internetMessageId": envelope.message_id,
    }
    reply_to = [{"emailAddress": {"address": envelope.reply_to}}] if envelope.reply_to else []
    custom, other = _split_headers(headers)
    optional = {"ccRecipients": _recipients(envelope.cc),
                "bccRecipients": _recipients(envelope.bcc), "replyTo": reply_to,
                "internetMessageHeaders": custom}
    message.update((key, value) for key, value in optional.items() if value)
    mime = _mime_with_bcc(envelope) if other else None
    return GraphMessage(message, attachments, other, mime)


def _split_headers(headers: list[tuple[str, str]]) -> tuple[list[dict[str, str]],
                                                           tuple[tuple[str, str], ...]]:
    """Headers for ``internetMessageHeaders`` (``X-`` only) and those only MIME carries."""
    custom = [{"name": n, "value": v} for n, v in headers if n.lower().startswith("x-")]
    other = tuple((n, v) for n, v in headers
                  if not n.lower().startswith("x-") and n.lower() not in _OWN_HEADERS)
    return custom, other


def _body_and_attachments(parsed: Message) -> tuple[dict[str, str],
                                                    tuple[GraphAttachment, ...]]:
    """Graph's one body (the HTML part when there is one) and the attachments."""
    texts: dict[str, str] = {}
    attachments: list[GraphAttachment] = []
    for part in parsed.walk():
        if part.is_multipart():
            continue
        if part.get_content_disposition() == "attachment":
            attachments.append(GraphAttachment(part.get_filename() or "attachment",
                                               part.get_content_type(), _payload(part)))
        elif part.get_content_type() in ("text/plain", "text/html"):
            charset = part.get_content_charset() or "utf-8"
            text = _payload(part).decode(charset, "replace")
            texts.setdefault(part.get_content_subtype(), text.replace("\r\n", "\n"))
    return _one_body(texts), tuple(attachments)


def _one_body(texts: dict[str, str]) -> dict[str, str]:
    if "html" in texts:
        return {"contentType": "html", "content": texts["html"]}
    return {"contentType": "text", "content": texts.get("plain", "")}


# -- compose's bytes, read without the email package ------------------------------------
# compose's fast path writes one shape only (dispatch.compose._plain_message): ASCII
# headers, then one text part or a multipart/alternative of text parts, 7bit or
# quoted-printable, no attachments. Reading that shape directly gives what the compat32
# parser gives (tests/mail/graph/test_message.py compares them) at a fraction of its
# CPU, which every Graph send pays; anything else goes to the parser.


def _split(raw: bytes) -> tuple[list[tuple[str, str]], bytes] | None:
    head, blank, body = raw.partition(b"\r\n\r\n")
    if not blank or not head.isascii():
        return None
    headers = []
    for line in _HEADER_END.split(head.decode("ascii")):
        name, colon, value = line.partition(":")
        if not colon:
            return None
        headers.append((name, value.lstrip(" \t")))
    return headers, body


def _text_part(headers: list[tuple[str, str]], body: bytes, texts: dict[str, str]) -> bool:
    """The part's text into ``texts`` (the first of each subtype); False when this is
    not a text part compose's fast path writes."""
    fields = {name.lower(): _FOLD.sub("", value) for name, value in headers}
    kind = _TEXT_PART.fullmatch(fields.get("content-type", ""))
    cte = fields.get("content-transfer-encoding")
    if kind is None or cte not in ("7bit", "quoted-printable"):
        return False
    data = binascii.a2b_qp(body) if cte == "quoted-printable" else body
    texts.setdefault(kind[1], data.decode("utf-8", "replace").replace("\r\n", "\n"))
    return True


def _plain_parts(raw: bytes) -> tuple[list[tuple[str, str]], dict[str, str]] | None:
    """(headers, text by subtype) of compose's fast-path bytes; None for anything else."""
    split = _split(raw)
    if split is None:
        return None
    headers, body = split
    texts: dict[str, str] = {}
    content_type = next((_FOLD.sub("", v) for n, v in headers
                         if n.lower() == "content-type"), "")
    alternative = _ALTERNATIVE.fullmatch(content_type)
    if alternative is None:
        return (headers, texts) if _text_part(headers, body, texts) else None
    chunks = body.split(b"--" + alternative[1].encode("ascii"))
    if len(chunks) < 3 or chunks[0] or chunks[-1] != b"--\r\n":
        return None
    for chunk in chunks[1:-1]:
        # Each part sits between the CRLF after its delimiter and the CRLF before the next.
        part = _split(chunk[2:-2]) if chunk.startswith(b"\r\n") else None
        if part is None or not _text_part(*part, texts):
            return None
    return headers, texts


def _parsed(envelope: Envelope) -> Message:
    # compose's bytes fast path is plain ASCII without encoded words: the compat32
    # parser reads it without the header registry, which costs several ms a message.
    if isinstance(envelope.content, bytes):
        return message_from_bytes(envelope.content, policy=compat32)
    return envelope.content


def _header_text(value: Any) -> str:
    if not isinstance(value, str) or hasattr(value, "defects"):
        return str(value)  # a parsed header of the EmailMessage path: already decoded
    unfolded = _FOLD.sub("", value)
    if "=?" not in unfolded:
        return unfolded
    return str(make_header(decode_header(unfolded)))


def _payload(part: Message) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _mime_with_bcc(envelope: Envelope) -> bytes:
    # Prepended to the bytes rather than set on the parsed message: the envelope's
    # message must stay as compose made it (another attempt may use it).
    raw = envelope.as_bytes()
    if not envelope.bcc:
        return raw
    folded = ",\r\n ".join(m.email for m in envelope.bcc)  # one address per line
    return b"Bcc: " + folded.encode("ascii") + b"\r\n" + raw


def mime_request_size(mime: bytes) -> int:
    """Bytes of the base64 request body ``sendMail`` gets for this MIME message."""
    return (len(mime) + 2) // 3 * 4
