"""Posts N notifications to the daemon's intake API with K concurrent clients.

Each client is a task taking the next id from a shared queue and posting it
over its own keep-alive connection, so at most K requests are in flight, like
K desk application threads. The time from sending a request to its 2xx answer
is the intake latency; the answer comes after the outbox commit, so its
arrival is the acceptance time that delivery latency is measured from.

Two clients:

- ``raw`` (default): HTTP/1.1 written and parsed by hand on asyncio streams,
  bodies serialised before the clock starts. It costs ~0.2 ms of CPU per
  request, so on a two-core machine the load generator does not take the
  CPU the daemon needs (the SMTP feeder of the Postfix run is just as light).
- ``httpx``: ``httpx.AsyncClient``, what a Python desk application would use;
  it costs several times more CPU per request, which on two cores comes out
  of the daemon's share. The run prints the generator's CPU time either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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


class HttpError(Exception):
    pass


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise HttpError(f"bad status line {lines[0]!r}")
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
        return int(parts[1]), bytes(body)
    return int(parts[1]), await reader.readexactly(length) if length else b""


async def post_all_raw(base_url: str, token: str, ids: list[str], concurrency: int,
                       path: str = "/v1/notifications") -> FeedResult:
    result = FeedResult()
    host, _, port = base_url.removeprefix("http://").partition(":")
    prefix = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
              f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
              "Accept: application/json\r\n")
    requests = {}
    for bid in ids:
        body = json.dumps(notification_4k(bid)).encode()
        requests[bid] = (prefix + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    queue = list(reversed(ids))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while queue:
                bid = queue.pop()
                started = time.monotonic()
                try:
                    writer.write(requests[bid])
                    status, answer = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, TimeoutError, HttpError) as exc:
                    result.errors.append(f"{bid}: {type(exc).__name__}: {exc}")
                    return  # the connection is in an unknown state
                done = time.monotonic()
                if status in (200, 202):
                    result.started[bid] = started
                    result.accepted[bid] = done
                else:
                    result.errors.append(f"{bid}: HTTP {status} {answer[:200]!r}")
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 5)

    outcomes = await asyncio.gather(*(worker() for _ in range(concurrency)),
                                    return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            result.errors.append(f"client failed: {outcome!r}")
    return result
