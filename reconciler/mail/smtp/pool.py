"""A small pool of SMTP sessions: bounded, checks liveness before reuse, retires old ones.

The transport supplies how to open a session; testing and closing one is
:mod:`~reconciler.mail.smtp.session`'s. A caller first takes a slot (at most
``max_size`` connections are in use at once, which is the server's
``maxConcurrency``), then a connection.

Reuse is LIFO: the most recently used connection is the most likely to still
be open, and the ones at the bottom age out instead of being kept warm.

A connection given back less than ``fresh_seconds`` ago skips the liveness
check when it is still open (has the peer closed it? a local check): under
load a check per reuse is a round trip per message (an SMTP NOOP
cost ~6% of the daemon's CPU in ``bench/dispatch.py``), and a connection that
just completed a transaction is as good as checked. Connection pools of
databases do the same (a bypass window of about a second).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiosmtplib

from reconciler.mail.smtp.session import alive, close, is_open, retire


@dataclass(slots=True)
class Pooled:
    conn: aiosmtplib.SMTP
    created: float
    uses: int = 0
    released: float = float("-inf")  # when it was last given back


@dataclass(slots=True)
class PoolStats:
    opened: int = 0
    reused: int = 0
    discarded: int = 0  # failed the liveness check or were too old
    idle: int = 0


@dataclass
class ConnectionPool:
    max_size: int
    max_age_seconds: float
    liveness_timeout: float  # for the NOOP that checks an idle connection
    fresh_seconds: float = 1.0
    clock: Callable[[], float] = time.monotonic
    stats: PoolStats = field(default_factory=PoolStats)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.max_size)
        self._idle: list[Pooled] = []

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._slots:
            yield

    async def acquire(self, open_new: Callable[[], Awaitable[aiosmtplib.SMTP]], *,
                      reuse: bool = True) -> Pooled:
        """A live connection: a pooled one that passes the check, or a new one
        (always a new one when not ``reuse``).

        Call while holding :meth:`slot`.
        """
        while reuse and self._idle:
            item = self._idle.pop()
            self.stats.idle = len(self._idle)
            now = self.clock()
            if now - item.created > self.max_age_seconds:
                self.stats.discarded += 1
                await self._retire(item.conn)
                continue
            if self._fresh(item, now) or await alive(item.conn, self.liveness_timeout):
                item.uses += 1
                self.stats.reused += 1
                return item
            self.stats.discarded += 1
            close(item.conn)
        conn = await open_new()
        self.stats.opened += 1
        return Pooled(conn, self.clock(), uses=1)

    def _fresh(self, item: Pooled, now: float) -> bool:
        return now - item.released < self.fresh_seconds and is_open(item.conn)

    def release(self, item: Pooled, *, reusable: bool) -> None:
        """Give a connection back; synchronous so it is safe in ``finally`` during cancellation."""
        if reusable and len(self._idle) < self.max_size:
            item.released = self.clock()
            self._idle.append(item)
        else:
            close(item.conn)
        self.stats.idle = len(self._idle)

    def discard(self, item: Pooled) -> None:
        """Close a connection found dead in use (it had skipped the liveness check)."""
        self.stats.discarded += 1
        close(item.conn)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for item in idle:
            await self._retire(item.conn)
        self.stats.idle = 0

    async def _retire(self, conn: aiosmtplib.SMTP) -> None:
        try:
            await retire(conn)  # a polite goodbye for a connection that is still fine
        finally:
            close(conn)
