"""Posts N notifications to the daemon's intake API with K concurrent clients.

Each client is a task taking the next id from a shared queue and posting it
over one ``httpx.AsyncClient`` (keep-alive, up to K connections), so at most K
requests are in flight, like K desk application threads. The time from
sending a request to its 2xx answer is the intake latency; the answer comes
after the outbox commit, so its arrival is the acceptance time that delivery
latency is measured from.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from _smtpfeed import RECIPIENT, FeedResult

REQUEST_TIMEOUT_S = 30.0
NAMESPACE = "bench"
MODULE = "requests"


def notification_4k(bid: str, size: int = 4096) -> dict[str, Any]:
    """A notification whose text body makes the composed message about ``size`` bytes."""
    line = "The quick brown fox jumps over the lazy dog, benchmark filler text 0123.\n"
    # Headers the composer adds (From, To, Date, Message-ID, MIME) take ~600 bytes.
    body = (line * (size // len(line)))[: max(0, size - 600)]
    return {
        "module": MODULE,
        "namespace": NAMESPACE,
        "context": {"department": "IT", "site": "Bench"},
        "to": [{"email": RECIPIENT, "name": "Bench Requester"}],
        "subject": f"bench message {bid}",
        "textBody": body,
        "headers": {"X-Bench-Id": bid},
        "idempotencyKey": bid,
    }


async def post_all(base_url: str, token: str, ids: list[str], concurrency: int,
                   path: str = "/v1/notifications") -> FeedResult:
    result = FeedResult()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for bid in ids:
        queue.put_nowait(bid)
    bodies = {bid: notification_4k(bid) for bid in ids}  # built before the clock starts
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits,
                                 timeout=REQUEST_TIMEOUT_S,
                                 headers={"Authorization": f"Bearer {token}"}) as client:

        async def worker() -> None:
            while True:
                try:
                    bid = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.monotonic()
                try:
                    response = await client.post(path, json=bodies[bid])
                except httpx.HTTPError as exc:
                    result.errors.append(f"{bid}: {type(exc).__name__}: {exc}")
                    continue
                done = time.monotonic()
                if response.status_code in (200, 202):
                    result.started[bid] = started
                    result.accepted[bid] = done
                else:
                    result.errors.append(f"{bid}: HTTP {response.status_code} "
                                         f"{response.text[:200]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result
