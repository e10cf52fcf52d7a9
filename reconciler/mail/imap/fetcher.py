"""IMAP and IMAPS fetcher (SPEC I1, I6) on IMAPClient, in the fetcher's thread.

IMAPClient (over imaplib) does the protocol: IDLE, modified UTF-7 folder
names, STARTTLS, SASL logins and parsed FETCH responses, all on its public
API. It replaced a hand-written imaplib client (IDLE and a timeout-proof
reader on imaplib's private methods) at no cost: fetching and flagging a
2 KB mail from Dovecot takes about 1.1 ms of CPU with either, and
bench/incoming.py shows the same throughput within its noise.

- ``imaps`` is TLS from the first byte; ``imap`` with ``starttls: true``
  requires the upgrade (a server without STARTTLS is an error, never a silent
  plaintext session). Certificates are always verified (system CAs plus
  ``ca_file``).
- Login: AUTHENTICATE PLAIN when offered (UTF-8 safe), else LOGIN; OAuth2
  uses XOAUTH2, else OAUTHBEARER, with a token from the token provider.
- Fetching: ``UID SEARCH UNSEEN``, then one ``UID FETCH ... BODY.PEEK[]``
  per mail (PEEK: downloading must not mark it read; only ``mark_done``
  does). Each ``wait_for_new`` ends with a SELECT, which drops the
  unsolicited responses the session collected.
- Markers ``imap:{folder}:{uidvalidity}:{uid}``; see the base module for what
  a UIDVALIDITY change means.
- Error folder: created when missing; ``UID MOVE`` (RFC 6851) where offered,
  else COPY, STORE ``\\Deleted`` and ``UID EXPUNGE`` (UIDPLUS) so no other
  deleted mail is expunged by us; plain EXPUNGE only when neither exists.
"""

from __future__ import annotations

import asyncio
import imaplib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from reconciler.config.models.auth import BasicAuth, NoAuth
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.mail import fetch_errors as errors
from reconciler.mail.fetcher import AlreadyDone, FetchedMail, FetchError, FetchErrorKind
from reconciler.mail.imap.client import Client
from reconciler.mail.steps import Reason, Step
from reconciler.mail.threaded import (
    Credentials,
    ProxyLookup,
    ThreadedFetcher,
    close_now,
    oauthbearer,
    xoauth2,
)
from reconciler.oauth.source import TokenProvider

log = logging.getLogger(__name__)

DONE_KEYWORD = "$Reconciled"
IDLE_RENEW_S = 25 * 60  # RFC 2177: re-issue IDLE before servers' 30-minute timeout
IDLE_POLL_S = 1.0  # how often an IDLE wakes to see whether it should stop
_NEW_MAIL = (b"EXISTS", b"RECENT")
_BODY = b"BODY[]"


class ImapFetcher(ThreadedFetcher):
    protocol = "imap"
    supports_error_folder = True
    _broken = (imaplib.IMAP4.abort, OSError, EOFError)
    _refused = (imaplib.IMAP4.error,)  # a NO/BAD to one command; the session goes on

    def __init__(self, server: IncomingServer, *, token_provider: TokenProvider | None,
                 ca_file: str | Path | None, timeout: float = 30.0,
                 proxy_lookup: ProxyLookup | None = None) -> None:
        super().__init__(server, token_provider=token_provider, ca_file=ca_file,
                         timeout=timeout, proxy_lookup=proxy_lookup)
        self._client: IMAPClient | None = None
        self._caps: frozenset[bytes] = frozenset()
        self._uidvalidity = 0
        self._keywords = False
        self._stop = threading.Event()

    @property
    def uidvalidity(self) -> int:
        return self._uidvalidity

    # -- session ----------------------------------------------------------

    def _new_session(self) -> None:
        self._stop.clear()

    def _open(self, credentials: Credentials) -> IMAPClient:
        where = self.where
        doing = errors.OPENING  # connect, implicit TLS and greeting: all in the constructor
        client: IMAPClient | None = None
        try:
            client = Client(where.host, where.port, connect=self._socket,
                            ssl=where.implicit_tls, ssl_context=self._tls(),
                            timeout=self._timeout)
            client.normalise_times = False  # INTERNALDATE keeps the server's zone
            if where.starttls:
                doing = errors.TLS
                if not client.has_capability("STARTTLS"):
                    raise errors.described(where, "no-starttls", command="STARTTLS")
                client.starttls(self._tls())
            doing = errors.LOGIN
            self._login(client, credentials)
            self._caps = frozenset(client.capabilities())  # servers announce more after login
            doing = f"selecting {self.folder}"
            self._select(client)
            return client
        except Exception as exc:
            if client is not None:
                close_now(client)
            raise self._classify(exc, doing) from None

    def _classify(self, exc: BaseException, doing: str) -> FetchError:
        """IMAP's classifier: IMAPClient raises imaplib's ``abort`` for a dropped session
        and ``error`` for a refused command; the network failures are shared."""
        if doing == errors.OPENING and isinstance(exc, imaplib.IMAP4.error):
            doing = errors.GREETING  # the constructor got a connection but no usable greeting
        return errors.classify(exc, self.where, doing, self.redactor,
                               session_ended=isinstance(exc, imaplib.IMAP4.abort))

    def _login(self, client: IMAPClient, credentials: Credentials) -> None:
        if (client.welcome or b"").upper().startswith(b"* PREAUTH"):
            return  # the server already knows us
        auth = self.server.spec.auth
        caps = client.capabilities()
        offered = [c[5:].decode() for c in caps if c.startswith(b"AUTH=")]
        where = self.where
        try:
            if isinstance(auth, NoAuth):
                raise errors.config_error(
                    where, "auth is none, but IMAP servers need a login",
                    "Configure auth basic (username and password) or oauth2.", step=Step.AUTH)
            if not isinstance(auth, BasicAuth):
                self._oauth_login(client, credentials, offered)
            elif b"LOGINDISABLED" in caps and "PLAIN" not in offered:
                raise errors.described(where, "plaintext")
            elif "PLAIN" in offered:
                client.plain_login(credentials.username, credentials.password)
            else:
                client.login(credentials.username, credentials.password)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            detail = self.redactor(str(exc))
            if "PRIVACYREQUIRED" in detail.upper():
                raise errors.described(where, "plaintext") from None
            raise errors.auth_refused(where, credentials.username, detail) from None

    def _oauth_login(self, client: IMAPClient, credentials: Credentials,
                     offered: list[str]) -> None:
        # sasl_login with _once rather than oauth2_login: a refused token comes back as an
        # error challenge that must be answered with an empty line (RFC 7628 3.2.3)
        username, token, where = credentials.username, str(credentials.token), self.where
        if "XOAUTH2" in offered:
            client.sasl_login("XOAUTH2", _once(xoauth2(username, token)))
        elif "OAUTHBEARER" in offered:
            client.sasl_login("OAUTHBEARER",
                              _once(oauthbearer(username, token, where.host, where.port)))
        else:
            raise errors.described(where, "mechanism", wanted="XOAUTH2 or OAUTHBEARER",
                                   offered=", ".join(offered) or "none")

    def _select(self, client: IMAPClient, folder: str | None = None) -> None:
        folder = folder or self.folder
        try:
            selected = client.select_folder(folder)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            raise errors.config_error(
                self.where, f"the folder {folder} cannot be opened ({self.redactor(str(exc))})",
                "Check folder in the incoming server spec: names are case sensitive except "
                "INBOX, and nested folders use the server's separator (often '/' or '.').",
                reason=Reason.NOT_FOUND) from None
        self._keywords = b"\\*" in selected.get(b"PERMANENTFLAGS", ())
        self._uidvalidity = int(selected.get(b"UIDVALIDITY", 0))

    async def aclose(self) -> None:
        self._stop.set()  # an IDLE in progress ends within IDLE_POLL_S
        await super().aclose()

    # -- fetching ---------------------------------------------------------

    async def fetch(self, already_done: AlreadyDone,
                    limit: int = 100) -> AsyncIterator[FetchedMail]:
        uids = await self._call("searching for unread mail", self._unseen)
        listing = [(f"imap:{self.folder}:{self._uidvalidity}:{uid}", uid) for uid in uids]
        async for mail in self._stream(listing, already_done, limit, self._download):
            yield mail

    def _unseen(self) -> list[int]:
        return sorted(self._session().search("UNSEEN"))

    def _download(self, uid: int, marker: str) -> FetchedMail | None:
        """None when someone else expunged the mail since the search."""
        items = ["RFC822.SIZE", "INTERNALDATE", "BODY.PEEK[]"]
        found = self._session().fetch([uid], items).get(uid)
        if not found or _BODY not in found:
            return None
        raw = bytes(found[_BODY])
        return FetchedMail(marker=marker, raw=raw, size=int(found.get(b"RFC822.SIZE", len(raw))),
                           folder=self.folder, uid=uid, received_at=found.get(b"INTERNALDATE"))

    @property
    def _done_flags(self) -> list[str]:
        return ["\\Seen", DONE_KEYWORD] if self._keywords else ["\\Seen"]

    async def mark_done(self, mail: FetchedMail) -> None:
        if not self._same_session(mail):
            return
        await self._call("marking a mail read", self._flag, [mail.uid])

    def _flag(self, uids: list[int]) -> None:
        self._session().add_flags(uids, self._done_flags, silent=True)

    def _same_session(self, mail: FetchedMail) -> bool:
        """Whether the mail's UID still means the same mail (same folder and UIDVALIDITY)."""
        validity = mail.marker.rsplit(":", 2)[-2]
        if mail.folder != self.folder or validity != str(self._uidvalidity):
            log.warning("mail %s belongs to another UIDVALIDITY (now %s); left as it is",
                        mail.marker, self._uidvalidity)
            return False
        return True

    # -- error folder (I6) ------------------------------------------------

    @property
    def error_folder(self) -> str:
        return str(self.server.spec.error_folder.name)

    async def move_to_error_folder(self, mail: FetchedMail) -> None:
        if self._client is None:
            await self.connect()
        if not self._same_session(mail):
            return
        await self._call(f"moving a mail to {self.error_folder}", self._move_to_error, mail.uid)

    def _ensure_folder(self, name: str) -> None:
        client = self._session()
        if client.folder_exists(name):
            return
        try:
            client.create_folder(name)
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            if "ALREADYEXISTS" not in str(exc).upper():
                raise FetchError(FetchErrorKind.PROTOCOL,
                                 f"{self.where.address} refused to create the folder {name} "
                                 f"({self.redactor(str(exc))})",
                                 "Create the folder in the mailbox by hand, or set "
                                 "error_folder.name to a folder that exists.",
                                 reason=Reason.REJECTED) from None

    def _move(self, uids: list[int], target: str) -> None:
        client = self._session()
        if b"MOVE" in self._caps:
            client.move(uids, target)
            return
        client.copy(uids, target)
        client.delete_messages(uids, silent=True)
        if b"UIDPLUS" in self._caps:
            client.uid_expunge(uids)
        else:
            client.expunge()

    def _move_to_error(self, uid: int) -> None:
        self._ensure_folder(self.error_folder)
        self._move([uid], self.error_folder)

    async def error_folder_count(self) -> int:
        return int(await self._call("counting the error folder", self._count_error))

    def _count_error(self) -> int:
        try:
            status = self._session().folder_status(self.error_folder, ["MESSAGES"])
        except IMAPClientAbortError:
            raise
        except IMAPClientError:
            return 0  # the folder does not exist (yet)
        return int(status.get(b"MESSAGES", 0))

    async def move_back_from_error_folder(self) -> int:
        return int(await self._call("moving mails back from the error folder", self._move_back))

    def _move_back(self) -> int:
        client = self._session()
        if self._count_error() == 0:
            return 0
        try:
            self._select(client, self.error_folder)
            uids = client.search("ALL")
            if uids:
                # unread again, so the fetch (UNSEEN) processes them once more
                client.remove_flags(uids, self._done_flags, silent=True)
                self._move(uids, self.folder)
        finally:
            self._select(client)
        return len(uids)

    # -- waiting ----------------------------------------------------------

    async def wait_for_new(self, timeout: float) -> bool:
        if self._client is None:
            await self.connect()
        woke = await self._wait(timeout)
        # SELECT again: it flushes the EXISTS/RECENT noise a long session collects (once
        # per wait; a SELECT per fetch cost a fifth of bench/incoming.py's throughput)
        await self._call(f"selecting {self.folder}", lambda: self._select(self._session()))
        return woke

    async def _wait(self, timeout: float) -> bool:
        if b"IDLE" not in self._caps:
            await asyncio.sleep(timeout)
            return False
        self._stop.clear()
        remaining = timeout
        try:
            while remaining > 0:
                chunk = min(remaining, IDLE_RENEW_S)
                if await self._call("waiting for new mail (IDLE)", self._idle, chunk):
                    return True
                remaining -= chunk
        except BaseException:
            self._stop.set()  # a cancelled wait ends the IDLE in the thread promptly
            raise
        return False

    def _idle(self, timeout: float) -> bool:
        """IDLE until the server reports new mail, ``timeout`` passes or ``_stop`` is set.

        IMAPClient polls the socket, so a line the server sent together with the IDLE
        continuation waits in the reader's buffer until DONE: such mail is reported at
        the end of the wait, not lost.
        """
        client = self._session()
        client.idle()
        woke, quiet = False, 0
        deadline = time.monotonic() + timeout
        while not woke and not self._stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            responses = client.idle_check(IDLE_POLL_S)
            if any(r[:1] == (b"BYE",) for r in responses):
                raise imaplib.IMAP4.abort("the server said BYE during IDLE")
            # readable but nothing to read, again and again: the server closed the socket
            quiet = quiet + 1 if not responses and \
                time.monotonic() - started < IDLE_POLL_S / 2 else 0
            if quiet >= 3:
                raise imaplib.IMAP4.abort("connection closed during IDLE")
            woke = _new_mail(responses)
        _, responses = client.idle_done()
        return woke or _new_mail(responses)


def _new_mail(responses: list[tuple[Any, ...]]) -> bool:
    return any(len(r) > 1 and r[1] in _NEW_MAIL for r in responses)


def _once(response: bytes) -> Callable[[bytes], bytes]:
    """A SASL callback: the initial response, then an empty line to any error challenge."""
    sent = False

    def answer(_challenge: bytes) -> bytes:
        nonlocal sent
        if sent:
            return b""
        sent = True
        return response

    return answer
