"""The one backoff helper: `runtime.backoff.backoff_seconds` next to tenacity, per call.

Issue 12 asked for "a kept library such as stamina/tenacity, or one small
function, measured, not guessed". Two figures, each the best of a few rounds:

- **wait**: computing one wait (full jitter, and none), the part every caller
  needs: the worker's O7 schedule, the sink, the notifier, the group commit.
- **retry loop**: an async call that fails three times, then succeeds, retried
  with sleeping stubbed out: our loop of ``backoff_seconds`` against
  ``tenacity.AsyncRetrying``.

Prints figures; asserts nothing.

    python bench/backoff.py            # 200,000 waits, 20,000 retry loops
    python bench/backoff.py -n 2000
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import tenacity

from reconciler.runtime.backoff import backoff_seconds

INITIAL, CAP, FAILURES = 0.5, 10.0, 3


def best_per_call(run: Callable[[int], Any], n: int, rounds: int = 3) -> float:
    """Microseconds per call: the best of ``rounds`` runs of ``run(n)``."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run(n)
        best = min(best, time.perf_counter() - started)
    return best / n * 1e6


def ours_wait(jitter: float) -> Callable[[int], None]:
    def run(n: int) -> None:
        for i in range(n):
            backoff_seconds(i % 8 + 1, INITIAL, CAP, jitter=jitter)
    return run


def tenacity_wait(strategy: tenacity.wait.wait_base) -> Callable[[int], None]:
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})

    def run(n: int) -> None:
        for i in range(n):
            state.attempt_number = i % 8 + 1
            strategy(state)
    return run


class Flaky:
    """Fails ``FAILURES`` times, then answers: one retried operation."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= FAILURES:
            raise ConnectionError("try again")
        return "ok"


async def _no_sleep(_: float) -> None:
    return None


async def ours_retry() -> str:
    flaky = Flaky()
    for attempt in range(1, FAILURES + 2):
        try:
            return await flaky()
        except ConnectionError:
            await _no_sleep(backoff_seconds(attempt, INITIAL, CAP))
    raise RuntimeError("not reached")


async def tenacity_retry() -> str:
    flaky = Flaky()
    retrying = tenacity.AsyncRetrying(
        wait=tenacity.wait_random_exponential(multiplier=INITIAL, max=CAP),
        stop=tenacity.stop_after_attempt(FAILURES + 1),
        retry=tenacity.retry_if_exception_type(ConnectionError), sleep=_no_sleep)
    result: str = await retrying(flaky)
    return result


def loops(make: Callable[[], Awaitable[str]]) -> Callable[[int], None]:
    async def many(n: int) -> None:
        for _ in range(n):
            await make()

    def run(n: int) -> None:
        asyncio.run(many(n))
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200_000, help="waits per round")
    args = parser.parse_args()
    n_loops = max(args.n // 10, 1)
    rows = [
        ("wait, full jitter", best_per_call(ours_wait(1.0), args.n),
         best_per_call(tenacity_wait(tenacity.wait_random_exponential(
             multiplier=INITIAL, max=CAP)), args.n)),
        ("wait, no jitter", best_per_call(ours_wait(0.0), args.n),
         best_per_call(tenacity_wait(tenacity.wait_exponential(
             multiplier=INITIAL, max=CAP)), args.n)),
        (f"retry loop ({FAILURES} failures)", best_per_call(loops(ours_retry), n_loops),
         best_per_call(loops(tenacity_retry), n_loops)),
    ]
    print(f"{'per call':<26}{'backoff_seconds':>16}{'tenacity':>12}{'ratio':>8}")
    for name, ours, theirs in rows:
        print(f"{name:<26}{ours:>13.2f} µs{theirs:>9.2f} µs{theirs / ours:>7.1f}x")


if __name__ == "__main__":
    main()
