"""IMAP and IMAPS fetcher (SPEC I1, I6) on the standard library's imaplib.

Why imaplib in a thread rather than aioimaplib: imaplib has handled every
server's quirks for decades, needs no new dependency, and the cost of a
thread per mailbox is small next to a service desk's handful of mailboxes.
Python 3.11's imaplib has no IDLE; :class:`_Client` adds it by reading the
socket itself. For that, the client reads through :class:`_LineReader`
instead of ``socket.makefile``: a buffered file object is unusable after a
read times out, and IDLE must wake every second to see whether it should
stop. Our reader keeps partial lines across timeouts.

- ``imaps`` is TLS from the first byte; ``imap`` with ``starttls: true``
  requires the upgrade (a server without STARTTLS is an error, never a silent
  plaintext session). Certificates are always verified (system CAs plus
  ``ca_file``).
- Login: AUTHENTICATE PLAIN when offered (UTF-8 safe), else LOGIN; OAuth2
  uses XOAUTH2, else OAUTHBEARER, with a token from the token provider.
- Fetching: ``UID SEARCH UNSEEN``, then one ``UID FETCH ... BODY.PEEK[]`` per
  mail (PEEK: downloading must not mark it read; only ``mark_done`` does).
- Markers ``imap:{folder}:{uidvalidity}:{uid}``; see the base module for what
  a UIDVALIDITY change means.
- Error folder: created when missing; ``UID MOVE`` (RFC 6851) where offered,
  else COPY, STORE ``\\Deleted`` and ``UID EXPUNGE`` (UIDPLUS) so no other
  deleted mail is expunged by us; plain EXPUNGE only when neither exists.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import imaplib
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.config.models.auth import BasicAuth, NoAuth
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.mail.fetch_errors import (
    auth_refused,
    classify,
    config_error,
    mechanism_missing,
    plaintext_refused,
    tls_not_offered,
)
from reconciler.mail.fetcher import (
    AlreadyDone,
    FetchedMail,
    FetchError,
    FetchErrorKind,
    IncomingTokenProvider,
    is_done,
)
from reconciler.mail.threaded import (
    Credentials,
    SteppedSocket,
    ThreadedFetcher,
    oauthbearer,
    xoauth2,
)

log = logging.getLogger(__name__)

DONE_KEYWORD = "$Reconciled"
IDLE_RENEW_S = 25 * 60  # RFC 2177: re-issue IDLE before servers' 30-minute timeout
IDLE_POLL_S = 1.0  # how often an IDLE wakes to see whether it should stop
_EXISTS = re.compile(rb"^\* \d+ (EXISTS|RECENT)\b", re.IGNORECASE)
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_DATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')
_STATUS_MESSAGES = re.compile(rb"\bMESSAGES (\d+)")


class _LineReader:
    """The file-like reader imaplib wants, over the socket, surviving read timeouts."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()

    def _fill(self) -> bool:
        chunk = self._sock.recv(65536)
        if not chunk:
            return False
        self._buf += chunk
        return True

    def readline(self, limit: int = -1) -> bytes:
        scanned = 0
        while True:
            end = self._buf.find(b"\n", scanned)
            if end >= 0:
                end += 1
            elif 0 < limit <= len(self._buf):
                end = limit
            if end >= 0:
                if 0 < limit < end:
                    end = limit
                line = bytes(self._buf[:end])
                del self._buf[:end]
                return line
            scanned = len(self._buf)
            if not self._fill():
                line = bytes(self._buf)
                self._buf.clear()
                return line

    def read(self, size: int) -> bytes:
        while len(self._buf) < size:
            if not self._fill():
                break
        with memoryview(self._buf) as view:
            data = bytes(view[:size])  # one copy of a large literal, not two
        del self._buf[:size]
        return data

    def close(self) -> None:
        self._buf.clear()


class _ClientMixin(SteppedSocket):
    """IDLE, STARTTLS and the reader for imaplib's plain and SSL clients."""

    sock: socket.socket
    file: Any
    _tls_established: bool
    _context_attribute = "ssl_context"

    def open(self, host: str = "", port: int = 143, timeout: float | None = None) -> None:
        super().open(host, port, timeout)  # type: ignore[misc]
        self.file = _LineReader(self.sock)

    def starttls(self, ssl_context: ssl.SSLContext | None = None) -> tuple[str, list[Any]]:
        # imaplib's own starttls re-wraps with makefile(); ours keeps the reader
        assert ssl_context is not None
        client: Any = self
        typ, dat = client._simple_command("STARTTLS")
        if typ != "OK":
            raise imaplib.IMAP4.error(f"STARTTLS refused: {dat}")
        self.sock = ssl_context.wrap_socket(self.sock, server_hostname=self.host)
        self.file = _LineReader(self.sock)
        self._tls_established = True
        client._get_capabilities()
        return typ, dat

    def idle_wait(self, timeout: float, stop: threading.Event) -> bool:
        """IDLE until the server reports new mail, ``timeout`` passes or ``stop`` is set."""
        client: Any = self
        tag = client._new_tag()
        client.tagged_commands.pop(tag, None)
        client.send(tag + b" IDLE\r\n")
        woke = False
        while True:
            line = client._get_line()
            if line.startswith(b"+"):
                break
            if line.startswith(tag):
                raise imaplib.IMAP4.error(f"IDLE refused: {line.decode(errors='replace')}")
            woke = woke or bool(_EXISTS.match(line))
        deadline = time.monotonic() + timeout
        previous = self.sock.gettimeout()
        self.sock.settimeout(IDLE_POLL_S)
        try:
            while not woke and not stop.is_set() and time.monotonic() < deadline:
                try:
                    line = client._get_line()
                except TimeoutError:
                    continue
                woke = bool(_EXISTS.match(line))
        finally:
            self.sock.settimeout(previous)
        client.send(b"DONE\r\n")
        while True:
            line = client._get_line()
            if line.startswith(tag):
                if not line[len(tag):].lstrip().upper().startswith(b"OK"):
                    raise imaplib.IMAP4.error(f"IDLE ended with {line.decode(errors='replace')}")
                break
            woke = woke or bool(_EXISTS.match(line))
        client.untagged_responses.clear()
        return woke


class _Client(_ClientMixin, imaplib.IMAP4):
    pass


class _SslClient(_ClientMixin, imaplib.IMAP4_SSL):
    pass


def quote_mailbox(name: str) -> str:
    """A mailbox name as an IMAP quoted string, non-ASCII in modified UTF-7 (RFC 3501 5.1.3)."""
    encoded = _utf7_imap(name)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _utf7_imap(text: str) -> str:
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in text:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


class ImapFetcher(ThreadedFetcher):
    protocol = "imap"
    supports_error_folder = True
    _broken = (imaplib.IMAP4.abort, OSError, EOFError)
    _refused = (imaplib.IMAP4.error,)  # a NO/BAD to one command; the session goes on

    def __init__(self, server: IncomingServer, *, token_provider: IncomingTokenProvider | None,
                 ca_file: str | Path | None, timeout: float = 30.0) -> None:
        super().__init__(server, token_provider=token_provider, ca_file=ca_file,
                         timeout=timeout)
        self._client: imaplib.IMAP4 | None = None
        self._caps: frozenset[str] = frozenset()
        self._uidvalidity = 0
        self._keywords = False
        self._stop = threading.Event()

    @property
    def uidvalidity(self) -> int:
        return self._uidvalidity

    # -- session ----------------------------------------------------------

    def _new_session(self) -> None:
        self._stop.clear()

    def _open(self, credentials: Credentials) -> imaplib.IMAP4:
        where = self.where
        progress = ["connect"]
        client: imaplib.IMAP4 | None = None
        try:
            if where.implicit_tls:
                client = _SslClient(where.host, where.port, ssl_context=self._tls(),
                                    timeout=self._timeout, progress=progress)
            else:
                client = _Client(where.host, where.port, timeout=self._timeout,
                                 progress=progress)
            progress[0] = "greeting"
            if where.starttls:
                progress[0] = "tls"
                if "STARTTLS" not in client.capabilities:
                    raise tls_not_offered(where)
                client.starttls(self._tls())
            progress[0] = "logging in"
            self._login(client, credentials)
            progress[0] = "reading capabilities"
            typ, data = client.capability()
            self._caps = frozenset(str(data[0], "ascii", "replace").upper().split()
                                   if typ == "OK" and data and data[0] else client.capabilities)
            progress[0] = f"selecting {self.folder}"
            self._select(client)
            return client
        except Exception as exc:
            if client is not None:
                _shutdown(client)
            raise classify(exc, where, progress[0], self.redactor) from None

    def _login(self, client: imaplib.IMAP4, credentials: Credentials) -> None:
        if client.state == "AUTH":  # PREAUTH greeting: the server already knows us
            return
        auth = self.server.spec.auth
        offered = [c[5:] for c in client.capabilities if c.startswith("AUTH=")]
        where = self.where
        try:
            if isinstance(auth, NoAuth):
                raise config_error(where, "auth is none, but IMAP servers need a login",
                                   "Configure auth basic (username and password) or oauth2.")
            if isinstance(auth, BasicAuth):
                assert credentials.password is not None
                if "LOGINDISABLED" in client.capabilities and "PLAIN" not in offered:
                    raise plaintext_refused(where)
                if "PLAIN" in offered:
                    plain = f"\0{credentials.username}\0{credentials.password}".encode()
                    client.authenticate("PLAIN", _once(plain))
                else:
                    client.login(credentials.username, credentials.password)
                return
            assert credentials.token is not None
            if "XOAUTH2" in offered:
                client.authenticate("XOAUTH2",
                                    _once(xoauth2(credentials.username, credentials.token)))
            elif "OAUTHBEARER" in offered:
                client.authenticate("OAUTHBEARER", _once(oauthbearer(
                    credentials.username, credentials.token, where.host, where.port)))
            else:
                raise mechanism_missing(where, "XOAUTH2 or OAUTHBEARER", offered)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            detail = self.redactor(str(exc))
            if "PRIVACYREQUIRED" in detail.upper():
                raise plaintext_refused(where) from None
            raise auth_refused(where, credentials.username, detail) from None

    def _select(self, client: imaplib.IMAP4, folder: str | None = None) -> int:
        folder = folder or self.folder
        typ, data = client.select(quote_mailbox(folder))
        if typ != "OK":
            detail = self.redactor(_text(data))
            raise config_error(self.where, f"the folder {folder} cannot be opened ({detail})",
                               "Check folder in the incoming server spec: names are case "
                               "sensitive except INBOX, and nested folders use the server's "
                               "separator (often '/' or '.').")
        _, validity = client.response("UIDVALIDITY")
        _, flags = client.response("PERMANENTFLAGS")
        self._keywords = any(b"\\*" in (f or b"") for f in flags)
        self._uidvalidity = int(validity[0]) if validity and validity[0] else 0
        return int(data[0]) if data and data[0] else 0

    async def aclose(self) -> None:
        self._stop.set()  # an IDLE in progress ends within IDLE_POLL_S
        await super().aclose()

    def _logout(self, client: imaplib.IMAP4) -> None:
        client.logout()

    def _shutdown(self, client: imaplib.IMAP4) -> None:
        _shutdown(client)

    # -- fetching ---------------------------------------------------------

    async def fetch(self, already_done: AlreadyDone,
                    limit: int = 100) -> AsyncIterator[FetchedMail]:
        uids: list[int] = await self._call("searching for unread mail", self._unseen)
        validity = self._uidvalidity
        yielded = 0
        for uid in uids:
            if yielded >= limit:
                return
            marker = f"imap:{self.folder}:{validity}:{uid}"
            if await is_done(already_done, marker):
                continue
            mail = await self._call("downloading a mail", self._download, uid, marker)
            if mail is None:
                continue  # expunged by someone else since the search
            yielded += 1
            yield mail

    def _client_now(self) -> imaplib.IMAP4:
        if self._client is None:
            raise imaplib.IMAP4.abort("not connected")
        return self._client

    def _unseen(self) -> list[int]:
        client = self._client_now()
        typ, data = client.uid("SEARCH", "UNSEEN")
        _check(typ, data, "UID SEARCH")
        client.untagged_responses.clear()  # EXISTS/RECENT/FETCH noise of a long session
        return sorted(int(n) for n in b" ".join(d for d in data if d).split())

    def _download(self, uid: int, marker: str) -> FetchedMail | None:
        client = self._client_now()
        typ, data = client.uid("FETCH", str(uid), "(UID RFC822.SIZE INTERNALDATE BODY.PEEK[])")
        _check(typ, data, "UID FETCH")
        for part in data:
            if isinstance(part, tuple) and len(part) >= 2:
                head = part[0]
                found = _UID.search(head)
                if found is None or int(found.group(1)) != uid:
                    continue
                raw = bytes(part[1])
                size = _SIZE.search(head)
                return FetchedMail(marker=marker, raw=raw,
                                   size=int(size.group(1)) if size else len(raw),
                                   folder=self.folder, uid=uid,
                                   received_at=_internaldate(head))
        return None

    async def mark_done(self, mail: FetchedMail) -> None:
        if not self._same_session(mail):
            return
        flags = f"(\\Seen {DONE_KEYWORD})" if self._keywords else "(\\Seen)"
        await self._call("marking a mail read", self._store, str(mail.uid), "+FLAGS.SILENT",
                         flags)

    def _store(self, uids: str, op: str, flags: str) -> None:
        typ, data = self._client_now().uid("STORE", uids, op, flags)
        _check(typ, data, "UID STORE")

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
        client = self._client_now()
        typ, data = client.list('""', quote_mailbox(name))
        if typ == "OK" and any(d for d in data):
            return
        typ, data = client.create(quote_mailbox(name))
        if typ != "OK" and b"ALREADYEXISTS" not in b" ".join(
                d for d in data if isinstance(d, bytes)).upper():
            raise FetchError(FetchErrorKind.PROTOCOL,
                             f"{self.where.address} refused to create the folder {name} "
                             f"({self.redactor(_text(data))})",
                             "Create the folder in the mailbox by hand, or set "
                             "error_folder.name to a folder that exists.")

    def _move(self, uids: str, target: str) -> None:
        client = self._client_now()
        quoted = quote_mailbox(target)
        if "MOVE" in self._caps:
            typ, data = client.uid("MOVE", uids, quoted)
            _check(typ, data, "UID MOVE")
            return
        typ, data = client.uid("COPY", uids, quoted)
        _check(typ, data, "UID COPY")
        typ, data = client.uid("STORE", uids, "+FLAGS.SILENT", "(\\Deleted)")
        _check(typ, data, "UID STORE")
        if "UIDPLUS" in self._caps:
            typ, data = client.uid("EXPUNGE", uids)
        else:
            typ, data = client.expunge()
        _check(typ, data, "EXPUNGE")

    def _move_to_error(self, uid: int) -> None:
        self._ensure_folder(self.error_folder)
        self._move(str(uid), self.error_folder)

    async def error_folder_count(self) -> int:
        return int(await self._call("counting the error folder", self._count_error))

    def _count_error(self) -> int:
        typ, data = self._client_now().status(quote_mailbox(self.error_folder), "(MESSAGES)")
        if typ != "OK":
            return 0  # the folder does not exist (yet)
        found = _STATUS_MESSAGES.search(b" ".join(d for d in data if isinstance(d, bytes)))
        return int(found.group(1)) if found else 0

    async def move_back_from_error_folder(self) -> int:
        return int(await self._call("moving mails back from the error folder",
                                    self._move_back))

    def _move_back(self) -> int:
        client = self._client_now()
        if self._count_error() == 0:
            return 0
        try:
            self._select(client, self.error_folder)
            typ, data = client.uid("SEARCH", "ALL")
            _check(typ, data, "UID SEARCH")
            uids = b" ".join(d for d in data if d).split()
            if uids:
                # unread again, so the fetch (UNSEEN) processes them once more
                flags = f"(\\Seen {DONE_KEYWORD})" if self._keywords else "(\\Seen)"
                self._store("1:*", "-FLAGS.SILENT", flags)
                self._move("1:*", self.folder)
        finally:
            self._select(client)
        return len(uids)

    # -- waiting ----------------------------------------------------------

    async def wait_for_new(self, timeout: float) -> bool:
        if self._client is None:
            await self.connect()
        if "IDLE" not in self._caps:
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
        client = self._client_now()
        assert isinstance(client, _ClientMixin)
        return client.idle_wait(timeout, self._stop)


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


def _check(typ: str, data: list[Any], command: str) -> None:
    if typ != "OK":
        raise imaplib.IMAP4.error(f"{command} answered {typ} {_text(data)}")


def _text(data: list[Any]) -> str:
    parts = [d.decode(errors="replace") if isinstance(d, bytes) else str(d) for d in data if d]
    return " ".join(parts) or "no reason given"


def _internaldate(head: bytes) -> datetime | None:
    found = _DATE.search(head)
    if found is None:
        return None
    try:
        return datetime.strptime(found.group(1).decode().strip(), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        return None


def _shutdown(client: imaplib.IMAP4) -> None:
    with contextlib.suppress(Exception):
        client.shutdown()
