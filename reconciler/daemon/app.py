"""The dispatch daemon: wires store, live config, worker, API and health monitor
into one asyncio process (DESIGN "Daemon concurrency"; SPEC O, X3, X4).

What runs, all in one event loop:

- the **config reload** loop: every ``reload_interval_seconds`` the store's
  head revision is checked and a new :class:`LiveConfig` swapped in (O12);
- the **worker** (:mod:`reconciler.dispatch.worker`): outbox to SMTP;
- the **API** (``reconciler.daemon.api.factory.create_api``) under uvicorn;
- the **health monitor** (``reconciler.health.monitor``); it shares
  the :class:`HostSelector` with the SMTP transport, so a main host it finds
  healthy again is used again (O6);
- a small loop keeping the queue-depth gauge current (X3);
- with ``--sync-repo``, the **syncer** (``reconciler.sync.syncer``): follows git.

The daemon owns SIGTERM and SIGINT: either starts a graceful stop (the worker
finishes sends in flight within the grace period and releases the rest), a
second one does not make it faster. uvicorn's own signal capture is switched
off so that it cannot swallow them.

A part that ends unexpectedly stops the whole daemon with an error: a daemon
silently running without its worker or API would look healthy and do nothing.

``settings.role`` narrows a process to the ``intake`` half (API, queue depth,
config reload) or the ``worker`` half (worker, health monitor, config
reload); ``reconcile daemon --workers N`` (by default ``auto``) runs an ``all``
process that serves the API and sends what it can take at once, beside N worker
processes it wakes through a pipe (daemon.supervisor, daemon.wake).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from reconciler.config import secret_places
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.daemon.wake import WakeSender, wake_on
from reconciler.dispatch.worker import Worker
from reconciler.mail.failover import HostSelector
from reconciler.mail.transport import Transport
from reconciler.runtime.backoff import backoff_seconds
from reconciler.runtime.fallback import Reachability
from reconciler.runtime.live_config import ConfigSource
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.notifier import AdminMail, Notifier
from reconciler.runtime.settings import DaemonSettings
from reconciler.state.base import Store, StoreError

if TYPE_CHECKING:
    import uvicorn

    from reconciler.health.monitor import HealthMonitor
    from reconciler.incoming.service import IncomingParts
    from reconciler.sync.syncer import Syncer

log = logging.getLogger(__name__)

STORE_RETRY_S = (0.5, 10.0)
DEPTH_INTERVAL_S = 5.0
ROLES = ("all", "intake", "worker")

Part = Callable[[asyncio.Event], Awaitable[None]]
"""One of the daemon's loops: runs until the event is set."""


class DaemonError(Exception):
    """The daemon could not start or a part of it failed; the message says which."""


class Daemon:
    """``await Daemon(settings).run(stop)``; see the module doc.

    ``store``: an open store to use (and not close); by default the daemon
    opens ``settings.store_url``. ``transports``: replaces the SMTP transport
    (tests). ``api``/``health``: set False to leave those parts out. The parts
    are attributes once ``ready`` is set.
    """

    def __init__(
        self,
        settings: DaemonSettings,
        store: Store | None = None,
        *,
        transports: Mapping[str, Transport] | None = None,
        api: bool = True,
        health: bool = True,
        handle_signals: bool = True,
        freeze_gc: bool = False,
    ) -> None:
        self.settings = settings
        # Before any part starts: no config reference may resolve the operator's secrets.
        secret_places.reserve(*settings.operator_refs())
        self._freeze_gc = freeze_gc
        self._given_store = store
        self._given_transports = transports
        self._want_api = api
        self._want_health = health
        self._handle_signals = handle_signals
        self.metrics = DaemonMetrics()
        self.selector = HostSelector()
        self.reachability = Reachability()  # health -> dispatch: the primary fallback (O15)
        self.store: Store | None = store
        self.config: ConfigSource | None = None
        self.worker: Worker | None = None
        self.api_server: uvicorn.Server | None = None
        self.health: HealthMonitor | None = None
        self.incoming: IncomingParts | None = None
        self.syncer: Syncer | None = None
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop if stop is not None else asyncio.Event()
        store = self._given_store
        if store is None:
            from reconciler.state import open_store

            try:
                store = await asyncio.to_thread(open_store, self.settings.store_url)
            except StoreError as exc:
                raise DaemonError(str(exc)) from None
        # Delivery events only pile up for a receiver that takes them (O14).
        store.delivery_events = bool(self.settings.events_webhook)
        self.store = store
        try:
            with self._signals(stop):
                await self._run(store, stop)
        finally:
            if self._given_store is None:
                await asyncio.to_thread(store.close)

    @contextlib.contextmanager
    def _signals(self, stop: asyncio.Event) -> Iterator[None]:
        """While the block runs, SIGTERM and SIGINT set ``stop`` (see the module doc)."""
        loop = asyncio.get_running_loop()

        def on_signal(sig: signal.Signals) -> None:
            if not stop.is_set():
                log.info("%s received: stopping gracefully", sig.name)
            stop.set()

        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT) if self._handle_signals else ():
            try:
                loop.add_signal_handler(sig, on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread, or no signals on this platform
            installed.append(sig)
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    async def _run(self, store: Store, stop: asyncio.Event) -> None:
        self.config = ConfigSource(store)
        if not await self._first_config(stop):
            return
        role = self.settings.role
        if role not in ROLES:
            raise DaemonError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        sends = role in ("all", "worker")
        transports = self._transports() if sends else {}
        if sends:
            self.worker = Worker(store, self.settings, self.config, transports,
                                 metrics=self.metrics, reachability=self.reachability)
        # Build the optional parts before anything runs: one that cannot be
        # built (an unresolvable API token) stops the start with nothing to undo.
        try:
            parts = self._parts(store, sends=sends, serves=role in ("all", "intake"))
        except Exception as exc:
            await _close_all(transports)
            raise DaemonError(f"cannot start: {exc}") from exc
        tasks = {name: asyncio.create_task(part(stop), name=name)
                 for name, part in parts.items()}
        log.info("daemon %s running: store %s, config revision %s, parts: %s",
                 self.settings.worker_id, getattr(store, "location", "?"),
                 self.config.current.revision, ", ".join(tasks),
                 extra={"worker_id": self.settings.worker_id, "role": role})
        self.ready.set()
        if self._freeze_gc:
            # Everything built so far (FastAPI, pydantic, SQLAlchemy, the config)
            # lives as long as the process: out of the collector's sight, the
            # collections that per-message garbage triggers no longer rescan it
            # (~0.2 ms of CPU per message in bench/dispatch.py). Only for a process
            # of its own: a host process (the tests) may still want those collected.
            gc.collect()
            gc.freeze()
        try:
            await self._until_stopped(tasks, stop)
        finally:
            await _close_all(transports)
        log.info("daemon %s stopped", self.settings.worker_id)

    def _parts(self, store: Store, *, sends: bool, serves: bool) -> dict[str, Part]:
        """The loops this process runs, by name, in start order."""
        parts: dict[str, Part] = {"config reload": self._reload_loop}
        if self.worker is not None:
            parts["worker"] = self._work
        if serves:
            parts["queue depth"] = self._depth_loop
        if self.settings.sync_repo and serves:
            parts["sync"] = self._sync(store)
        if self._want_api and serves:
            parts["api"] = self._api(store)
        if self._want_health and sends:
            parts["health"] = self._health(store)
        if self.settings.incoming and serves:
            parts.update(self._incoming(store).tasks())
        return parts

    async def _until_stopped(self, tasks: dict[str, asyncio.Task[Any]],
                             stop: asyncio.Event) -> None:
        """Wait for ``stop`` or for a part to end (a failure), then stop them all; raise
        DaemonError naming each part that failed."""
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({stopping, *tasks.values()}, return_when=asyncio.FIRST_COMPLETED)
        failed = [name for name, t in tasks.items() if t.done() and not stop.is_set()]
        stop.set()
        stopping.cancel()
        if self.api_server is not None:
            self.api_server.should_exit = True
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        errors = [f"{name}: {r}" for name, r in zip(tasks, results, strict=True)
                  if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
        if failed and not errors:
            errors = [f"{name} ended unexpectedly" for name in failed]
        if errors:
            raise DaemonError("; ".join(errors))

    async def _work(self, stop: asyncio.Event) -> None:
        assert self.worker is not None
        # A worker process is woken by the intake process through this pipe; the intake
        # process (role "all" under a supervisor) holds its write end instead.
        fd = self.settings.wake_fd if self.settings.role == "worker" else None
        with wake_on(fd, self.worker.wake) if fd is not None else contextlib.nullcontext():
            await self.worker.run(stop)

    async def _first_config(self, stop: asyncio.Event) -> bool:
        """Load the live config before anything sends; False if stopped meanwhile."""
        assert self.config is not None
        failures = 0
        while not stop.is_set():
            try:
                await self.config.refresh()
            except StoreError as exc:
                failures += 1
                pause = backoff_seconds(failures, *STORE_RETRY_S, jitter=0.0)
                log.error("cannot read the live config, retrying in %.1fs: %s", pause, exc)
                await _wait(stop, pause)
                continue
            self.metrics.config_revision.set(self.config.current.revision)
            return True
        return False

    @functools.cached_property
    def token_provider(self) -> Any:
        """OAuth2 access tokens for every transport and the health monitor (O11), cached
        sealed in the store; one per daemon so a refresh is shared by all of them."""
        from reconciler.oauth.provider import provider_for_store

        assert self.store is not None
        return provider_for_store(self.store, key_ref=self.settings.token_key_ref,
                                  ca_file=self.settings.ca_file)

    def _transports(self) -> Mapping[str, Transport]:
        if self._given_transports is not None:
            return self._given_transports
        from reconciler.mail.registry import OUTGOING, transport_for

        # One of each per daemon: SMTP pools connections per server, Graph keeps its
        # 4-requests-per-mailbox limit, EWS its threads and accounts per server. SMTP
        # and EWS share the selector with the health monitor, so they fail over and back.
        return {str(protocol): transport_for(
                    protocol, ca_file=self.settings.ca_file, token_provider=self.token_provider,
                    selector=self.selector, proxy_lookup=self._proxy_for)
                for protocol in OUTGOING}

    def _proxy_for(self, server: OutgoingServer) -> ProxyServerSpec | None:
        # The current revision's proxies: a proxy edit takes effect on the next send.
        assert self.config is not None
        return self.config.current.proxy_for(server)

    async def _reload_loop(self, stop: asyncio.Event) -> None:
        assert self.config is not None
        while not await _wait(stop, self.settings.reload_interval_seconds):
            try:
                changed = await self.config.refresh()
            except StoreError as exc:
                log.error("cannot check the live config revision: %s", exc)
                continue
            except Exception:
                # Sending goes on with the config it has; a broken revision must
                # not take the daemon down.
                log.exception("loading the live config failed; keeping revision %s",
                              self.config.current.revision)
                continue
            if changed:
                revision = self.config.current.revision
                self.metrics.config_revision.set(revision)
                log.info("config revision %s is live; new messages are routed with it",
                         revision, extra={"config_revision": revision})

    async def _depth_loop(self, stop: asyncio.Event) -> None:
        assert self.store is not None
        interval = min(DEPTH_INTERVAL_S, max(self.settings.reload_interval_seconds, 0.1))
        while True:
            try:
                depth = await asyncio.to_thread(self.store.outbox.depth)
            except Exception as exc:
                log.warning("cannot read the outbox depth: %s", exc)
            else:
                for state, count in depth.items():
                    self.metrics.queue_depth.labels(str(state)).set(count)
            if await _wait(stop, interval):
                return

    # -- optional parts ------------------------------------------------------

    @functools.cached_property
    def notifier(self) -> Notifier:
        """Transitions are logged, posted to the webhook and mailed to the namespace's
        adminNotifications.emails through the outbox."""
        assert self.store is not None and self.config is not None
        return Notifier(self.settings.notify_webhook,
                        mail=AdminMail(self.store, self.config.holder))

    def _api(self, store: Store) -> Part:
        from reconciler.daemon.api.factory import create_api, server

        assert self.config is not None
        app = create_api(store, self.settings, self.metrics, self.config.holder)
        if self.worker is not None:
            # Same process: new messages go to the worker directly when it has room,
            # and the intake wakes it (and the worker processes, if any) only for those
            # it stored queued.
            wake = self.worker.wake
            if self.settings.wake_fd is not None:
                wake = _both(wake, WakeSender(self.settings.wake_fd))
            app.state.intake.hand_off_to(self.worker, wake)
        elif self.settings.wake_fd is not None:
            app.state.wake_worker = WakeSender(self.settings.wake_fd)  # workers elsewhere
        if self.syncer is not None:
            app.state.sync_wake = self.syncer.wake
        self.api_server = server(app, self.settings.listen_host, self.settings.listen_port)
        return self._serve

    async def _serve(self, _stop: asyncio.Event) -> None:
        """Serve until ``api_server.should_exit`` (set when the daemon stops)."""
        assert self.api_server is not None
        try:
            await self.api_server.serve()
        except SystemExit:
            # uvicorn exits the process when it cannot bind; here that is one
            # failed part, reported like the others.
            raise DaemonError(
                f"the API could not listen on {self.settings.listen_host}:"
                f"{self.settings.listen_port} (see the log line before)") from None

    def _sync(self, store: Store) -> Part:
        """Follow the git repository (reconciler.sync.syncer); one daemon per store syncs."""
        from reconciler.sync.syncer import Syncer

        self.syncer = Syncer(store, self.settings, metrics=self.metrics, notifier=self.notifier)
        return self.syncer.run

    def _incoming(self, store: Store) -> IncomingParts:
        """Fetch loops per IncomingServer and the event sink (reconciler.incoming.service)."""
        from reconciler.incoming.service import incoming_parts

        self.incoming = incoming_parts(store, self.settings, notifier=self.notifier,
                                       token_provider=self.token_provider)
        return self.incoming

    def _health(self, store: Store) -> Part:
        from reconciler.health.monitor import HealthMonitor

        assert self.config is not None
        self.health = HealthMonitor(store, self.settings, self.metrics, self.config.holder,
                                    self.selector, notifier=self.notifier,
                                    token_provider=self.token_provider,
                                    reachability=self.reachability)
        return self.health.run


def _both(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    def both() -> None:
        first()
        second()
    return both


async def _close_all(transports: Mapping[str, Transport]) -> None:
    for transport in {id(t): t for t in transports.values()}.values():
        try:
            await transport.aclose()
        except Exception:
            log.exception("closing the %s transport failed", transport.protocol)


async def _wait(stop: asyncio.Event, timeout: float) -> bool:
    """Wait ``timeout`` seconds or until stopped; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout)
    return stop.is_set()


def run(settings: DaemonSettings) -> None:
    """Run a daemon until SIGTERM/SIGINT (the ``reconcile daemon`` command)."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(Daemon(settings, freeze_gc=True).run())


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed: with httptools, ~20% less CPU per message than asyncio's
    own loop and h11 in bench/dispatch.py (the daemon does many small socket writes)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
