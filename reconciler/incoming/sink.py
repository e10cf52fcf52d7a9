"""Ticket events to the desk's webhook, from the store, in order, until delivered (SPEC I8).

Events are durable before the mail is marked done (see the runner), so the
sink only has to drain ``ticket_events``: oldest first, one POST per event
with the event JSON as the body. A refusal that may pass (connection error,
timeout, 408, 429, 5xx) keeps the event pending and waits with exponential
backoff (``Retry-After`` respected); later events wait behind it, so a reply
never reaches the desk before the ticket it belongs to. A refusal that will
not pass (another 4xx) marks the event ``rejected`` with the answer, and
delivery goes on; rejected events stay in the store (``GET /v1/events``).

Each request carries ``X-Reconcile-Event-Id`` (the receiver's idempotency
key: after a timeout the same event may arrive twice) and, with a signing
secret, ``X-Reconcile-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>.<body>">``, so the receiver can check origin and freshness.

When several daemons share a PostgreSQL store only one delivers (an advisory
lock on its own key, like the health leader); with SQLite every daemon does.
Without a webhook nothing runs here: the desk pulls ``GET /v1/events``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from reconciler.config.secrets import ENC_PREFIX, SecretError, resolve_operator
from reconciler.runtime.notifier import webhook_url
from reconciler.state.base import StoreError
from reconciler.state.contract import Incoming, Leadership, StoredEvent
from reconciler.state.leases import AlwaysLeader

log = logging.getLogger(__name__)

EVENT_ID_HEADER = "X-Reconcile-Event-Id"
SIGNATURE_HEADER = "X-Reconcile-Signature"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


# The role whose leader alone delivers events when daemons share a store (``store.leases``).
SINK_ROLE = "event sink"


class WebhookSink:
    def __init__(self, incoming: Incoming, webhook: str, *, secret: str | None = None,
                 ca_file: str | None = None, timeout_seconds: float = 10.0,
                 initial_backoff_seconds: float = 1.0, max_backoff_seconds: float = 300.0,
                 batch: int = 50, leadership: Leadership | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        """``webhook`` and ``secret`` may be secret references (``env:``, ``file:``,
        ``enc:v1:``): a webhook URL often carries a token."""
        self._incoming = incoming
        self._webhook_ref = webhook
        self._secret_ref = secret
        self._ca_file = ca_file
        self._timeout = timeout_seconds
        self._initial = initial_backoff_seconds
        self._max = max_backoff_seconds
        self._batch = batch
        self._leader = leadership or AlwaysLeader()
        self._transport = transport
        self.wake_event = asyncio.Event()
        self.delivered = 0

    def wake(self) -> None:
        """New events are durable: deliver now rather than at the next poll."""
        self.wake_event.set()

    async def run(self, stop: asyncio.Event, *, poll_seconds: float = 5.0) -> None:
        try:
            # The health notifier's resolver also hides the URL from httpx's request log.
            url = webhook_url(self._webhook_ref)
        except SecretError as exc:
            raise SecretError(f"event webhook setting: {exc}") from None
        secret = _resolved(self._secret_ref) if self._secret_ref else None
        verify: Any = True
        if self._ca_file:
            import ssl

            verify = ssl.create_default_context(cafile=self._ca_file)
        async with httpx.AsyncClient(timeout=self._timeout, transport=self._transport,
                                     verify=verify, follow_redirects=False) as client:
            try:
                while not stop.is_set():
                    self.wake_event.clear()
                    wait = poll_seconds
                    try:
                        if await asyncio.to_thread(self._leader.acquire):
                            wait = await self._drain(client, url, secret, poll_seconds)
                    except StoreError as exc:
                        log.error("event sink: the store failed: %s", exc)
                    await _wait_any(stop, self.wake_event, wait)
            finally:
                await asyncio.to_thread(self._leader.release)

    async def _drain(self, client: httpx.AsyncClient, url: str, secret: str | None,
                     poll_seconds: float) -> float:
        """Deliver due events; the seconds until the next try is due."""
        while True:
            due = await asyncio.to_thread(self._incoming.due_events, limit=self._batch)
            if not due:
                break
            for event in due:
                if not await self._deliver(client, url, secret, event):
                    break
            else:
                continue
            break
        next_at = await asyncio.to_thread(self._incoming.next_due_at)
        if next_at is None:
            return poll_seconds
        return max(0.0, min(poll_seconds, (next_at - datetime.now(UTC)).total_seconds()))

    async def _deliver(self, client: httpx.AsyncClient, url: str, secret: str | None,
                       event: StoredEvent) -> bool:
        """True when the event is finished (delivered or rejected) and the next may go."""
        body = event.payload.encode()
        headers = {"Content-Type": "application/json", EVENT_ID_HEADER: str(event.id)}
        if secret:
            headers[SIGNATURE_HEADER] = signature(secret, int(time.time()), body)
        retry_after: float | None = None
        try:
            response = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            why = f"{type(exc).__name__}"  # its text may hold the URL and its token
        else:
            if response.is_success:
                await asyncio.to_thread(self._incoming.delivered, [event.id])
                self.delivered += 1
                return True
            why = f"HTTP {response.status_code}"
            status = response.status_code
            if status < 500 and status not in (408, 429):
                log.error("event %s refused by the webhook (%s); kept as rejected", event.id,
                          why)
                await asyncio.to_thread(self._incoming.reject, event.id, why)
                return True
            retry_after = _retry_after(response.headers.get("Retry-After"))
        delay = min(self._max, self._initial * 2 ** min(event.attempts, 30))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._max))
        log.warning("event %s not delivered (%s, attempt %d); next try in %.1fs", event.id,
                    why, event.attempts + 1, delay)
        await asyncio.to_thread(self._incoming.retry_later, event.id, why,
                                datetime.now(UTC) + timedelta(seconds=delay))
        return False


def _resolved(value: str) -> str:
    if value.startswith(("env:", "file:", ENC_PREFIX)):
        try:
            return resolve_operator(value)
        except SecretError as exc:
            raise SecretError(f"event webhook setting: {exc}") from None
    return value


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    return None


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, timeout: float) -> None:
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
