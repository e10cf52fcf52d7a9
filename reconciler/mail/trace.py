"""The ``debug`` switch of every server (SPEC I10): a protocol trace in the log.

A traced line goes to the ``reconciler.mail.trace`` logger at INFO when the
server has ``debug: true`` (so it shows at the daemon's usual log level) and at
DEBUG otherwise, always through the owner's :class:`~reconciler.mail.transport.Redactor`:
the password, token and the encodings protocols put them in never reach the log.

An *owner* is whatever holds the session: it has ``server`` (``.spec.debug``,
``.metadata``) and ``redactor``; SMTP's attempt, a Graph session, an EWS session
and the IMAP/POP3 fetchers all do. Protocol clients that run in a thread of their
own (IMAPClient, poplib, exchangelib) trace from inside that thread, so the
owner is bound to the thread (:func:`in_thread`) and found again by
:func:`wire`. IMAPClient logs the IMAP conversation itself (LOGIN and
AUTHENTICATE lines already masked, literals only by size); its logger is routed
here so those lines follow the same switch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
_bound = threading.local()
_WIRE = ("> ", "< ", "read literal", "write literal", "BYE")


def trace(owner: Any, msg: str, *args: object) -> None:
    """One line of ``owner``'s protocol trace, redacted."""
    level = logging.INFO if owner.server.spec.debug else logging.DEBUG
    if log.isEnabledFor(level):
        meta = owner.server.metadata
        text = msg % args if args else msg
        log.log(level, "%s %s/%s: %s", owner.server.kind, meta.namespace, meta.name,
                owner.redactor(text))


def in_thread(owner: Any, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` with ``owner`` bound to this thread, for :func:`wire`."""
    _bound.owner = owner
    return fn(*args)


def wire(msg: str, *args: object) -> None:
    """A trace line from a protocol client's thread; nothing outside a bound thread."""
    owner = getattr(_bound, "owner", None)
    if owner is not None:
        trace(owner, msg, *args)


class _ImapClientLines(logging.Handler):
    """IMAPClient's own log lines, as the fetcher's trace (or, off its thread, as ours)."""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno <= logging.DEBUG:
            # imaplib's parser notes (matched..., untagged_responses...) repeat the lines
            # and hold the mail itself; only what went over the wire is kept
            if record.name != "imapclient.imaplib" or text.startswith(_WIRE):
                wire("%s", text)
        else:
            log.log(record.levelno, "%s", text)


def _route_imapclient() -> None:
    # IMAPClient logs every line at DEBUG; its logger must pass them for the switch to
    # decide, and must not propagate them past it.
    imap = logging.getLogger("imapclient")
    imap.setLevel(logging.DEBUG)
    imap.propagate = False
    imap.addHandler(_ImapClientLines())


_route_imapclient()
