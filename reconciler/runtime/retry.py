"""When to try a transient failure again (SPEC O7).

Exponential backoff with full jitter (:func:`~reconciler.runtime.backoff.backoff_seconds`):
before attempt ``n + 1`` wait a uniform random time in
``[0, min(maxBackoff, initialBackoff * 2 ** (n - 1))]``. Full jitter spreads a
burst of messages that failed together (a relay restart) instead of sending them
back in lock-step.

Give up (``None``) when ``maxAttempts`` attempts have been made or when the
next attempt would start after the lifetime (``server.retryLifetimeMinutes``,
else ``MailSettings.retry.lifetimeMinutes``) counted from the first attempt.
A wait the server asked for (``SendResult.retry_after``: Graph's ``Retry-After``,
Exchange's ``BackOffMilliseconds``) is a lower bound, above ``maxBackoff`` too: an
earlier attempt would only be throttled again. The lifetime still applies: a wait
that ends after it means giving up now rather than holding the message that long.

Pure: time and randomness come from the caller, so a schedule is reproducible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from reconciler.config.models.mail_settings import RetrySettings
from reconciler.config.models.outgoing_server import OutgoingServerSpec
from reconciler.runtime.backoff import RandomSource, backoff_seconds


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_backoff_seconds: float = 30.0
    max_backoff_seconds: float = 900.0
    max_attempts: int = 8
    lifetime: timedelta = timedelta(minutes=1440)

    @classmethod
    def from_settings(
        cls, settings: RetrySettings | None = None, server: OutgoingServerSpec | None = None
    ) -> RetryPolicy:
        settings = settings or RetrySettings()
        minutes = settings.lifetime_minutes
        if server is not None and server.retry_lifetime_minutes is not None:
            minutes = server.retry_lifetime_minutes
        return cls(
            initial_backoff_seconds=settings.initial_backoff_seconds,
            max_backoff_seconds=settings.max_backoff_seconds,
            max_attempts=settings.max_attempts,
            lifetime=timedelta(minutes=minutes),
        )

    def ceiling(self, attempt: int) -> float:
        """The largest wait after ``attempt`` attempts (attempt >= 1)."""
        return backoff_seconds(attempt, self.initial_backoff_seconds, self.max_backoff_seconds,
                               jitter=0.0)

    def delay(self, attempt: int, rng: RandomSource = random) -> float:
        return backoff_seconds(attempt, self.initial_backoff_seconds, self.max_backoff_seconds,
                               rng=rng)

    def next_attempt(
        self,
        attempt: int,
        first_attempt_at: datetime,
        now: datetime,
        *,
        rng: RandomSource = random,
        retry_after_seconds: float | None = None,
    ) -> datetime | None:
        """When to make attempt ``attempt + 1``, or ``None`` to give up.

        ``attempt`` counts the attempts made so far, the one that just failed included.
        """
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

