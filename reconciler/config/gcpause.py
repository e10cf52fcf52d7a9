"""Pausing Python's cyclic garbage collector around bulk work.

Validating or planning a large config builds hundreds of thousands of
long-lived objects, and every automatic collection rescans all of them: a
third of the CPU time of validating 10,000 resources, and several times the
diff itself for a 10,000-resource plan (bench/validate_scale.py,
bench/plan_scale.py). Reference counting still frees garbage at once; only
cycles wait until the block ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
