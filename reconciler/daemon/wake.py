"""Waking worker processes when intake has stored something, across processes.

In one process the API calls ``Worker.wake()`` directly. When a supervisor
splits intake and sending over processes (``reconcile daemon --workers N``),
they share an anonymous pipe instead: intake writes one byte after a commit,
a worker that reads it claims at once rather than after its poll interval.

The pipe only shortens the wait. A byte that cannot be written (the pipe is
full because every worker is already busy, or no worker is running) is
dropped: the message is in the outbox either way, and workers poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator

_READ_CHUNK = 4096


class WakeSender:
    """Writes a wake-up byte, at most one per event-loop turn."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._armed = True

    def __call__(self) -> None:
        if not self._armed:
            return  # a byte from this loop turn is on its way
        self._armed = False
        with contextlib.suppress(OSError):  # full pipe (workers busy) or none left
            os.write(self._fd, b"\0")
        asyncio.get_running_loop().call_soon(self._rearm)

    def _rearm(self) -> None:
        self._armed = True


@contextlib.contextmanager
def wake_on(fd: int, wake: Callable[[], None]) -> Iterator[None]:
    """While the block runs, call ``wake()`` whenever bytes arrive on ``fd``."""
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(fd, _READ_CHUNK)
        except BlockingIOError:
            return  # another worker process took the byte
        except OSError:
            loop.remove_reader(fd)
            return
        if not data:  # every writer has gone: polling only from now on
            loop.remove_reader(fd)
            return
        wake()

    loop.add_reader(fd, readable)
    try:
        yield
    finally:
        loop.remove_reader(fd)
