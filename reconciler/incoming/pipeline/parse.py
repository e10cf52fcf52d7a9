"""Raw RFC 5322 bytes -> :class:`ParsedMail`, as forgiving as real mail needs.

The stdlib parser does the MIME work (RFC 2231 parameters, transfer encodings)
and records what it had to guess as defects instead of raising. The structure
is parsed with ``compat32`` (the feedparser asks every part for its
Content-Type, and compat32 answers several times faster: 5,000 mails took ~12 s
with ``policy.default`` throughout and ~5 s this way); the headers the pipeline
reads go through ``policy.default``'s header registry for RFC 2047 decoding and
address parsing. On top of that:

- Header text that arrived as raw 8-bit bytes (allowed by nobody, sent by
  many) is read as UTF-8, else Windows-1252, instead of leaking surrogates;
  attachment names too (compat32 would show them as U+FFFD).
- Bodies and encoded-words are decoded through a few aliases for labels mail
  clients get wrong (GB2312 labels GBK text, ISO-8859-1 Windows-1252 quotes,
  Shift_JIS Windows-31J). A body whose bytes are valid UTF-8 is UTF-8 whatever
  its label; else the declared charset strictly, then what charset-normalizer
  detects; an unknown or UTF-8/ASCII label on other bytes gives Windows-1252.
- Text parts marked inline with a file name (Apple Mail's way) are the body
  when the mail has no other; they stay attachments as well.
- Attachments keep their decoded bytes and whether the transfer encoding
  decoded cleanly; judging them is attachments.py's job. Forwarded originals
  (message/rfc822) become .eml attachments; their From feeds the forwarded-sender check.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import errors as email_errors
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime

from reconciler.incoming.pipeline.event import Address
from reconciler.mail.html_text import html_to_text

_PARSER = BytesParser(policy=policy.compat32)
_DEFAULT = policy.default
_MSG_ID = re.compile(r"<([^<>\s]+)>")
_BARE_ID = re.compile(r"[^<>\s,]+@[^<>\s,]+")
_UNSAFE_NAME = re.compile(r'[\\/:*?"<>|\x00-\x1f]')
_ENCODED_WORD = re.compile(r"=\?[^?]+\?[bBqQ]\?[^?]*\?=")
_WORD_CHARSET = re.compile(r"(?<==\?)([^?*]+)(?=(?:\*[^?]*)?\?[bBqQ]\?)")

# Labels mail software uses for a charset that is really a superset of it.
_CHARSET_ALIASES = {
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "cp936": "gb18030",
    "iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932",
    "ks_c_5601-1987": "cp949", "euc-kr": "cp949",
    "us-ascii": "utf-8", "ascii": "utf-8", "ansi_x3.4-1968": "utf-8",
    "unknown-8bit": "utf-8", "x-unknown": "utf-8",
}
# Not the UTF-8 ones: an unknown-8bit word's bytes are read as raw 8-bit header text is.
_WORD_ALIASES = {label: name for label, name in _CHARSET_ALIASES.items() if name != "utf-8"}
# C1 control characters in decoded header text are Windows-1252 punctuation that a
# Latin-1 label mis-described (an en dash read as U+0096); show what the sender typed.
_C1_AS_CP1252 = {i: bytes([i]).decode("cp1252", "ignore") or chr(i) for i in range(0x80, 0xA0)}
_C1 = re.compile("[\x80-\x9f]")
_BASE64_DEFECTS = (
    email_errors.InvalidBase64PaddingDefect,
    email_errors.InvalidBase64CharactersDefect,
    email_errors.InvalidBase64LengthDefect,
)


@dataclass(slots=True)
class RawAttachment:
    name: str | None  # as declared (RFC 2231 / 2047 decoded); None if none given
    content_type: str
    data: bytes
    inline: bool
    content_id: str | None
    damaged: str | None = None  # why the transfer encoding did not decode cleanly


@dataclass(slots=True)
class ParsedMail:
    message: Message
    message_id: str  # without angle brackets
    message_id_synthetic: bool  # no Message-ID header: derived from the bytes
    sender: Address | None
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    subject: str
    in_reply_to: str | None
    references: tuple[str, ...]
    sent_at: datetime | None
    text_body: str = ""
    html_body: str | None = None
    attachments: list[RawAttachment] = field(default_factory=list)
    forwarded_from: list[Address] = field(default_factory=list)  # from message/rfc822 parts
    inline_text: list[str] = field(default_factory=list)  # named inline text/plain parts
    notes: list[str] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return _header(self.message, name) or None


def parse(raw: bytes) -> ParsedMail:
    """Parse; raises ValueError only when there is nothing mail-like to read."""
    if not raw.strip():
        raise ValueError("the message is empty")
    msg = _PARSER.parsebytes(raw)
    if not any(True for _ in msg.raw_items()):
        raise ValueError("the message has no header section")
    notes: list[str] = []
    raw_id = _header(msg, "Message-ID")
    ids = _MSG_ID.findall(raw_id or "") or _BARE_ID.findall(raw_id or "")
    if ids:
        message_id, synthetic = ids[0], False
    else:
        # Same bytes, same id: a re-fetched copy is still recognised as a duplicate.
        message_id = hashlib.sha256(raw).hexdigest()[:40] + "@no-message-id.invalid"
        synthetic = True
        notes.append("no Message-ID header; an id was derived from the message bytes")
    senders = _addresses(msg, "From")
    in_reply = _MSG_ID.findall(_header(msg, "In-Reply-To") or "")
    mail = ParsedMail(
        message=msg,
        message_id=message_id,
        message_id_synthetic=synthetic,
        sender=senders[0] if senders else None,
        reply_to=_addresses(msg, "Reply-To"),
        to=_addresses(msg, "To"),
        cc=_addresses(msg, "Cc"),
        subject=" ".join((_header(msg, "Subject") or "").split()),
        in_reply_to=in_reply[0] if in_reply else None,
        references=tuple(_MSG_ID.findall(_header(msg, "References") or "")),
        sent_at=_date(_header(msg, "Date")),
        notes=notes,
    )
    _walk(msg, mail)
    if mail.html_body is None and not mail.text_body.strip():
        mail.text_body = "\n".join(mail.inline_text)
    if mail.html_body is not None and not mail.text_body.strip():
        mail.text_body = html_to_text(mail.html_body)
    if msg.defects:
        mail.notes.append("MIME structure repaired while reading: "
                          + ", ".join(sorted({type(d).__name__ for d in msg.defects})))
    return mail


def _fix_8bit(text: str) -> str:
    """Header text with raw 8-bit bytes comes back with surrogate escapes; decode them."""
    if not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    data = text.encode("utf-8", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _raw(msg: Message, name: str) -> str | None:
    """The first ``name`` header as it arrived, unfolded (surrogates for 8-bit bytes)."""
    wanted = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            text = value if isinstance(value, str) else str(value)
            return "".join(text.splitlines())
    return None


def _aliased(raw: str) -> str:
    """Encoded-words relabelled like bodies: a gb2312 word is read as GB18030, etc."""
    if "=?" not in raw:
        return raw
    return _WORD_CHARSET.sub(lambda m: _WORD_ALIASES.get(m[1].lower(), m[1]), raw)


def _header(msg: Message, name: str) -> str | None:
    raw = _raw(msg, name)
    if raw is None:
        return None
    text = raw = _aliased(raw)
    if "=?" in text or not text.isascii():
        with contextlib.suppress(Exception):  # the policy's parser gave up: keep the raw text
            text = str(_DEFAULT.header_factory(name, raw))
        text = _fix_8bit(text)
        if "=?" in text and _ENCODED_WORD.search(text):
            text = _decode_words(text)
    if _C1.search(text):
        text = text.translate(_C1_AS_CP1252)
    return text.strip()


def _decode_words(text: str) -> str:
    """Encoded words the policy left alone (inside quotes, unknown charsets)."""
    from email.header import decode_header

    try:
        parts = decode_header(text)
    except Exception:
        return text
    return "".join(decode_text(chunk, charset)[0] if isinstance(chunk, bytes) else chunk
                   for chunk, charset in parts)


def _addresses(msg: Message, name: str) -> tuple[Address, ...]:
    raw = _raw(msg, name)
    if raw is None or not raw.strip():
        return ()
    raw = _aliased(raw)
    try:
        found = [Address(_fix_8bit(f"{a.username}@{a.domain}"), _fix_8bit(a.display_name) or None)
                 for a in getattr(_DEFAULT.header_factory(name, raw), "addresses", ())
                 if a.username and a.domain]
    except Exception:
        found = []
    if found:
        return tuple(found)
    # The policy's parser gave up: the stdlib's older, looser split still finds
    # addresses in most broken headers.
    return tuple(Address(addr.strip(), display.strip() or None)
                 for display, addr in getaddresses([_fix_8bit(raw)]) if "@" in addr)


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def decode_text(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Decode body bytes (line ends made ``\\n``); the text and a note when it had to guess."""
    text, note = _decode(data, charset)
    return text.replace("\r\n", "\n"), note


def _decode(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Non-ASCII bytes that are valid UTF-8 are UTF-8 whatever the label (legacy text
    is next to never valid UTF-8, but UTF-8 labelled GB2312 also decodes as GB18030,
    as mojibake); else the declared charset (through the aliases) strictly, then what
    charset-normalizer detects. Windows-1252 for text a UTF-8 or ASCII label (or an
    unknown one) got wrong, which is what such mislabelled mail nearly always is."""
    label = (charset or "utf-8").strip().strip('"').lower()
    try:
        codec: str | None = codecs.lookup(_CHARSET_ALIASES.get(label, label)).name
    except LookupError:
        codec = None
    known = f"text is not {label}" if codec else f"unknown charset {label!r}"
    if codec is None or (not data.isascii() and not codec.startswith("utf-")):
        with contextlib.suppress(UnicodeDecodeError):
            return data.decode("utf-8"), f"{known}; read as UTF-8"
    if codec is not None:
        with contextlib.suppress(UnicodeDecodeError):
            return data.decode(codec), None
    if codec not in (None, "utf-8"):
        guess = _detect(data)
        if guess is not None:
            return guess[1], f"{known}; read as {guess[0]} (detected)"
        return data.decode(codec, "replace"), f"text does not decode as {label}; bad bytes replaced"
    return data.decode("cp1252", "replace"), f"{known}; read as Windows-1252"


def _detect(data: bytes) -> tuple[str, str] | None:
    """charset-normalizer's best guess (name, text): the last resort, as it needs a
    fair amount of text to be right. Imported here: most mail never gets this far."""
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    return (best.encoding, str(best)) if best is not None else None


def _payload(part: Message) -> tuple[bytes, str | None]:
    before = len(part.defects)
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:
        return b"", f"content could not be decoded ({type(exc).__name__})"
    if data is None:
        data = b""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    damaged = None
    if any(isinstance(d, _BASE64_DEFECTS) for d in part.defects[before:]):
        damaged = "content is truncated or damaged (its base64 does not decode cleanly)"
    return data, damaged


def _walk(part: Message, mail: ParsedMail) -> None:
    ctype = part.get_content_type()
    if ctype == "message/rfc822":
        _forwarded(part, mail)
        return
    if part.is_multipart():
        for sub in part.get_payload():
            if isinstance(sub, Message):
                _walk(sub, mail)
        return
    disposition = part.get_content_disposition()
    filename = _filename(part)
    data, damaged = _payload(part)
    if ctype.startswith("multipart/"):
        # A multipart whose boundary is missing: the parser kept it as one text blob.
        mail.notes.append(f"{ctype} part has no usable boundary; its raw text is the body")
        text, _ = decode_text(data, part.get_content_charset())
        mail.text_body = _join(mail.text_body, text)
        return
    if ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename:
        text, note = decode_text(data, part.get_content_charset())
        if note:
            mail.notes.append(note)
        if damaged:
            mail.notes.append(f"body {damaged}")
        if ctype == "text/plain":
            mail.text_body = _join(mail.text_body, text)
        elif mail.html_body is None:
            mail.html_body = text
        return
    cid = part.get("Content-ID")
    content_id = str(cid).strip().strip("<>") if cid else None
    inline = disposition == "inline" or (content_id is not None and disposition != "attachment")
    if ctype == "text/plain" and disposition == "inline" and not damaged:
        mail.inline_text.append(decode_text(data, part.get_content_charset())[0])
    mail.attachments.append(RawAttachment(filename, ctype, data, inline, content_id, damaged))


def _forwarded(part: Message, mail: ParsedMail) -> None:
    inner = part.get_payload(0) if part.is_multipart() else None
    name = None
    data = b""
    if isinstance(inner, Message):
        mail.forwarded_from.extend(_addresses(inner, "From"))
        subject = _header(inner, "Subject") or "forwarded message"
        name = _UNSAFE_NAME.sub("_", subject[:80]) + ".eml"
        # compat32 parts are plain Messages; one that cannot be written back stays empty.
        with contextlib.suppress(Exception):
            data = inner.as_bytes()
    mail.attachments.append(RawAttachment(_filename(part) or name, "message/rfc822", data,
                                          part.get_content_disposition() == "inline", None))


def _filename(part: Message) -> str | None:
    """The part's file name, decoded however it was written; None if it has none."""
    try:
        name = part.get_filename()
    except Exception:  # a malformed RFC 2231 parameter: the part stays, unnamed
        return None
    if name is None:
        return None
    name = _fix_8bit(name)
    if "=?" in name:
        name = _decode_words(name)
    if "\ufffd" in name:
        # compat32 turns raw 8-bit bytes in a parameter into U+FFFD; read them from the
        # raw header as header text is read (UTF-8, else Windows-1252).
        for header, param in (("Content-Disposition", "filename"), ("Content-Type", "name")):
            raw = _raw(part, header)
            with contextlib.suppress(Exception):
                found = _DEFAULT.header_factory(header, _fix_8bit(raw or "")).params.get(param)
                if found and "\ufffd" not in found:
                    return str(found)
    return name


def _join(first: str, second: str) -> str:
    return f"{first}\n{second}" if first else second
