"""The daemon's view of the applied configuration, swapped whole when a new
revision lands (SPEC O12).

A :class:`LiveConfig` is immutable: a new message takes the current one; a message
routed earlier is sent with its revision (kept in a small cache), so an apply never
changes a send half-way. :class:`ConfigSource` is the async view: store reads block,
so they run in threads, and the holder's cache is not thread-safe, so they take one
lock. Reading ``current`` needs none: it is one reference, swapped whole.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from pydantic import ValidationError

from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.credentials import gate
from reconciler.runtime.namespace import NamespaceConfig
from reconciler.state.base import LiveState, Store

log = logging.getLogger(__name__)

OLD_REVISIONS_KEPT = 8
T = TypeVar("T")


@dataclass(frozen=True)
class LiveConfig:
    revision: int
    namespaces: Mapping[str, NamespaceConfig] = field(default_factory=dict)

    @classmethod
    def from_snapshot(cls, live: LiveState) -> LiveConfig:
        resources = list(live.resources.values())
        built: dict[str, NamespaceConfig] = {}
        for namespace in sorted({key.namespace for key in live.resources}):
            try:
                built[namespace] = NamespaceConfig.from_canonical(namespace, resources)
            except ValidationError as exc:
                # An out-of-band edit made the stored spec invalid: keep sending for
                # the other namespaces and say which one is broken.
                log.error("namespace %s at revision %s is invalid and is skipped: %s",
                          namespace, live.revision, exc.error_count())
        return cls(live.revision, MappingProxyType(built))

    def proxy_for(self, server: OutgoingServer) -> ProxyServerSpec | None:
        """The ProxyServer the server names in this revision; None when it names none or
        one that does not exist (the transports refuse to send around a missing proxy)."""
        namespace = self.namespaces.get(server.metadata.namespace)
        try:
            return namespace.proxy(server) if namespace is not None else None
        except LookupError:
            return None


class ConfigHolder:
    def __init__(self) -> None:
        self._current = LiveConfig(revision=-1)
        self._older: OrderedDict[int, LiveConfig] = OrderedDict()

    @property
    def current(self) -> LiveConfig:
        return self._current

    def refresh(self, store: Store) -> bool:
        """Load the store's head when it moved; True when a new config was swapped in."""
        if store.head() == self._current.revision:
            return False
        fresh = LiveConfig.from_snapshot(store.snapshot())
        # The bindings go with the revision: every credential this process presents from
        # now on is checked against them (SPEC S2, credentials.gate).
        gate.load(store)
        if self._current.revision >= 0:
            self._remember(self._current)
        self._current = fresh
        log.info("config revision %s is live", fresh.revision)
        return True

    def at(self, store: Store, revision: int) -> LiveConfig:
        found = self._older.get(revision)
        if found is None:
            found = LiveConfig.from_snapshot(store.snapshot(revision))
            self._remember(found)
        return found

    def _remember(self, config: LiveConfig) -> None:
        self._older[config.revision] = config
        self._older.move_to_end(config.revision)
        while len(self._older) > OLD_REVISIONS_KEPT:
            self._older.popitem(last=False)


class ConfigSource:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.holder = ConfigHolder()
        self._lock = threading.Lock()

    @property
    def current(self) -> LiveConfig:
        return self.holder.current

    async def refresh(self) -> bool:
        """Swap in the store's head revision if it moved; True when it did."""
        return await asyncio.to_thread(self._locked, self.holder.refresh, self.store)

    async def at(self, revision: int) -> LiveConfig:
        """The config as of ``revision``, for a message routed with it."""
        if self.holder.current.revision == revision:  # no thread hop for the common case
            return self.holder.current
        return await asyncio.to_thread(self._locked, self.holder.at, self.store, revision)

    def _locked(self, call: Callable[..., T], *args: object) -> T:
        with self._lock:
            return call(*args)
