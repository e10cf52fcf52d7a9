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
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_WORKERS = 8  # past this, the parent unpickling results is the bottleneck


def cpus() -> int:
    """Cores this process may run on (its affinity mask, not the machine's total)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def workers_for(items: int, threshold: int) -> int:
    """How many processes to spread ``items`` over: 1 (work alone) below ``threshold``,
    on one core, where fork is missing, or while another thread runs."""
    if (items < threshold or threading.active_count() > 1
            or "fork" not in multiprocessing.get_all_start_methods()):
        return 1
    return max(1, min(cpus(), MAX_WORKERS))


def batched(items: list[T], workers: int, per_worker: int = 8) -> list[list[T]]:
    """``items`` cut into runs: several per worker, so one slow run does not leave
    the others idle, and few enough that each result pickles in bulk."""
    size = max(1, -(-len(items) // (workers * per_worker)))
    return [items[i:i + size] for i in range(0, len(items), size)]


def ordered_map(fn: Callable[[T], R], batches: Iterable[T], workers: int) -> Iterator[R]:
    """``fn`` of each batch in forked workers, yielded in the order of ``batches``.

    ``fn`` must be a module-level function; its results come back pickled.
    The pool's threads and processes are gone once the iterator is exhausted
    or closed.
    """
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(fn, batches)
