"""Who originally wrote a forwarded mail.

The original is attached as message/rfc822 (parse.py reads its From) or pasted
into the body under a marker line every client writes differently. A body is
only searched when the subject says forward (``Fwd:``, ``FW:``, ``WG:``, ``TR:``,
``RV:``, ...) or it has an unambiguous marker: Outlook's "Original Message"
block alone also starts every reply, and a reply is not a forward.
"""

from __future__ import annotations

import re
from email.utils import parseaddr

from reconciler.incoming.pipeline.event import Address

_FORWARD_SUBJECT = re.compile(r"^\s*(?:(?:re|aw|sv)\s*:\s*)*(?:fwd?|fw|wg|tr|rv|vs|enc)\s*:",
                              re.IGNORECASE)
_FORWARD_MARKER = re.compile(
    r"^[ \t>]*(?:-{2,}\s*Forwarded message\s*-{2,}|Begin forwarded message:|"
    r"-{2,}\s*Forwarded Message\s*-{2,}|-{2,}\s*Original Message\s*-{2,}|_{10,})[ \t]*$",
    re.IGNORECASE | re.MULTILINE)
_UNAMBIGUOUS = re.compile(r"Forwarded message|Begin forwarded message:|Forwarded Message",
                          re.IGNORECASE)
_FROM_LINE = re.compile(r"^[ \t>*]*(?:From|Von|De|Da|Van)[ \t]*:[ \t]*\**[ \t]*(?P<who>.+)$",
                        re.IGNORECASE | re.MULTILINE)
_MAILTO = re.compile(r"\[mailto:(?P<addr>[^\]\s]+)\]", re.IGNORECASE)
_ANY_ADDR = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")


def is_forward(subject: str, body: str) -> bool:
    return bool(_FORWARD_SUBJECT.match(subject)) or bool(
        _UNAMBIGUOUS.search(body) and _FORWARD_MARKER.search(body))


def inline_original_sender(subject: str, body: str) -> Address | None:
    """The From of the first forwarded block in ``body``, if this is a forward."""
    if not is_forward(subject, body):
        return None
    marker = _FORWARD_MARKER.search(body)
    start = marker.end() if marker else 0
    line = _FROM_LINE.search(body, start)
    if line is None:
        return None
    who = line["who"].strip()
    mailto = _MAILTO.search(who)  # Outlook: Jane Doe [mailto:jane@example.com]
    if mailto:
        return Address(mailto["addr"], who[: mailto.start()].strip().strip('"') or None)
    name, addr = parseaddr(who)
    if "@" not in addr:
        found = _ANY_ADDR.search(who)
        if found is None:
            return None
        addr = found[0]
    return Address(addr.strip("<>"), name or None)
