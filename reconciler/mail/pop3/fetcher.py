"""POP3 and POP3S fetcher (SPEC I1) on the standard library's poplib, in the fetcher's thread.

- ``pop3s`` is TLS from the first byte; ``pop3`` with ``starttls: true``
  requires STLS (RFC 2595). Certificates are always verified.
- Login: USER/PASS, or ``AUTH XOAUTH2`` with the initial response (RFC 5034)
  for OAuth2; a refused token comes back as a ``+`` challenge that is
  answered with an empty line, as the mechanism requires.
- POP3 has no flags and no folders: ``UIDL`` gives each mail its marker
  ``pop3:{uidl}`` and the marker store is the only memory of what was
  handled. Mail stays on the server unless the fetcher was built with
  ``delete_after_fetch=True`` (then ``DELE`` at ``mark_done``, committed when
  the session ends). There is no error folder (the seeds say the same).
- A POP3 session sees the mailbox as it was at login, so ``wait_for_new``
  ends the session and the next ``fetch`` logs in again.
"""

from __future__ import annotations

import asyncio
import base64
import poplib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from reconciler.config.models.auth import BasicAuth, NoAuth
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.mail import fetch_errors as errors
from reconciler.mail.fetcher import AlreadyDone, FetchedMail, FetchError
from reconciler.mail.steps import Step
from reconciler.mail.threaded import (
    Connect,
    Credentials,
    ProxyLookup,
    ThreadedFetcher,
    close_now,
    xoauth2,
)
from reconciler.mail.trace import wire
from reconciler.oauth.source import TokenProvider

MAX_LINE = 1 << 20  # poplib's 2,048-byte limit refuses real mail with long HTML lines


class _Client(poplib.POP3):
    """poplib's client with its socket set-up split, so a failure says whether TCP, TLS or
    the greeting failed (``progress[0]`` names the phase), with its connection from
    ``connect`` (direct or through a proxy), and with longer lines. ``_create_socket`` is
    poplib's private hook; it has been there since Python 3.3 and POP3_SSL uses it too."""

    def __init__(self, *args: Any, progress: list[str], connect: Connect,
                 **kwargs: Any) -> None:
        self._progress = progress  # the phase a failing constructor was in
        self._open_socket = connect
        super().__init__(*args, **kwargs)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = self._open_socket(timeout)
        context = getattr(self, "context", None)  # set by POP3_SSL before connecting
        if context is not None:
            self._progress[0] = errors.TLS
            sock = context.wrap_socket(sock, server_hostname=self.host)
        self._progress[0] = errors.GREETING
        return sock

    def logout(self) -> None:  # IMAPClient's names, so the base class ends either session
        self.quit()

    def shutdown(self) -> None:
        self.close()

    # The trace sees commands and status lines, never a mail's lines (multi-line bodies
    # are read with _getline alone); PASS and AUTH go through the fetcher's redactor.
    def _putline(self, line: bytes) -> None:
        wire("> %s", line.decode(errors="replace"))
        super()._putline(line)  # type: ignore[misc]

    def _getresp(self) -> bytes:
        try:
            resp: bytes = super()._getresp()  # type: ignore[misc]
        except poplib.error_proto as exc:
            wire("< %s", exc)
            raise
        wire("< %s", resp.decode(errors="replace"))
        return resp

    def _getline(self) -> tuple[bytes, int]:
        line = self.file.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise poplib.error_proto("line too long")
        if not line:
            raise poplib.error_proto("-ERR EOF")
        octets = len(line)
        if line[-2:] == b"\r\n":
            return line[:-2], octets
        return (line[1:-1] if line[:1] == b"\r" else line[:-1]), octets


class _SslClient(_Client, poplib.POP3_SSL):
    pass


class Pop3Fetcher(ThreadedFetcher):
    protocol = "pop3"
    supports_error_folder = False
    _broken = (poplib.error_proto, OSError, EOFError)

    def __init__(self, server: IncomingServer, *, token_provider: TokenProvider | None,
                 ca_file: str | Path | None, timeout: float = 30.0,
                 delete_after_fetch: bool = False, proxy_lookup: ProxyLookup | None = None,
                 ) -> None:
        super().__init__(server, token_provider=token_provider, ca_file=ca_file,
                         timeout=timeout, proxy_lookup=proxy_lookup)
        self.delete_after_fetch = delete_after_fetch
        self._client: _Client | None = None
        self._numbers: dict[str, int] = {}  # marker -> message number in this session

    def _new_session(self) -> None:
        self._numbers = {}  # message numbers are only valid within one session

    def _open(self, credentials: Credentials) -> _Client:
        where = self.where
        progress = [errors.CONNECT]
        client: _Client | None = None
        try:
            if where.implicit_tls:
                client = _SslClient(where.host, where.port, context=self._tls(),
                                    timeout=self._timeout, progress=progress,
                                    connect=self._socket)
            else:
                client = _Client(where.host, where.port, timeout=self._timeout,
                                 progress=progress, connect=self._socket)
            if where.starttls:
                progress[0] = errors.TLS
                if "STLS" not in _capabilities(client):
                    raise errors.described(where, "no-starttls", command="STLS")
                client.stls(self._tls())
            progress[0] = errors.LOGIN
            self._login(client, credentials)
            return client
        except Exception as exc:
            if client is not None:
                close_now(client)
            raise self._classify(exc, progress[0]) from None

    def _classify(self, exc: BaseException, doing: str) -> FetchError:
        """POP3's classifier: poplib reports a dropped connection as an EOF error_proto."""
        return errors.classify(exc, self.where, doing, self.redactor, session_ended=isinstance(
            exc, poplib.error_proto) and "EOF" in str(exc))

    def _login(self, client: poplib.POP3, credentials: Credentials) -> None:
        auth = self.server.spec.auth
        where = self.where
        if isinstance(auth, NoAuth):
            raise errors.config_error(
                where, "auth is none, but POP3 servers need a login",
                "Configure auth basic (username and password) or oauth2.", step=Step.AUTH)
        try:
            if isinstance(auth, BasicAuth):
                assert credentials.password is not None
                client.user(credentials.username)
                client.pass_(credentials.password)
                return
            assert credentials.token is not None
            sasl = _capabilities(client).get("SASL", [])
            if "XOAUTH2" not in [m.upper() for m in sasl]:
                raise errors.described(where, "mechanism", wanted="XOAUTH2",
                                       offered=", ".join(sasl) or "none")
            initial = base64.b64encode(xoauth2(credentials.username, credentials.token))
            client._putcmd("AUTH XOAUTH2 " + initial.decode())  # type: ignore[attr-defined]
            reply, _ = client._getline()  # type: ignore[attr-defined]
            if reply.startswith(b"+ ") or reply == b"+":
                # the error challenge (base64 JSON); an empty answer ends the exchange
                client._putline(b"")  # type: ignore[attr-defined]
                reply, _ = client._getline()  # type: ignore[attr-defined]
            if not reply.startswith(b"+OK"):
                raise poplib.error_proto(reply.decode(errors="replace"))
        except poplib.error_proto as exc:
            raise errors.auth_refused(where, credentials.username,
                               self.redactor(_reply_text(exc))) from None

    async def fetch(self, already_done: AlreadyDone,
                    limit: int = 100) -> AsyncIterator[FetchedMail]:
        listing = await self._call("listing mail (UIDL)", self._uidl)
        self._numbers = dict(listing)
        async for mail in self._stream(listing, already_done, limit, self._download):
            yield mail

    def _uidl(self) -> list[tuple[str, int]]:
        _, lines, _ = self._session().uidl()
        listing = []
        for line in lines:
            number, uidl = line.decode("ascii", "replace").split(None, 1)
            listing.append((f"pop3:{uidl.strip()}", int(number)))
        return listing

    def _download(self, number: int, marker: str) -> FetchedMail:
        _, lines, _ = self._session().retr(number)
        raw = b"\r\n".join(lines) + b"\r\n"
        return FetchedMail(marker=marker, raw=raw, size=len(raw), folder="INBOX", uid=number)

    async def mark_done(self, mail: FetchedMail) -> None:
        if not self.delete_after_fetch:
            return  # the marker is the record; the mail stays on the server
        number = self._numbers.get(mail.marker)
        if number is None or self._client is None:
            return  # another session: numbers are per session, and the marker holds anyway
        await self._call("deleting a handled mail", self._dele, number)

    def _dele(self, number: int) -> None:
        self._session().dele(number)

    async def wait_for_new(self, timeout: float) -> bool:
        # ending the session commits DELE and lets the next login see new mail
        await self.aclose()
        await asyncio.sleep(timeout)
        return False


def _capabilities(client: poplib.POP3) -> dict[str, list[str]]:
    try:
        return client.capa()
    except poplib.error_proto:
        return {}  # CAPA is optional (RFC 2449): no extensions then


def _reply_text(exc: poplib.error_proto) -> str:
    text = exc.args[0] if exc.args else ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return str(text).removeprefix("-ERR").strip() or "no reason given"
