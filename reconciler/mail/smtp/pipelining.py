"""One mail transaction with ESMTP PIPELINING (RFC 2920) on an aiosmtplib connection.

MAIL FROM, every RCPT TO and DATA go out in one write and their replies are
read in order; on 354 the message (already in DATA form, see
:func:`~reconciler.mail.envelope.smtp_data`) goes out in a second write.
That is two round trips per message instead of three plus one per recipient.

:class:`PipelinedTransaction` has the calls of aiosmtplib's ``mail()``,
``rcpt()`` and ``data()`` and raises the same errors at the same points
(including closing the connection after a 421, a disconnect or a timeout, and
"Server not connected" / "Connection lost" for calls after that), so the SMTP
transport classifies both ways of sending with one piece of code.

Why not aiosmtplib's own protocol: its ``read_response`` parses one reply per
arrival of data and drops what arrives while no command waits, so the second
of several replies that arrive together is never delivered. While a pipelined
group is in flight, :class:`_ReplyReader` takes the connection's incoming
bytes instead (asyncio's public ``transport.set_protocol``), handing
connection loss and flow control on to aiosmtplib's protocol, which gets the
connection back as soon as the last reply is read. This depends on aiosmtplib
keeping its connection on ``SMTP.transport`` with an ``asyncio.Protocol``;
pyproject.toml pins the major version it was written against.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from functools import lru_cache
from typing import cast

import aiosmtplib
from aiosmtplib import (
    SMTPDataError,
    SMTPException,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from aiosmtplib.email import quote_address

from reconciler.mail.envelope import smtp_data

# aiosmtplib's limits for one reply line and one whole reply.
MAX_LINE_LENGTH = 8192
MAX_RESPONSE_LENGTH = MAX_LINE_LENGTH * 4
START_INPUT = 354
CLOSING = 421  # the server is about to close the connection


class _ReplyReader(asyncio.Protocol):
    """The connection's protocol while a pipelined group's replies arrive: parses every
    complete reply in what arrives, in order, and keeps aiosmtplib's protocol told about
    connection loss and flow control."""

    def __init__(self, inner: asyncio.BaseProtocol, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self._loop = loop
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._error: SMTPException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        buffer = self._buffer
        buffer += data
        start = pos = 0
        parts: list[bytes] = []
        while (end := buffer.find(b"\n", pos)) >= 0:
            line = bytes(buffer[pos:end + 1])
            pos = end + 1
            if len(line) > MAX_LINE_LENGTH:
                self._fail(SMTPResponseException(-1, "Response too long"))
                return
            try:
                code = int(line[:3])
            except ValueError:
                text = line.decode("utf-8", errors="ignore")
                self._fail(SMTPResponseException(-1, f"Malformed SMTP response line: {text}"))
                return
            parts.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] != b"-":  # the last line of this reply
                message = b"\n".join(parts).decode("utf-8", "surrogateescape")
                self._replies.append(SMTPResponse(code, message))
                parts = []
                start = pos
        del buffer[:start]
        if len(buffer) > MAX_RESPONSE_LENGTH:
            self._fail(SMTPResponseException(-1, "Response too long"))
        elif self._replies:
            self._wake()

    def eof_received(self) -> bool:
        self._fail(SMTPServerDisconnected("Unexpected EOF received"))
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        error = SMTPServerDisconnected("Connection lost")
        error.__cause__ = exc
        self._fail(error)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- for PipelinedTransaction --------------------------------------------

    async def next_reply(self, timeout: float | None) -> SMTPResponse:
        """The next reply; replies that arrived before a failure are still delivered."""
        if not self._replies and self._error is None:
            waiter = self._waiter = self._loop.create_future()
            timer = (self._loop.call_later(timeout, self._time_out, waiter)
                     if timeout is not None else None)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        if self._replies:
            return self._replies.popleft()
        assert self._error is not None
        raise self._error

    def _time_out(self, waiter: asyncio.Future[None]) -> None:
        if waiter is self._waiter and not self._replies:
            self._fail(SMTPReadTimeoutError("Timed out waiting for server response"))

    def _fail(self, error: SMTPException) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class PipelinedTransaction:
    """MAIL, RCPT per recipient and DATA as one pipelined group on ``smtp``.

    Call :meth:`mail`, :meth:`rcpt` once per recipient in order, then
    :meth:`data` (or :meth:`drain` to give up on the message), and
    :meth:`finish` in any case. The server must have announced PIPELINING.
    The three calls are aiosmtplib ``SMTP``'s, so a caller uses either alike.
    """

    def __init__(self, smtp: aiosmtplib.SMTP, recipients: Sequence[str]) -> None:
        self._smtp = smtp
        self._recipients = recipients
        self._owed = 0  # replies the server still owes us
        self._reader: _ReplyReader | None = None
        self._transport: asyncio.Transport | None = None

    async def mail(self, sender: str, *, options: Sequence[str] = ()) -> SMTPResponse:
        """Send the whole group; the reply to MAIL FROM (SMTPSenderRefused unless 250)."""
        group = b"".join((_command(b"MAIL FROM:", sender, options),
                          *[_command(b"RCPT TO:", r) for r in self._recipients], b"DATA\r\n"))
        transport = cast(asyncio.Transport | None, self._smtp.transport)
        if transport is None or not self._smtp.is_connected:
            raise SMTPServerDisconnected("Server not connected")
        reader = _ReplyReader(transport.get_protocol(), asyncio.get_running_loop())
        # Taken over before writing, so no reply can reach aiosmtplib's protocol.
        transport.set_protocol(reader)
        self._reader, self._transport = reader, transport
        self._owed = len(self._recipients) + 2
        transport.write(group)
        reply = await self._next()
        if reply.code != 250:
            raise SMTPSenderRefused(reply.code, reply.message, sender)
        return reply

    async def rcpt(self, recipient: str) -> SMTPResponse:
        """The reply to the next RCPT TO (SMTPRecipientRefused unless 250 or 251)."""
        if not self._smtp.is_connected:  # as aiosmtplib says after a 421 closed it
            raise SMTPServerDisconnected("Server not connected")
        reply = await self._next()
        if reply.code not in (250, 251):
            raise SMTPRecipientRefused(reply.code, reply.message, recipient)
        return reply

    async def data(self, message: bytes) -> SMTPResponse:
        """The reply to DATA; on 354 the message goes out and its reply is returned
        (SMTPDataError for any other code at either step)."""
        if not self._smtp.is_connected:
            raise SMTPServerDisconnected("Connection lost")
        start = await self._next()
        if start.code != START_INPUT:
            raise SMTPDataError(start.code, start.message)
        self._write(smtp_data(message))
        self._owed += 1
        reply = await self._next()
        if reply.code != 250:
            raise SMTPDataError(reply.code, reply.message)
        self.finish()
        return reply

    async def drain(self) -> None:
        """Read the replies still owed after the message was given up (MAIL refused, every
        recipient refused), so the session can go on with RSET. A server that answers
        DATA with 354 all the same, or that stops answering, loses the connection."""
        try:
            while self._owed and self._smtp.is_connected:
                reply = await self._next()
                if not self._owed and reply.code == START_INPUT:
                    self._abort()
        except SMTPException:
            pass  # _next has closed the connection
        self.finish()

    def finish(self) -> None:
        """Hand the connection back to aiosmtplib; one left out of step is closed first."""
        reader, self._reader = self._reader, None
        transport = self._transport
        if reader is None or transport is None:
            return
        if self._owed and not transport.is_closing():
            self._abort()
        if transport.get_protocol() is reader:
            transport.set_protocol(reader.inner)

    # -- internals -----------------------------------------------------------

    async def _next(self) -> SMTPResponse:
        assert self._reader is not None
        try:
            reply = await self._reader.next_reply(self._smtp.timeout)
        except SMTPException:
            self._abort()  # as aiosmtplib closes after a disconnect or a timeout
            raise
        self._owed -= 1
        if reply.code == CLOSING:
            self._abort()  # as aiosmtplib closes after a 421
        return reply

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise SMTPServerDisconnected("Connection lost")
        transport.write(data)

    def _abort(self) -> None:
        # No graceful (TLS) close: it needs round trips that may never come.
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.abort()
        self._smtp.close()


def _command(verb: bytes, address: str, options: Sequence[str] = ()) -> bytes:
    """The command line aiosmtplib's mail()/rcpt() would write, after the same checks."""
    line = verb + _quoted(address)
    for option in options:
        arg = option.encode("ascii")
        if _has_control(arg):
            raise ValueError("Command arg contains a prohibited control character")
        line += b" " + arg
    return line + b"\r\n"


@lru_cache(maxsize=65536)  # the same senders and recipients recur from message to message
def _quoted(address: str) -> bytes:
    quoted = quote_address(address).encode("ascii")
    if _has_control(quoted):
        raise ValueError("Command arg contains a prohibited control character")
    return quoted


def _has_control(arg: bytes) -> bool:
    return any(byte < 0x20 or byte == 0x7F for byte in arg)
