"""Spreading a cold load of many files over the machine's cores, results in input order.

Parsing YAML is most of the CPU of validating a large repo and each file
parses on its own, so a load of many files hands batches of them to worker
processes. Workers are forked, never spawned: a fork starts in milliseconds
with every module already imported, where a spawned worker would pay the
imports again (~0.7 s). A fork copies only the calling thread, so one is
made only while no other thread runs (a lock held by another thread would
stay locked in the child for ever); otherwise the caller works alone.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_WORKERS = 8  # past this, this process unpickling results is the bottleneck


def cpus() -> int:
    """Cores this process may run on (its affinity mask, not the machine's total)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def workers_for(items: int, threshold: int, load: float | None = None,
                threads: int | None = None) -> int:
    """How many processes to spread ``items`` over: 1 (work alone) below ``threshold``,
    where fork is missing, while another thread runs, or with no core to spare.

    ``load`` is how many cores other work keeps busy (default: measured now, see
    :func:`busy_cores`); ``threads`` the threads alive in this process (default:
    counted now). On cores that are already busy a worker only adds the cost of
    pickling its results back (~25 % of parsing them) and saves no time.
    """
    alive = threading.active_count() if threads is None else threads
    if (items < threshold or alive > 1
            or "fork" not in multiprocessing.get_all_start_methods()):
        return 1
    if load is None:
        load = busy_cores()
    free = cpus() - load  # this process's own core included
    return max(1, min(cpus(), MAX_WORKERS, int(free + 0.5)))


def busy_cores(samples: int = 5, interval: float = 0.002) -> float:
    """Cores that other work keeps busy right now.

    The 1-minute load average lags by design: right after a busy minute (this
    very command's previous run, say) it still reads a core as taken that has
    been idle for seconds, and a large load then ran on one core. Linux's count
    of runnable tasks (``/proc/loadavg``'s fourth field) is the run queue at
    this instant, this process included; a few samples a couple of milliseconds
    apart smooth out a task that is only waking. Elsewhere: the load average.
    """
    counts: list[int] = []
    for i in range(samples):
        try:
            with open("/proc/loadavg", "rb") as f:
                running = f.read().split()[3].split(b"/")[0]
        except (OSError, IndexError):
            return os.getloadavg()[0]
        counts.append(int(running) - 1)  # not this process
        if i + 1 < samples:
            time.sleep(interval)
    return max(0.0, sum(counts) / len(counts))


def batched(items: list[T], workers: int, per_worker: int = 8) -> list[list[T]]:
    """``items`` cut into runs: several per worker, so one slow run does not leave
    the others idle, and few enough that each result pickles in bulk."""
    size = max(1, -(-len(items) // (workers * per_worker)))
    return [items[i:i + size] for i in range(0, len(items), size)]


def ordered_map(fn: Callable[[T], R], batches: list[T], workers: int) -> Iterator[R]:
    """``fn`` of each batch, yielded in the order of ``batches``, over ``workers`` processes.

    This process is one of them: it runs every ``workers``-th batch itself while
    ``workers - 1`` forked ones run the rest, so only their share of the results
    pays for the pickling back. ``fn`` must be a module-level function. The
    pool's threads and processes are gone once the iterator is exhausted or
    closed.
    """
    if workers <= 1 or len(batches) <= 1:
        yield from map(fn, batches)
        return
    theirs = [batch for i, batch in enumerate(batches) if i % workers]
    with multiprocessing.get_context("fork").Pool(workers - 1) as pool:
        results = pool.imap(fn, theirs)
        for i, batch in enumerate(batches):
            yield fn(batch) if i % workers == 0 else next(results)
