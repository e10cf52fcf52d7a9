"""One log line per refused API request (401, 403, 413, 422, 429).

uvicorn's access log is off (it cost ~5% of the CPU per message), so without
this a client that keeps getting 422s or a scanner guessing tokens would
leave no trace. :class:`RefusalLog` is the outermost ASGI middleware: it sees
the status of every answer, including the 413s the body limit gives before
the application runs, and logs the refused ones as one JSON line with
method, path, client address, status and a short reason.

The reason is set by whoever refuses (``refuse(scope, reason)``), e.g.
"wrong token" or "invalid fields: to[0], subject"; it names fields,
never their values. Neither the token nor the body nor the query string is
ever logged.

The intake route answers outside the middleware stack
(:mod:`reconciler.daemon.api.intake_route`) and calls :func:`log_refusal` itself,
at the same moment: before its answer leaves.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("reconciler.daemon.api")

REFUSED = frozenset({401, 403, 413, 422, 429})
_KEY = "reconcile.refusal"  # the scope entry a refusing handler leaves its reason in
_DEFAULT_REASONS = {
    401: "not authorized",
    403: "forbidden",
    413: "request body over the size limit",
    422: "invalid request",
    429: "too many requests",
}
MAX_FIELDS = 5


def refuse(scope: MutableMapping[str, Any], reason: str) -> None:
    """Leave the reason for the refusal log line (no secrets, no submitted values)."""
    scope[_KEY] = reason


def invalid_fields_reason(problems: list[dict[str, Any]]) -> str:
    """'invalid fields: to[0], subject' from our 422 problem entries (field paths only)."""
    fields = list(dict.fromkeys(str(p.get("field") or "?") for p in problems))
    shown = ", ".join(fields[:MAX_FIELDS])
    if len(fields) > MAX_FIELDS:
        shown += f" and {len(fields) - MAX_FIELDS} more"
    return f"invalid field{'s' if len(fields) != 1 else ''}: {shown}"


class RefusalLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def watching_send(message: Message) -> None:
            # Logged before the answer leaves: whoever reads the log after the
            # response finds the line there.
            if message["type"] == "http.response.start" and message["status"] in REFUSED:
                log_refusal(scope, message["status"])
            await send(message)

        await self.app(scope, receive, watching_send)


def log_refusal(scope: Scope, status: int) -> None:
    """The refusal line for an answer with ``status`` (one of :data:`REFUSED`)."""
    client = scope.get("client")
    host = client[0] if client else "unknown"
    reason = scope.get(_KEY) or _DEFAULT_REASONS.get(status, "refused")
    method, path = scope.get("method", "?"), scope.get("path", "?")
    log.warning("refused %s %s from %s: %s", method, path, host, reason,
                extra={"method": method, "path": path, "client": host, "status": status,
                       "reason": reason})
