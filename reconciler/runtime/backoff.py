"""How long to wait before trying again: a server's ``Retry-After``, or our own backoff.

One parser for ``Retry-After`` serves every HTTP peer (Graph, EWS, OAuth token
endpoints, webhooks). It accepts delay-seconds, also with a fraction (Graph sends
whole seconds, but a lenient reader costs nothing), and an HTTP date in any zone,
``-0000`` included (RFC 5322 "unknown zone": read as UTC). Anything else, negative
or not a finite number, is None: the caller then falls back to its own backoff.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol


class RandomSource(Protocol):
    """Where jitter comes from: ``random`` itself, or a seeded ``random.Random`` in tests."""

    def uniform(self, _low: float, _high: float, /) -> float: ...


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds to wait from ``now``; None when it says nothing usable."""
    if value is None:
        return None
    text = value.strip()
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
