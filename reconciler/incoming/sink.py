"""Ticket events to the desk's webhook, from the store, in order, until delivered (SPEC I8).

Events are durable before their mail is marked done, so the sink only drains
``ticket_events``: oldest first, one POST of the event JSON each, through the one
:class:`~reconciler.runtime.webhook.WebhookPoster` (signed when a secret is set).
A refusal that may pass (connection error, timeout, 408, 429, 5xx) keeps the
event pending with exponential backoff (``Retry-After`` respected) and later
events wait behind it, so a reply never reaches the desk before its ticket. Any
other 4xx marks it ``rejected`` (kept, ``GET /v1/events``) and delivery goes on.

``X-Reconcile-Event-Id`` is the receiver's idempotency key: after a timeout
the same event may arrive twice. Daemons sharing a PostgreSQL store elect one
sink (an advisory lock, like the health leader); with SQLite each delivers.
Without a webhook nothing runs here: the desk pulls ``GET /v1/events``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from reconciler.config.secrets import SecretError
from reconciler.runtime.backoff import backoff_seconds, first_set
from reconciler.runtime.webhook import WebhookPoster
from reconciler.state.base import StoreError
from reconciler.state.contract import Incoming, Leadership, StoredEvent
from reconciler.state.leases import AlwaysLeader

log = logging.getLogger(__name__)

EVENT_ID_HEADER = "X-Reconcile-Event-Id"
BATCH = 50  # events read per store query
# The role whose leader alone delivers events when daemons share a store (``store.leases``).
SINK_ROLE = "event sink"


class WebhookSink:
    def __init__(self, incoming: Incoming, webhook: str, *, secret: str | None = None,
                 ca_file: str | None = None, initial_backoff_seconds: float = 1.0,
                 max_backoff_seconds: float = 300.0,
                 leadership: Leadership | None = None) -> None:
        """``webhook`` and ``secret`` may be secret references (``env:``, ``file:``,
        ``enc:v1:``): a webhook URL often carries a token."""
        self._incoming = incoming
        self._poster = WebhookPoster(webhook, secret=secret, ca_file=ca_file)
        self._initial = initial_backoff_seconds
        self._max = max_backoff_seconds
        self._leader = leadership or AlwaysLeader()
        self.wake_event = asyncio.Event()

    def wake(self) -> None:
        """New events are durable: deliver now rather than at the next poll."""
        self.wake_event.set()

    async def run(self, stop: asyncio.Event, *, poll_seconds: float = 5.0) -> None:
        try:
            async with self._poster:
                try:
                    while not stop.is_set():
                        self.wake_event.clear()
                        wait = poll_seconds
                        try:
                            if await asyncio.to_thread(self._leader.acquire):
                                wait = await self._drain(poll_seconds)
                        except StoreError as exc:
                            log.error("event sink: the store failed: %s", exc)
                        await first_set(stop, self.wake_event, timeout=wait)
                finally:
                    await asyncio.to_thread(self._leader.release)
        except SecretError as exc:  # resolving the webhook or secret reference
            raise SecretError(f"event webhook setting: {exc}") from None

    async def _drain(self, poll_seconds: float) -> float:
        """Deliver due events; the seconds until the next try is due."""
        while due := await asyncio.to_thread(self._incoming.due_events, limit=BATCH):
            for event in due:
                if not await self._deliver(event):
                    break
            else:
                continue
            break
        next_at = await asyncio.to_thread(self._incoming.next_due_at)
        if next_at is None:
            return poll_seconds
        return max(0.0, min(poll_seconds, (next_at - datetime.now(UTC)).total_seconds()))

    async def _deliver(self, event: StoredEvent) -> bool:
        """True when the event is finished (delivered or rejected) and the next may go."""
        refusal = await self._poster.post(event.payload.encode(), {EVENT_ID_HEADER: str(event.id)})
        if refusal is None:
            await asyncio.to_thread(self._incoming.delivered, [event.id])
            return True
        if refusal.permanent:
            log.error("event %s refused by the webhook (%s); kept as rejected", event.id,
                      refusal.why)
            await asyncio.to_thread(self._incoming.reject, event.id, refusal.why)
            return True
        # One sink delivers in order: no crowd to spread, so no jitter.
        delay = backoff_seconds(event.attempts + 1, self._initial, self._max, jitter=0.0)
        if refusal.retry_after is not None:
            delay = max(delay, min(refusal.retry_after, self._max))
        log.warning("event %s not delivered (%s, attempt %d); next try in %.1fs", event.id,
                    refusal.why, event.attempts + 1, delay)
        await asyncio.to_thread(self._incoming.retry_later, event.id, refusal.why,
                                datetime.now(UTC) + timedelta(seconds=delay))
        return False
