"""Per-server send lanes (DESIGN "Daemon concurrency").

A daemon holds many claimed messages at once, but each outgoing server takes
only so many sends in flight: ``maxConcurrency`` (the SMTP pool size, Graph's
4 per mailbox). A lane is one semaphore per server; a message waits for a
slot in its server's lane, so a slow or throttled server never holds up mail
for the others.

The lane is keyed by the server's identity *and* its size: after a hot reload
that changes ``maxConcurrency`` new sends queue on a lane of the new size
while sends already in flight finish in the old one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass

DEFAULT_LANE_SIZE = 4  # transports.smtp.DEFAULT_POOL_SIZE and Graph's per-mailbox limit


@dataclass(frozen=True, slots=True)
class LaneStats:
    size: int
    busy: int
    waiting: int


class Lanes:
    def __init__(self, default_size: int = DEFAULT_LANE_SIZE) -> None:
        if default_size < 1:
            raise ValueError("a lane needs at least one slot")
        self._default = default_size
        self._lanes: dict[tuple[Hashable, int], asyncio.Semaphore] = {}
        self._busy: dict[tuple[Hashable, int], int] = {}
        self._waiting: dict[tuple[Hashable, int], int] = {}

    @asynccontextmanager
    async def slot(self, key: Hashable, size: int | None = None) -> AsyncIterator[None]:
        lane = (key, size or self._default)
        semaphore = self._lanes.get(lane)
        if semaphore is None:
            semaphore = self._lanes[lane] = asyncio.Semaphore(lane[1])
        self._waiting[lane] = self._waiting.get(lane, 0) + 1
        try:
            await semaphore.acquire()
        finally:
            self._waiting[lane] -= 1
        self._busy[lane] = self._busy.get(lane, 0) + 1
        try:
            yield
        finally:
            self._busy[lane] -= 1
            semaphore.release()

    def stats(self) -> dict[tuple[Hashable, int], LaneStats]:
        return {lane: LaneStats(lane[1], self._busy.get(lane, 0), self._waiting.get(lane, 0))
                for lane in self._lanes}
