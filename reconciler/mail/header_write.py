"""Header lines written by our own code, not the email package's folder.

Two users:

- compose's fast path writes a plain ASCII notification as bytes
  (:func:`address_header`, :func:`text_header`), in the form the email
  package gives for the same input, or None to leave it to the package;
- :mod:`reconciler.mail.header_guard` writes every address header of the
  ``EmailMessage`` path with :func:`any_address_header`. On Python 3.11.7 the
  package's folder splits a quoted display name longer than a line and drops
  its quotes, so ``"x, evil@attacker.example, ..."`` arrives as extra
  addresses (an address injection); it also leaves an unbreakable one on a
  single line of any length. Here a display name stays one phrase: as atoms,
  a quoted string while that fits in a line, else RFC 2047 encoded-words
  (which carry any text, non-ASCII included, and fold anywhere).

Lines are folded before a space where they would pass 78 characters; no line
is ever longer than :data:`HARD_LINE`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.header import Header

MAX_LINE = 78  # RFC 5322 "SHOULD"; folding keeps header lines to this where it can
HARD_LINE = 998  # RFC 5322 "MUST", CRLF excluded: the fast path leaves such lines alone

_ATOM_PHRASE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+$")  # atext and spaces
_SIMPLE_ADDR = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+$")
PRINTABLE = re.compile(r"^[ -~]+$")
# Room for "Name: " and " <address>," beside a quoted display name on its line.
_QUOTED_ROOM = HARD_LINE - 80 - 256


def _plain_text(value: str) -> bool:
    """Header text the fast path writes as is: printable ASCII, single spaces, no
    encoded-word look-alikes (anything else is left to the email package)."""
    return (bool(PRINTABLE.match(value)) and "=?" not in value
            and value == value.strip() and "  " not in value)


def _mailbox_text(name: str | None, addr: str) -> str | None:
    if not _SIMPLE_ADDR.match(addr):
        return None
    if not name:
        return addr
    if not _plain_text(name):
        return None
    if not _ATOM_PHRASE.match(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{addr}>"


def _fold(name: str, items: list[str], sep: str) -> str | None:
    """``Name: item<sep>item...`` folded before a space where a line would pass 78."""
    line = name + ":"
    lines: list[str] = []
    last = len(items) - 1
    for i, item in enumerate(items):
        token = item + (sep if i < last else "")
        if len(line) + 1 + len(token) > MAX_LINE and line != name + ":":
            lines.append(line)
            line = ""
        line += " " + token
        if len(line) > HARD_LINE:
            return None
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def address_header(name: str, mailboxes: Iterable[tuple[str | None, str]]) -> str | None:
    """The fast path's address header: plain ASCII names and simple addresses only."""
    items = [_mailbox_text(display, addr) for display, addr in mailboxes]
    if any(item is None for item in items):
        return None
    return _fold(name, [i for i in items if i is not None], ",")


def text_header(name: str, value: str) -> str | None:
    """The fast path's unstructured header: plain ASCII text only."""
    return None if not value or not _plain_text(value) else _fold(name, value.split(" "), "")


def any_address_header(name: str, mailboxes: Iterable[tuple[str | None, str]]) -> str | None:
    """Header ``name`` listing ``mailboxes`` (display name or None, address), whatever
    the names hold; None only if an address itself would not fit on a line."""
    tokens: list[str] = []
    for display, addr in mailboxes:
        if tokens:
            tokens[-1] += ","
        text = _mailbox_text(display, addr) if _SIMPLE_ADDR.match(addr) else None
        if text is not None and len(text) <= _QUOTED_ROOM:
            tokens.append(text)
        elif display:
            # Encoded-words hold no whitespace, so splitting keeps each one whole.
            tokens.extend(Header(display, "utf-8", maxlinelen=MAX_LINE - 4)
                          .encode(linesep="\r\n").split())
            tokens.append(f"<{addr}>")
        else:
            tokens.append(addr)
    return _fold(name, tokens, "")
