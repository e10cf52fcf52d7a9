"""The one interface every incoming protocol implements (SPEC I1, I6, I7).

A :class:`Fetcher` is one open session with one IncomingServer's mailbox. The
runner drives it in a loop; nothing outside ``reconciler.mail`` knows
whether the mail came over IMAP, POP3, EWS or Graph::

    fetcher = fetcher_for(server, token_provider=tokens, ca_file=ca)
    async with fetcher:                       # connect() ... aclose()
        while running:
            async for mail in fetcher.fetch(store.is_done, limit=100):
                event = pipeline(mail.raw)    # parse, filter, build the ticket event
                store.commit(event, mail.marker)   # durable first ...
                await fetcher.mark_done(mail)      # ... then tell the server
                # or, when processing failed: await fetcher.move_to_error_folder(mail)
            await fetcher.wait_for_new(interval_seconds)

Contract:

- **Exactly once by marker.** ``FetchedMail.marker`` is stable across
  sessions and restarts and unique within the mailbox; the runner stores it
  with the event in the same transaction and passes ``already_done`` so a
  mail whose event is durable is never yielded again, even when
  ``mark_done`` never reached the server (crash between commit and flag).
  IMAP markers are ``imap:{folder}:{uidvalidity}:{uid}``; POP3 markers are
  ``pop3:{uidl}``. When an IMAP server resets UIDVALIDITY every marker of the
  old validity is obsolete: the fetcher cannot tell old mail from new, so
  unseen mail is yielded again and the pipeline's duplicate Message-ID check
  (SPEC I2) is what keeps it from becoming a second ticket.
- **Streaming.** ``fetch`` lists ids first (UIDs / UIDL), skips done ones,
  and downloads bodies one at a time, so memory stays at one message however
  large the mailbox is. ``limit`` caps how many mails one call yields.
- **Never delete by default.** IMAP ``mark_done`` sets ``\\Seen`` (and the
  ``$Reconciled`` keyword where the mailbox allows keywords); IMAP fetches
  only mail without ``\\Seen``, as the desks it replaces do. POP3 has no
  flags: the marker store is the only memory, and ``DELE`` happens only when
  the fetcher was built with ``delete_after_fetch=True``.
- **Failures.** Anything that breaks the session (connect, TLS, login,
  protocol) raises one :class:`FetchError`; the fetcher is then closed, and
  ``connect`` (or ``fetch``, which reconnects) starts a new session.
- One fetcher is used by one task at a time; methods are not re-entrant.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Container
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Self

from reconciler.config.models.incoming_server import IncomingServer
from reconciler.mail.failure import MailFailure
from reconciler.mail.outcome import Failure
from reconciler.mail.steps import Reason, Step

# What the runner already made durable: a set of markers, or a predicate
# (sync or async, e.g. a store lookup).
AlreadyDone = Container[str] | Callable[[str], bool | Awaitable[bool]]


class FetchErrorKind(StrEnum):
    """What the runner counts toward ``failure_notify_threshold`` (I7) and stores as the
    server's last error kind; a coarser view of :class:`~reconciler.mail.outcome.Failure`."""

    CONFIG = "config"  # the spec cannot work (no host, unreadable secret, no token provider)
    CONNECT = "connect"  # DNS, refused, unreachable, timed out, dropped
    TLS = "tls"  # handshake, certificate verification, STARTTLS not offered
    AUTH = "auth"  # login or token refused
    PROTOCOL = "protocol"  # the server answered something we cannot work with


# Where a failure given only by kind happened, why, and how the protocol layer files it;
# the fetchers' classifiers name step and reason themselves.
_BY_KIND: dict[FetchErrorKind, tuple[Step, Reason, Failure]] = {
    FetchErrorKind.CONFIG: (Step.FETCH, Reason.UNEXPECTED, Failure.CONFIG),
    FetchErrorKind.CONNECT: (Step.TCP, Reason.CLOSED, Failure.CONNECT),
    FetchErrorKind.TLS: (Step.TLS, Reason.HANDSHAKE, Failure.TLS),
    FetchErrorKind.AUTH: (Step.AUTH, Reason.AUTH_FAILED, Failure.AUTH),
    FetchErrorKind.PROTOCOL: (Step.FETCH, Reason.UNEXPECTED, Failure.PROTOCOL),
}
# Retrying cannot help these until a person acts; the rest may pass at the next interval.
_PERMANENT = frozenset({Failure.CONFIG, Failure.AUTH, Failure.TLS_VERIFY})


class FetchError(MailFailure):
    """A session-level failure of an incoming fetcher: the protocol layer's MailFailure,
    plus the ``kind`` the runner counts. Neither message nor fix holds a secret."""

    def __init__(self, kind: FetchErrorKind | str, message: str, likely_fix: str = "", *,
                 step: Step | None = None, reason: Reason | None = None,
                 failure: Failure | None = None, permanent: bool | None = None) -> None:
        self.kind = FetchErrorKind(kind)
        default_step, default_reason, default_failure = _BY_KIND[self.kind]
        failure = failure or default_failure
        super().__init__(step or default_step, reason or default_reason, message,
                         failure=failure, likely_fix=likely_fix,
                         permanent=failure in _PERMANENT if permanent is None else permanent)


class NotSupported(Exception):
    """The protocol cannot do this (the error folder on POP3); a config matter, not a fault."""


@dataclass(frozen=True, slots=True)
class FetchedMail:
    """One message as fetched; ``raw`` is the RFC 5322 message exactly as stored.

    ``uid`` is the protocol's handle within ``folder`` (IMAP UID, POP3 message
    number of this session) for the fetcher's own use; the runner keys on
    ``marker``. ``received_at`` is the server's arrival time when it says
    (IMAP INTERNALDATE), else None.
    """

    marker: str
    raw: bytes
    size: int
    folder: str
    uid: int
    received_at: datetime | None = None


async def is_done(already_done: AlreadyDone, marker: str) -> bool:
    if callable(already_done):
        answer = already_done(marker)
        if inspect.isawaitable(answer):
            answer = await answer
        return bool(answer)
    return marker in already_done


class Fetcher(ABC):
    """One session with one IncomingServer's mailbox (see the module docstring)."""

    protocol: str = ""
    supports_error_folder: bool = False

    def __init__(self, server: IncomingServer) -> None:
        self.server = server

    @abstractmethod
    async def connect(self) -> None:
        """Open, secure and log in; raises FetchError. Connecting twice is a no-op."""

    @abstractmethod
    def fetch(self, already_done: AlreadyDone, limit: int = 100) -> AsyncIterator[FetchedMail]:
        """Yield up to ``limit`` mails not in ``already_done``, oldest first, one at a time.

        Connects first when needed. A mail that vanished between listing and
        download (another client deleted it) is skipped silently.
        """

    @abstractmethod
    async def mark_done(self, mail: FetchedMail) -> None:
        """Tell the server the mail is handled; call only after its event is durable."""

    async def move_to_error_folder(self, mail: FetchedMail) -> None:
        """Move a mail that failed processing to the error folder, creating it if missing."""
        raise NotSupported(f"{self.protocol} has no folders: the error folder needs IMAP "
                           "(or EWS/Graph); failed mails stay in the mailbox and are logged")

    async def error_folder_count(self) -> int:
        """How many mails the error folder holds (0 when it does not exist)."""
        raise NotSupported(f"{self.protocol} has no error folder")

    async def move_back_from_error_folder(self) -> int:
        """Move every mail in the error folder back to the fetched folder, unread; the count."""
        raise NotSupported(f"{self.protocol} has no error folder")

    @abstractmethod
    async def wait_for_new(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for new mail.

        True when the server said new mail arrived (IMAP IDLE), False when the
        time ran out (servers without IDLE, POP3): fetch again either way.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Log out politely if possible and release the connection; never raises."""

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
