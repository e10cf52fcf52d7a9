"""Feeds N messages into an SMTP server over K sessions and times each acceptance.

Like ``smtp-source -s K -m N``, but every message carries its benchmark id
(``X-Bench-Id`` and Subject) and the moment its 250 after DATA arrived is
recorded, which is when the relay has the message durably queued: the
enqueue point that delivery latency is measured from. MAIL, RCPT and DATA are
pipelined (the relay offers PIPELINING), so the feeder costs little CPU next
to the relay it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SENDER = "from@bench.example"
RECIPIENT = "to@bench.example"
IO_TIMEOUT_S = 60.0


def message_4k(bid: str, size: int = 4096) -> bytes:
    """An RFC 5322 message of ``size`` bytes (CRLF, 7-bit, lines under 80)."""
    head = (f"From: Bench <{SENDER}>\r\nTo: <{RECIPIENT}>\r\n"
            f"Subject: bench message {bid}\r\nMessage-ID: <{bid}@bench.example>\r\n"
            f"X-Bench-Id: {bid}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, benchmark filler text 0123.\r\n"
    body = bytearray()
    while len(head) + len(body) + len(line) <= size:
        body += line
    body += b"x" * max(0, size - len(head) - len(body) - 2) + b"\r\n"
    return head + bytes(body)


@dataclass
class FeedResult:
    accepted: dict[str, float] = field(default_factory=dict)  # id -> time of the 250
    started: dict[str, float] = field(default_factory=dict)  # id -> time MAIL was sent
    errors: list[str] = field(default_factory=list)


class SmtpError(Exception):
    pass


async def _reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    lines: list[str] = []
    while True:
        raw = await asyncio.wait_for(reader.readline(), IO_TIMEOUT_S)
        if not raw:
            raise SmtpError("connection closed by the server")
        text = raw.decode(errors="replace").rstrip("\r\n")
        lines.append(text)
        if len(text) < 4 or text[3] != "-":
            return int(text[:3]), " | ".join(lines)


async def _expect(reader: asyncio.StreamReader, ok: int, what: str) -> None:
    code, text = await _reply(reader)
    if code // 100 != ok // 100:
        raise SmtpError(f"{what}: {text}")


async def _session(host: str, port: int, ids: list[str], result: FeedResult,
                   make: Callable[[str], bytes]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await _expect(reader, 220, "greeting")
        writer.write(b"EHLO feeder.bench.example\r\n")
        await _expect(reader, 250, "EHLO")
        for bid in ids:
            body = make(bid)
            result.started[bid] = time.monotonic()
            writer.write(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n".encode())
            await _expect(reader, 250, "MAIL")
            await _expect(reader, 250, "RCPT")
            await _expect(reader, 354, "DATA")
            writer.write(body + b".\r\n")
            try:
                await _expect(reader, 250, "end of DATA")
            except SmtpError as exc:
                result.errors.append(f"{bid}: {exc}")
                continue
            result.accepted[bid] = time.monotonic()
        writer.write(b"QUIT\r\n")
        await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 5)


async def feed(host: str, port: int, ids: list[str], concurrency: int,
               make: Callable[[str], bytes] = message_4k) -> FeedResult:
    """Send every id once over ``concurrency`` sessions (ids dealt round-robin)."""
    result = FeedResult()
    lanes = [ids[k::concurrency] for k in range(concurrency)]
    outcomes = await asyncio.gather(*(_session(host, port, lane, result, make)
                                      for lane in lanes if lane), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            result.errors.append(f"session failed: {outcome!r}")
    return result
