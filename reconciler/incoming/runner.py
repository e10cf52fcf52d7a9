"""The incoming runner: one fetch loop per enabled IncomingServer (SPEC I1, I6, I7, I8).

It follows the store's head revision and keeps one
:class:`~reconciler.incoming.server_loop.ServerLoop` (which says what a loop
does) per enabled server, restarting those whose configuration changed.

- **Applies (I7).** While the apply lock is held no loop starts a fetch; on its
  release the runner reloads at once. The lock does not say which resources the
  plan touches, so every server waits (one transaction and a few checks).
- **Several daemons on one store**: the daemon holding a server's lease
  (``incoming_servers``, renewed every cycle) fetches it; a dead daemon's
  lease runs out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from reconciler.credentials import gate
from reconciler.incoming.pipeline.directory import SenderDirectory
from reconciler.incoming.server_loop import ServerLoop
from reconciler.incoming.servers import IncomingConfig, ServerId
from reconciler.incoming.store import IncomingStore
from reconciler.mail.fetcher import Fetcher
from reconciler.mail.registry import fetcher_for
from reconciler.runtime.backoff import first_set
from reconciler.state.base import StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerOptions:
    batch: int = 50  # mails per fetch call; the loop fetches again at once when it was full
    lease_seconds: float = 120.0
    reload_interval_seconds: float = 1.0
    pause_poll_seconds: float = 0.5  # how often a paused loop looks at the apply lock
    # Seconds between fetches instead of the servers' fetchIntervalMinutes (tests, benchmarks).
    interval_override: float | None = None
    # Markers unseen in listings this long may be purged (retention.py); the
    # loop re-dates a listed mail's marker once it is half that old. None: never purged.
    marker_retention_seconds: float | None = None


@dataclass(eq=False)
class IncomingRunner:
    """Runs a :class:`ServerLoop` per enabled IncomingServer of the store's head revision."""

    store: Any
    incoming: IncomingStore
    _: KW_ONLY
    owner: str
    notifier: Any = None
    token_provider: Any = None
    ca_file: str | None = None
    directory: SenderDirectory | None = None
    options: RunnerOptions = field(default_factory=RunnerOptions)
    fetcher_factory: Callable[..., Fetcher] = fetcher_for
    on_event: Callable[[], None] | None = None
    config: IncomingConfig = field(init=False, default=IncomingConfig(revision=-1))
    loops: dict[ServerId, ServerLoop] = field(init=False, default_factory=dict)
    _tasks: dict[ServerId, asyncio.Task[None]] = field(init=False, default_factory=dict)
    _retiring: set[asyncio.Task[None]] = field(init=False, default_factory=set)
    _reload: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    # Notified after every cycle of any loop: lets callers (tests, the bench)
    # wait for progress without sleeping.
    progress: asyncio.Condition = field(init=False, default_factory=asyncio.Condition)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.refresh(stop)
                except StoreError as exc:
                    log.error("incoming: cannot read the live config: %s", exc)
                except Exception:
                    log.exception("incoming: loading the config failed; keeping revision %s",
                                  self.config.revision)
                await first_set(stop, timeout=self.options.reload_interval_seconds)
        finally:
            await self._stop_all()

    async def refresh(self, stop: asyncio.Event) -> bool:
        """Load the head revision if it moved and restart what changed; True when it moved."""
        async with self._reload:
            head = await asyncio.to_thread(self.store.head)
            if head == self.config.revision:
                return False
            snapshot = await asyncio.to_thread(self.store.snapshot)
            # With it, the credential bindings fetchers are held to (S2).
            await asyncio.to_thread(gate.load, self.store)
            fresh = await asyncio.to_thread(IncomingConfig.from_snapshot, snapshot)
            await self._swap(fresh, stop)
            return True

    async def _swap(self, fresh: IncomingConfig, stop: asyncio.Event) -> None:
        old, self.config = self.config, fresh
        for sid in list(self.loops):
            new = fresh.servers.get(sid)
            if new is None or new.fingerprint != self.loops[sid].config.fingerprint:
                await self._stop_loop(sid)
        for sid, server in fresh.servers.items():
            if sid not in self.loops:
                loop = ServerLoop(self, server, stop)
                self.loops[sid] = loop
                self._tasks[sid] = asyncio.create_task(loop.run(), name=f"incoming {sid[0]}/"
                                                       f"{sid[1]}")
        if old.revision >= 0:
            log.info("incoming: revision %s is live; fetching %d server(s)", fresh.revision,
                     len(self.loops))

    async def _stop_loop(self, sid: ServerId) -> None:
        loop = self.loops.pop(sid)
        task = self._tasks.pop(sid)
        loop.stopping.set()
        if task is asyncio.current_task() or loop.refreshing:
            # The loop itself asked for the reload (after an apply): it ends on its own,
            # once the reload that holds the lock it waits for is done.
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            return
        await _finish(task, sid)

    async def _stop_all(self) -> None:
        for sid in list(self.loops):
            await self._stop_loop(sid)
        for task in list(self._retiring):
            await _finish(task, None)

    async def cycled(self) -> None:
        async with self.progress:
            self.progress.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait until ``predicate()`` holds after some cycle (tests and benchmarks)."""
        async def waiting() -> None:
            async with self.progress:
                await self.progress.wait_for(predicate)

        await asyncio.wait_for(waiting(), timeout)


async def _finish(task: asyncio.Task[None], sid: ServerId | None) -> None:
    try:
        await task
    except Exception:
        log.exception("incoming server %s ended with an error", "/".join(sid or ("?",)))
