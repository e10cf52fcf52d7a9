"""A recording SMTP sink for the dispatch benchmark.

Both systems under test deliver to the same kind of sink, which stamps each
message with its arrival time (``time.monotonic()``, a system-wide clock on
Linux, so the benchmark process can compare it with its own acknowledgement
times) under the benchmark id found in the message's headers.

It runs in a process of its own: Postfix's ``smtp-sink`` would be cheaper but
records no arrival time per message, and a sink sharing the benchmark's event
loop would be slowed down by the load generator and blur the latencies. The
protocol is hand-written on ``asyncio.Protocol`` (not aiosmtpd) because this
process competes for the same two cores as the systems being measured; it
speaks just enough ESMTP (PIPELINING included) for Postfix's smtp client and
aiosmtplib, and discards the mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import re
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event

START_WAIT_S = 10.0
MAX_LINE = 4096

# A benchmark id is RUN-SEQUENCE (see ``bench_id``); it may sit in X-Bench-Id or
# in the Subject, so the sink looks for the pattern anywhere in the headers.
ID_RE = re.compile(rb"\bbid-[0-9a-z]+-[0-9]+\b")


def bench_id(run: str, seq: int) -> str:
    return f"bid-{run}-{seq:07d}"


@dataclass
class Arrivals:
    """What the sink saw: first arrival per id, repeats, and mail without an id."""

    first: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0
    unmatched: int = 0


class _Session(asyncio.Protocol):
    __slots__ = ("arrivals", "buf", "counter", "in_data", "scan_from", "transport")

    def __init__(self, arrivals: Arrivals, counter: Synchronized[int]) -> None:
        self.arrivals = arrivals
        self.counter = counter
        self.buf = b""
        self.in_data = False
        self.scan_from = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 sink.bench.example ESMTP bench sink\r\n")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        # Replies to pipelined commands go out in one write, as a real server's would.
        out: list[bytes] = []
        while True:
            if self.in_data:
                if not self._take_message(out):
                    break
                continue
            end = self.buf.find(b"\r\n")
            if end < 0:
                if len(self.buf) > MAX_LINE:
                    out.append(b"500 line too long\r\n")
                    self.buf = b""
                break
            line, self.buf = self.buf[:end], self.buf[end + 2:]
            if not self._command(line, out):
                self.transport.write(b"".join(out))
                self.transport.close()
                return
        if out:
            self.transport.write(b"".join(out))

    def _take_message(self, out: list[bytes]) -> bool:
        # The buffer starts right after the DATA reply, i.e. with CRLF-less content.
        if self.buf.startswith(b".\r\n"):
            end, body_end = 0, 3
        else:
            found = self.buf.find(b"\r\n.\r\n", self.scan_from)
            if found < 0:
                self.scan_from = max(0, len(self.buf) - 4)
                return False
            end, body_end = found, found + 5
        message, self.buf = self.buf[:end], self.buf[body_end:]
        self.in_data = False
        self.scan_from = 0
        now = time.monotonic()
        head_end = message.find(b"\r\n\r\n")
        match = ID_RE.search(message if head_end < 0 else message[:head_end])
        if match is None:
            self.arrivals.unmatched += 1
        else:
            key = match.group().decode()
            if key in self.arrivals.first:
                self.arrivals.duplicates += 1
            else:
                self.arrivals.first[key] = now
        with self.counter.get_lock():
            self.counter.value += 1
        out.append(b"250 2.0.0 Ok: queued\r\n")
        return True

    def _command(self, line: bytes, out: list[bytes]) -> bool:
        verb = line[:4].upper()
        if verb == b"EHLO":
            out.append(b"250-sink.bench.example\r\n250-PIPELINING\r\n250-SIZE 104857600\r\n"
                       b"250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n")
        elif verb == b"HELO":
            out.append(b"250 sink.bench.example\r\n")
        elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
            out.append(b"250 2.0.0 Ok\r\n")
        elif verb == b"DATA":
            out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            self.in_data = True
        elif verb == b"QUIT":
            out.append(b"221 2.0.0 Bye\r\n")
            return False
        else:
            out.append(b"502 5.5.2 Error: command not recognized\r\n")
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _serve(port: int, counter: Synchronized[int], ready: Event, stop: Event,
           results: Connection) -> None:
    # Ctrl-C goes to the whole process group: the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    arrivals = Arrivals()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Session(arrivals, counter),
                                          "127.0.0.1", port, backlog=1024, reuse_address=True)
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        server.close()

    asyncio.run(main())
    results.send((arrivals.first, arrivals.duplicates, arrivals.unmatched))
    results.close()


class Sink:
    """The sink process; ``delivered`` is its live message count."""

    def __init__(self, port: int) -> None:
        self.port = port
        ctx = mp.get_context("spawn")
        self._counter: Synchronized[int] = ctx.Value("q", 0)
        self._ready = ctx.Event()
        self._stop = ctx.Event()
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_serve, name=f"bench-sink-{port}", daemon=True,
                                 args=(port, self._counter, self._ready, self._stop, send))
        self._result: Arrivals | None = None

    def start(self) -> Sink:
        self._proc.start()
        if not self._ready.wait(START_WAIT_S):
            self.stop()
            raise RuntimeError(f"the bench sink did not listen on 127.0.0.1:{self.port}")
        return self

    @property
    def delivered(self) -> int:
        return int(self._counter.value)

    def stop(self) -> Arrivals:
        if self._result is not None:
            return self._result
        self._stop.set()
        arrivals = Arrivals()
        if self._proc.is_alive() and self._recv.poll(START_WAIT_S):
            first, duplicates, unmatched = self._recv.recv()
            arrivals = Arrivals(first, duplicates, unmatched)
        self._proc.join(START_WAIT_S)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._result = arrivals
        return arrivals

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
