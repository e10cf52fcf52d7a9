"""A request body size limit for the API, as plain ASGI middleware.

Without it a client could stream gigabytes into one request and the daemon
would buffer them all before validation ever looked at them. A declared
``Content-Length`` over the limit is refused before a byte of the body is
read; a chunked body is counted while it arrives and refused as soon as it
passes the limit.

The intake route's own ASGI handler (:mod:`reconciler.daemon.api.intake_route`)
does the same checks with the helpers here, so both give the same 413.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY_BYTES = 50 * 1024 * 1024


class BodyTooLarge(Exception):
    """The body passed the limit while it was being read."""


def too_large(max_bytes: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The 413 answer's headers and body."""
    body = json.dumps({
        "detail": f"request body is larger than the limit of {max_bytes} bytes",
    }).encode()
    # Closing: the rest of the body is not read, so the connection cannot
    # carry another request.
    return [(b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")], body


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        headers, body = too_large(self.max_bytes)
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def content_length(scope: Scope) -> int | None:
    """The declared Content-Length (the first one), None when absent or malformed."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return parse_length(value)
    return None


def parse_length(value: bytes) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None  # the server rejects a malformed length itself
