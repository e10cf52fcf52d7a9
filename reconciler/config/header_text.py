"""What may go into a mail header, checked at intake (SPEC S1).

A value is judged by what the email package will make of it, not by how it
was submitted: the package decodes RFC 2047 encoded-words wherever it finds
them (in a subject, inside a quoted display name, inside an attachment's
file name, even glued to other text) and, on the Python releases this runs
on (3.11.7, 3.12), writes the decoded text out again as it is. So
``=?utf-8?q?x=0D=0AReply-To:_evil@attacker.example?=`` is plain ASCII here
and a second Reply-To on the wire. Every encoded-word-looking sequence is
therefore decoded (leniently, as the package does) and the result checked
like the value itself; so are the percent-escapes of a file name written in
RFC 2231's ``charset'language'text`` form, which mail clients decode.

Refused in any header value:

- line breaks: CR, LF and the other characters that mail software or
  ``str.splitlines`` treat as line ends (VT, FF, FS/GS/RS, NEL U+0085,
  LINE SEPARATOR U+2028, PARAGRAPH SEPARATOR U+2029);
- every other C0 and C1 control character and DEL. TAB stays allowed: it is
  whitespace that RFC 5322 permits in a header.

Encoded-words whose bytes hold a control byte are refused whatever their
charset (UTF-16 and the like included: nobody needs them, since the API
takes any Unicode text as it is).

Headers that only mail servers add (trace and authentication results,
DKIM/ARC signatures) are refused as client headers, like the ones the
composer writes itself.
"""

from __future__ import annotations

import binascii
import codecs
import re
from urllib.parse import unquote_to_bytes

# Characters that end a header line somewhere: CR/LF for SMTP, and the ones
# str.splitlines() and some mail clients also treat as line breaks.
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_OTHER_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1b\x1f\x7f\x80-\x84\x86-\x9f]")
# The same for the raw bytes of an encoded-word: any C0 control but TAB, and DEL.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Looser than RFC 2047 on purpose: the email package decodes sloppier forms too
# (no surrounding space, spaces inside), and missing one would let it through.
_ENCODED_WORD = re.compile(r"=\?([^?]*)\?([qQbB])\?(.*?)\?=", re.DOTALL)
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_RFC2231 = re.compile(r"^([A-Za-z0-9!#$%&+^_`{}~.-]*)'[A-Za-z0-9-]*'(.*)$", re.DOTALL)
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 ftext, short enough to fold

# Headers the composer owns; a notification may not set or override them.
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "From", "Sender", "Reply-To", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID",
        "MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
        "Resent-From", "Resent-To", "Resent-Cc", "Resent-Bcc", "Resent-Date",
        "Resent-Message-ID", "Resent-Sender",
    )
)
# Headers only mail servers add: trace fields, authentication results and signatures.
# A client-set one would forge what a receiving system trusts (SPEC S1).
SERVER_HEADERS = frozenset(
    h.lower()
    for h in (
        "Return-Path", "Received", "Received-SPF", "Authentication-Results",
        "DKIM-Signature", "DomainKey-Signature", "Delivered-To",
    )
)
_SERVER_PREFIXES = ("arc-",)  # ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results

# The same classes for the API's document (JSON Schema patterns read them alike).
NOT_IN_HEADERS = _LINE_BREAKS.pattern[1:-1] + _OTHER_CONTROLS.pattern[1:-1]
HEADER_NAME_PATTERN = _HEADER_NAME.pattern


class HeaderInjectionError(ValueError):
    """A value meant for a header contains a line break or control character."""


def check_header_text(value: str, what: str) -> str:
    """``value`` if it cannot break out of its header line, decoded or not; else
    HeaderInjectionError naming ``what``."""
    _check_plain(value, what)
    if "=?" in value:
        for charset, encoding, payload in _ENCODED_WORD.findall(value):
            _check_decoded(_encoded_word_bytes(encoding, payload), charset,
                           f"{what} (once its RFC 2047 encoded-word is decoded)")
    return value


def check_file_name(value: str, what: str) -> str:
    """:func:`check_header_text`, and the percent-escapes of RFC 2231's
    ``charset'language'text`` form decoded and checked too."""
    check_header_text(value, what)
    match = _RFC2231.match(value)
    if match and "%" in match[2]:
        _check_decoded(unquote_to_bytes(match[2]), match[1],
                       f"{what} (once its RFC 2231 %-escapes are decoded)")
    return value


def check_header_name(name: str) -> str:
    """``name`` if a notification may set a header of that name."""
    if not _HEADER_NAME.fullmatch(name):  # match let a trailing line break by
        raise HeaderInjectionError(
            f"header name {name!r} is not a valid header name: use 1-76 visible ASCII "
            "characters without ':' or spaces, e.g. X-Ticket")
    lower = name.lower()
    if lower in RESERVED_HEADERS:
        raise ValueError(f"header {name} is set by the dispatcher and cannot be given")
    if lower in SERVER_HEADERS or lower.startswith(_SERVER_PREFIXES):
        raise ValueError(f"header {name} is a trace or authentication header that only "
                         "mail servers add; leave it out")
    return name


def _check_plain(value: str, what: str) -> None:
    if _LINE_BREAKS.search(value):
        raise HeaderInjectionError(
            f"{what} contains a line break; line breaks are not allowed in mail headers "
            "(they could be used to inject headers): put the text on one line"
        )
    if _OTHER_CONTROLS.search(value):
        raise HeaderInjectionError(
            f"{what} contains a control character; remove it (only printable text and "
            "tabs are allowed in mail headers)")


def _check_decoded(raw: bytes, charset: str, what: str) -> None:
    if _CONTROL_BYTES.search(raw):
        _check_plain(raw.decode("latin-1"), what)  # names the line break if it is one
        raise HeaderInjectionError(f"{what} contains a control character; send the text "
                                   "itself instead (the API takes any Unicode)")
    _check_plain(raw.decode(_codec(charset), "replace"), what)


def _codec(charset: str) -> str:
    name = charset.split("*", 1)[0]  # RFC 2231 language suffix: utf-8*en
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "latin-1"  # the package keeps unknown bytes; every byte is looked at


def _encoded_word_bytes(encoding: str, payload: str) -> bytes:
    data = payload.encode("utf-8", "surrogatepass")
    if encoding in "qQ":
        return _QP_ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), data.replace(b"_", b" "))
    data = _NOT_BASE64.sub(b"", data)  # lenient, like the package: stray characters dropped
    if len(data) % 4 == 1:
        data = data[:-1]
    try:
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except binascii.Error:
        return b""
