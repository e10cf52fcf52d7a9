"""The live configuration as the daemon's async parts see it (SPEC O12).

:class:`~reconciler.runtime.live_config.ConfigHolder` does the swapping; its
store reads are blocking, so they run in worker threads. The holder is not
thread-safe (it keeps an ordered cache of older revisions), so every call
that may touch it goes through one lock. Reading ``current`` needs no lock:
it is one reference, swapped whole.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

from reconciler.runtime.live_config import ConfigHolder, LiveConfig
from reconciler.state.base import Store

T = TypeVar("T")


class ConfigSource:
    def __init__(self, store: Store, holder: ConfigHolder | None = None) -> None:
        self.store = store
        self.holder = holder if holder is not None else ConfigHolder()
        self._lock = threading.Lock()

    @property
    def current(self) -> LiveConfig:
        return self.holder.current

    async def refresh(self) -> bool:
        """Swap in the store's head revision if it moved; True when it did."""
        return await asyncio.to_thread(self._locked, self.holder.refresh, self.store)

    async def at(self, revision: int) -> LiveConfig:
        """The config as of ``revision``, for a message routed with it."""
        current = self.holder.current
        if current.revision == revision:
            return current
        return await asyncio.to_thread(self._locked, self.holder.at, self.store, revision)

    def _locked(self, call: Callable[..., T], *args: object) -> T:
        with self._lock:
            return call(*args)
