"""Composition's own guard on the headers it writes (SPEC S1), whatever the Python
patch level.

Intake refuses values that could break a header line
(:mod:`reconciler.config.header_text`), but the email package is what writes
the bytes, and its folder has changed between patch releases: on 3.11.7 and
3.12 it decodes an RFC 2047 encoded-word and writes the CR LF inside it out
raw, and it leaves a long quoted display name on one line of any length. A
notification stored before a check existed, or a value no check foresaw,
must still never reach the wire that way.

:data:`GUARDED_SMTP` is the ``SMTP`` policy with one change: every header it
folds is looked at before it is written. A folded header must be exactly one
logical header line: ``Name:`` first, every further line a continuation
(starting with a space or tab, not blank), no CR or LF but the CRLF line ends,
no other control byte. Anything else raises :class:`HeaderInjectionError`,
which the worker records as a permanent failure ("cannot compose the
message"), so the message is never sent.

Address headers are not left to the package's folder at all (why:
:mod:`reconciler.mail.header_write`). Any other header with a line over RFC
5322's 998 bytes is folded again as encoded-words when it is unstructured
text, and refused the same way when it is not.
"""

from __future__ import annotations

import re
from email.header import Header
from email.headerregistry import UnstructuredHeader
from email.policy import EmailPolicy
from typing import Any

from reconciler.config.header_text import HeaderInjectionError
from reconciler.mail.header_write import HARD_LINE, any_address_header

_FIELD_NAME = re.compile(rb"^[!-9;-~]+$")
_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")  # TAB allowed; CR/LF found apart
_TOO_LONG = "has a line longer than 998 bytes"


class GuardedPolicy(EmailPolicy):
    """``email.policy.SMTP`` that writes address headers itself and refuses to write
    a header which is not one line."""

    def fold_binary(self, name: str, value: Any) -> bytes:
        folded = _address_header(name, value)
        if folded is None:
            folded = super().fold_binary(name, value)
            if wire_problem(name, folded) == _TOO_LONG:
                folded = _refolded_text(name, value) or folded
        problem = wire_problem(name, folded)
        if problem:
            raise _refused(name, problem)
        return folded

    def fold(self, name: str, value: Any) -> str:
        # as_string() and friends: the same guard; composition itself writes bytes.
        return self.fold_binary(name, value).decode("ascii", "surrogateescape")


GUARDED_SMTP = GuardedPolicy(linesep="\r\n")  # what email.policy.SMTP is, guarded


def wire_problem(name: str, folded: bytes) -> str | None:
    """What is wrong with ``folded`` as the written form of header ``name``; None if
    it is one well-formed header line (folded or not) within the length limit."""
    if not folded.endswith(b"\r\n"):
        return "would not end its line"
    lines = folded[:-2].split(b"\r\n")
    field, colon, _ = lines[0].partition(b":")
    if not colon or not _FIELD_NAME.match(field) or field != name.encode("ascii", "replace"):
        return "has a name that is not a header name"
    for number, line in enumerate(lines):
        if b"\r" in line or b"\n" in line:
            return "would carry a raw line break (header injection)"
        if _CONTROL.search(line):
            return "would carry a control character"
        if number and line[:1] not in (b" ", b"\t"):
            return "would start a header line of its own (header injection)"
        if number and not line.strip(b" \t"):
            return "would carry a blank line, which ends the header block (header injection)"
    return _TOO_LONG if any(len(line) > HARD_LINE for line in lines) else None


def _address_header(name: str, value: Any) -> bytes | None:
    """An address header written by :func:`any_address_header` (the package's folder
    unquotes long display names); None for anything else, named groups included."""
    groups = getattr(value, "groups", None)
    if groups is None or any(group.display_name is not None for group in groups):
        return None
    mailboxes = [(address.display_name or None, address.addr_spec)
                 for group in groups for address in group.addresses]
    text = any_address_header(name, mailboxes)
    if text is None:
        raise _refused(name, _TOO_LONG)
    return text.encode("ascii")


def _refolded_text(name: str, value: Any) -> bytes | None:
    """Unstructured text the package left too long, folded as encoded-words; None for
    structured headers (parameters, ids, dates), which are not text to encode."""
    if not (type(value) is str or isinstance(value, UnstructuredHeader)):
        return None
    body = Header(str(value), "utf-8", header_name=name).encode(linesep="\r\n")
    return f"{name}: {body}\r\n".encode("ascii")


def _refused(name: str, problem: str) -> HeaderInjectionError:
    shown = name if _FIELD_NAME.match(name.encode("ascii", "replace")) else repr(name)
    return HeaderInjectionError(f"the {shown} header {problem}; the message is refused "
                                "rather than sent that way")
