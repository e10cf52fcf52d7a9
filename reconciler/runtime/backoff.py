"""When to try again: a server's ``Retry-After``, our own backoff, the send retry
schedule, and :func:`first_set` to wait for the first of a stop, a wake-up or a timeout.

One parser for ``Retry-After`` serves every HTTP peer (Graph, EWS, OAuth token
endpoints, webhooks). It accepts delay-seconds, also with a fraction (Graph sends
whole seconds, but a lenient reader costs nothing), and an HTTP date in any zone,
``-0000`` included (RFC 5322 "unknown zone": read as UTC). Anything else, negative
or not a finite number, is None: the caller then falls back to its own backoff.

:class:`RetryPolicy` (SPEC O7) waits a uniform random time in ``[0, min(maxBackoff,
initialBackoff * 2 ** (n - 1))]`` before attempt ``n + 1``: full jitter spreads a
burst that failed together (a relay restart) instead of sending it back in lock-step.
It gives up after ``maxAttempts`` or when the next attempt would start after the
lifetime (``server.retryLifetimeMinutes``, else ``MailSettings.retry``) from the
first. A wait the server asked for (``SendResult.retry_after``) is a lower bound,
above ``maxBackoff`` too: an earlier attempt would only be throttled again; one that
ends after the lifetime means giving up now. Time and randomness come from the
caller, so a schedule is reproducible.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol

from reconciler.config.models.mail_settings import RetrySettings
from reconciler.config.models.outgoing_server import OutgoingServerSpec


class RandomSource(Protocol):
    """Where jitter comes from: ``random`` itself, or a seeded ``random.Random`` in tests."""

    def uniform(self, _low: float, _high: float, /) -> float: ...


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds to wait from ``now``; None when it says nothing usable."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def backoff_seconds(attempt: int, initial: float, cap: float, *, jitter: float = 1.0,
                    rng: RandomSource = random) -> float:
    """The wait before try ``attempt + 1`` (``attempt`` counts from 1): exponential, capped.

    ``jitter`` is the share of the wait drawn at random ("full jitter" at 1.0, none at
    0.0), so that many callers failing together do not come back together. ``rng`` makes a
    schedule reproducible.
    """
    # Cap the exponent: 2 ** 1100 overflows a float long before the cap matters.
    ceiling = min(cap, initial * 2.0 ** min(max(attempt - 1, 0), 60))
    if jitter <= 0:
        return ceiling
    return ceiling * (1.0 - jitter) + rng.uniform(0.0, ceiling * jitter)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_backoff_seconds: float
    max_backoff_seconds: float
    max_attempts: int
    lifetime: timedelta

    @classmethod
    def from_settings(cls, settings: RetrySettings | None = None,
                      server: OutgoingServerSpec | None = None) -> RetryPolicy:
        """``settings`` (default: MailSettings' defaults), the server's lifetime first."""
        settings = settings or RetrySettings()
        minutes = settings.lifetime_minutes
        if server is not None and server.retry_lifetime_minutes is not None:
            minutes = server.retry_lifetime_minutes
        return cls(settings.initial_backoff_seconds, settings.max_backoff_seconds,
                   settings.max_attempts, timedelta(minutes=minutes))

    def ceiling(self, attempt: int) -> float:
        """The largest wait after ``attempt`` attempts (attempt >= 1)."""
        return backoff_seconds(attempt, self.initial_backoff_seconds, self.max_backoff_seconds,
                               jitter=0.0)

    def delay(self, attempt: int, rng: RandomSource = random) -> float:
        return backoff_seconds(attempt, self.initial_backoff_seconds, self.max_backoff_seconds,
                               rng=rng)

    def next_attempt(self, attempt: int, first_attempt_at: datetime, now: datetime, *,
                     rng: RandomSource = random,
                     retry_after_seconds: float | None = None) -> datetime | None:
        """When to make attempt ``attempt + 1``, or ``None`` to give up; ``attempt`` counts
        the attempts made so far, the one that just failed included."""
        if attempt >= self.max_attempts:
            return None
        expires = first_attempt_at + self.lifetime
        if now >= expires:
            return None
        wait = self.delay(attempt, rng)
        if retry_after_seconds is not None:
            wait = max(wait, retry_after_seconds)
        at = now + timedelta(seconds=wait)
        return None if at > expires else at


async def first_set(*events: asyncio.Event, timeout: float | None = None) -> None:
    """Return once any of ``events`` is set, or after ``timeout`` seconds (None: never)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
