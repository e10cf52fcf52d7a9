"""O7 retry schedule: exponential backoff, full jitter, attempts and lifetime limits."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from dispatch.kit import server

from reconciler.config.models.mail_settings import RetrySettings
from reconciler.runtime.backoff import RetryPolicy

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SETTINGS = RetrySettings(initial_backoff_seconds=10, max_backoff_seconds=100, max_attempts=6,
                         lifetime_minutes=60)


class Fixed:
    """A random source that always returns the top of the range: shows the ceilings."""

    def uniform(self, a: float, b: float, /) -> float:
        return b


def test_ceilings_double_up_to_the_maximum() -> None:
    policy = RetryPolicy.from_settings(SETTINGS)
    assert [policy.ceiling(n) for n in range(1, 7)] == [10, 20, 40, 80, 100, 100]
    assert policy.ceiling(10_000) == 100  # no float overflow on absurd attempt numbers


def test_schedule_with_a_seeded_random_is_reproducible_and_within_bounds() -> None:
    policy = RetryPolicy.from_settings(SETTINGS)

    def schedule(seed: int) -> list[datetime | None]:
        rng = random.Random(seed)
        return [policy.next_attempt(n, T0, T0, rng=rng) for n in range(1, 6)]

    first = schedule(42)
    assert first == schedule(42)
    assert first != schedule(7)
    for n, at in enumerate(first, start=1):
        assert at is not None
        assert T0 <= at <= T0 + timedelta(seconds=policy.ceiling(n))


def test_full_jitter_uses_the_whole_range() -> None:
    policy = RetryPolicy.from_settings(SETTINGS)
    rng = random.Random(1)
    waits = [policy.delay(3, rng) for _ in range(200)]
    assert min(waits) < 4 and max(waits) > 36  # ceiling 40: not clustered at the top


def test_gives_up_after_max_attempts() -> None:
    policy = RetryPolicy.from_settings(SETTINGS)
    assert policy.next_attempt(5, T0, T0, rng=Fixed()) is not None
    assert policy.next_attempt(6, T0, T0, rng=Fixed()) is None


def test_gives_up_when_the_next_attempt_would_start_after_the_lifetime() -> None:
    policy = RetryPolicy.from_settings(SETTINGS)  # 60 minutes
    late = T0 + timedelta(minutes=59)
    assert policy.next_attempt(1, T0, late, rng=Fixed()) == late + timedelta(seconds=10)
    assert policy.next_attempt(4, T0, late, rng=Fixed()) is None  # +80 s is past the end
    assert policy.next_attempt(1, T0, T0 + timedelta(minutes=60), rng=Fixed()) is None


def test_server_retry_lifetime_overrides_mail_settings() -> None:
    srv = server("quick", retryLifetimeMinutes=1)
    quick = RetryPolicy.from_settings(SETTINGS, srv.spec)
    when = quick.next_attempt(3, T0, T0 + timedelta(seconds=30), rng=Fixed())
    assert when is None  # +40 s would end after the server's 1 minute
    assert quick.lifetime == timedelta(minutes=1)
    no_retries = server("never", retryLifetimeMinutes=0)
    assert RetryPolicy.from_settings(SETTINGS, no_retries.spec).next_attempt(1, T0, T0) is None


def test_retry_after_is_a_lower_bound() -> None:
    policy = RetryPolicy.from_settings(SETTINGS)
    at = policy.next_attempt(1, T0, T0, rng=random.Random(3), retry_after_seconds=300)
    assert at == T0 + timedelta(seconds=300)


def test_retry_after_beyond_the_backoff_is_honoured_but_not_past_the_lifetime() -> None:
    policy = RetryPolicy.from_settings(SETTINGS)  # backoff at most 100 s, lifetime 60 min
    later = T0 + timedelta(minutes=10)
    asked = policy.next_attempt(2, T0, later, rng=Fixed(), retry_after_seconds=1800)
    assert asked == later + timedelta(seconds=1800)  # never earlier than the server asked
    # Fifty minutes left of the lifetime: a wait of an hour means giving up now.
    assert policy.next_attempt(2, T0, later, rng=Fixed(), retry_after_seconds=3600) is None
    # A short Retry-After does not shorten the backoff.
    short = policy.next_attempt(2, T0, later, rng=Fixed(), retry_after_seconds=1)
    assert short == later + timedelta(seconds=20)


def test_defaults_come_from_mail_settings_defaults() -> None:
    policy = RetryPolicy.from_settings()
    assert (policy.initial_backoff_seconds, policy.max_backoff_seconds, policy.max_attempts,
            policy.lifetime) == (30, 900, 8, timedelta(minutes=1440))
