"""The floor for bench/graph_surge.py: a bare client against the same local Graph.

``--slots`` raw TLS keep-alive connections (asyncio streams, the daemon's event loop
kind), each writing the next prebuilt sendMail request as soon as it has read an answer:
no daemon, no HTTP library, no work between an answer and the next request but a write.
What is left over the minimum N x S / slots is the peer's own time and the machine's
(a process wake-up per hop on shared cores), which no client removes, so the daemon's
ratio is read against this one of the same run.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.mail.envelope import Envelope
from reconciler.mail.graph.message import graph_message


def sendmail_request(server: OutgoingServer, envelope: Envelope, token: str) -> bytes:
    """One HTTP/1.1 request with the JSON sendMail the daemon's client sends for it."""
    parts = urlsplit(str(server.spec.graph_endpoint))
    body = orjson.dumps(graph_message(envelope).send_mail_body(server.spec.save_to_sent_items))
    head = (f"POST /v1.0/users/{server.spec.mailbox}/sendMail HTTP/1.1\r\n"
            f"Host: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def bare_surge(server: OutgoingServer, envelopes: Sequence[Envelope], token: str,
                     ca_file: Path) -> tuple[float, float]:
    """Seconds from the first request written to the last answer read, and the client's
    CPU seconds per request. Every answer must be 202 (the default mode: no 429s)."""
    requests = [sendmail_request(server, e, token) for e in envelopes]  # before the clock
    slots = server.spec.max_concurrency or 4
    parts = urlsplit(str(server.spec.graph_endpoint))
    tls = ssl.create_default_context(cafile=str(ca_file))
    pending = list(reversed(requests))
    connections = [await asyncio.open_connection(parts.hostname, parts.port, ssl=tls)
                   for _ in range(slots)]
    last = 0.0

    async def slot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal last
        while pending:
            writer.write(pending.pop())
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            if b" 202 " not in lines[0] + b" ":
                raise RuntimeError(f"the peer answered {lines[0]!r}")
            length = next((int(line.split(b":")[1]) for line in lines
                           if line.lower().startswith(b"content-length:")), 0)
            if length:
                await reader.readexactly(length)
            last = time.monotonic()
        writer.close()

    cpu, start = time.process_time(), time.monotonic()
    await asyncio.gather(*(slot(r, w) for r, w in connections))
    return last - start, (time.process_time() - cpu) / len(requests)
