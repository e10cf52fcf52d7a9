"""Per-server send lanes (DESIGN "Daemon concurrency").

Each outgoing server takes only so many sends in flight: ``maxConcurrency``
(the SMTP pool size, Graph's 4 per mailbox). A lane is one semaphore per
server, so a slow or throttled server never holds up mail for the others. It
is keyed by the server *and* its size: after a reload that changes
``maxConcurrency``, new sends queue on a lane of the new size while sends in
flight finish in the old one.

A :class:`SelfLimiting` transport (Graph,
which counts requests per mailbox and gives its slot up while it waits out a
``Retry-After``) says how wide the lane should be instead. A lane as narrow as
the limit would idle one of the server's slots for every send waiting out
throttling, and leave a slot empty while the next message is composed; a wider
lane keeps the next sends ready at the transport's door.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, cast

from reconciler.config.models.outgoing_server import OutgoingServer

DEFAULT_LANE_SIZE = 4  # transports.smtp.DEFAULT_POOL_SIZE and Graph's per-mailbox limit


class SelfLimiting(Protocol):
    """A transport that enforces the server's concurrency limit on its own."""

    def lane_width(self, server: OutgoingServer) -> int:
        """How many sends to ``server`` the worker may hand over at once."""
        ...


def lane_width(transport: object, server: OutgoingServer) -> int | None:
    """The lane size for sends to ``server`` through ``transport``: the transport's own
    choice if it limits itself, else the server's ``maxConcurrency`` (None: default)."""
    if hasattr(transport, "lane_width"):  # not isinstance: slow for a Protocol, and per send
        return max(1, cast(SelfLimiting, transport).lane_width(server))
    return server.spec.max_concurrency


@dataclass(slots=True)
class LaneStats:
    size: int
    busy: int = 0
    waiting: int = 0


class Lanes:
    def __init__(self) -> None:
        self._lanes: dict[tuple[Hashable, int], tuple[asyncio.Semaphore, LaneStats]] = {}

    @asynccontextmanager
    async def slot(self, key: Hashable, size: int | None = None) -> AsyncIterator[None]:
        lane = (key, size or DEFAULT_LANE_SIZE)
        found = self._lanes.get(lane)
        if found is None:
            found = self._lanes[lane] = (asyncio.Semaphore(lane[1]), LaneStats(lane[1]))
        semaphore, stats = found
        stats.waiting += 1
        try:
            await semaphore.acquire()
        finally:
            stats.waiting -= 1
        stats.busy += 1
        try:
            yield
        finally:
            stats.busy -= 1
            semaphore.release()

    def stats(self) -> dict[tuple[Hashable, int], LaneStats]:
        return {lane: LaneStats(s.size, s.busy, s.waiting) for lane, (_, s) in self._lanes.items()}
