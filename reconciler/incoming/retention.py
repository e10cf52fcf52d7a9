"""Retention of what the incoming side keeps (SPEC I8): delivered events and done-markers.

Run beside the runner (``service.incoming_parts``) at start and every
:data:`INTERVAL_S`; the deletes are idempotent, so several daemons may all run it.

- **Ticket events** go ``event_days`` after delivery. Pending and rejected events
  stay: they are the only copy of a mail the desk has not got.
- **Markers** tell a fetcher that lists a mail again that it is done. Fetchers
  list unread mail (IMAP, EWS, Graph) or all of it (POP3), so a marker is needed
  as long as its mail can be listed (marked unread again, ``\\Seen`` lost in a
  crash, left on a POP3 server), which age alone cannot tell. So the runner
  re-dates a marker whenever a listing shows its mail and it is older than half
  the retention (one write per marker per half retention): a marker older than
  ``marker_days`` was not listed for at least half that time. Only servers with
  a good fetch in the last half retention, not paused, lose markers: a server
  that is not listed cannot re-date them.
- **Message-IDs are kept**: they thread replies to old tickets, and a processed
  mail that comes back after its marker is gone is ignored as a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from reconciler.runtime.backoff import first_set
from reconciler.state.base import StoreError
from reconciler.state.contract import Incoming

log = logging.getLogger(__name__)

INTERVAL_S = 3600.0
DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class Purged:
    events: int
    markers: int


@dataclass(frozen=True)
class IncomingRetention:
    """Purges delivered events and stale markers; ``days`` of 0 (or None) keep them."""

    incoming: Incoming
    event_days: float | None
    marker_days: float | None

    @property
    def active(self) -> bool:
        return bool(self.event_days or self.marker_days)

    def purge(self, now: datetime | None = None) -> Purged:
        """One pass (blocking: database I/O)."""
        now = now or datetime.now(UTC)
        events = markers = 0
        if self.event_days:
            events = self.incoming.purge_delivered(now - timedelta(days=self.event_days))
        if self.marker_days:
            keep = timedelta(days=self.marker_days)
            markers = self.incoming.purge_markers(now - keep, listed_since=now - keep / 2)
        return Purged(events, markers)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                done = await asyncio.to_thread(self.purge)
            except StoreError as exc:
                log.error("incoming retention: the store failed (%s); trying again later", exc)
            else:
                if done.events or done.markers:
                    log.info("incoming retention: deleted %d delivered event(s) and %d "
                             "marker(s)", done.events, done.markers)
            await first_set(stop, timeout=INTERVAL_S)
