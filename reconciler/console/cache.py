"""Results that read the whole history, kept per store head for a short while.

The hash-chain check reads every revision and the drift report every live
resource twice; a page must not pay that on each view. A new revision (the head
moved) recomputes at once; otherwise the result is reused for ``ttl`` seconds,
which bounds how late a direct database edit shows up. Pages show when it ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from threading import Lock
from typing import Generic, TypeVar

from reconciler.state import Store

T = TypeVar("T")


class PerHead(Generic[T]):
    def __init__(self, compute: Callable[[Store], T], ttl: float) -> None:
        self._compute = compute
        self._ttl = ttl
        self._lock = Lock()  # one computation at a time; the others wait and reuse it
        self._last: tuple[int, float, datetime, T] | None = None

    def get(self, store: Store) -> tuple[T, datetime]:
        """The value and when it was computed (UTC)."""
        head = store.head()
        with self._lock:
            last = self._last
            if last is None or last[0] != head or time.monotonic() - last[1] > self._ttl:
                last = self._last = (head, time.monotonic(), datetime.now(UTC),
                                     self._compute(store))
            return last[3], last[2]
