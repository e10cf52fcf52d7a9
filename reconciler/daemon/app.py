"""The dispatch daemon: wires store, live config, worker, API and health monitor
into one asyncio process (DESIGN "Daemon concurrency"; SPEC O, X3, X4).

What runs, all in one event loop:

- the **config reload** loop: every ``reload_interval_seconds`` the store's
  head revision is checked and a new :class:`LiveConfig` swapped in (O12);
- the **worker** (:mod:`reconciler.dispatch.worker`): outbox to SMTP;
- the **API** (``reconciler.daemon.api.create_api``) under uvicorn, when that
  module is installed;
- the **health monitor** (``reconciler.health``), when installed; it shares
  the :class:`HostSelector` with the SMTP transport, so a main host it finds
  healthy again is used again (O6);
- a small loop keeping the queue-depth gauge current (X3).

The daemon owns SIGTERM and SIGINT: either starts a graceful stop (the worker
finishes sends in flight within the grace period and releases the rest), a
second one does not make it faster. uvicorn's own signal capture is switched
off so that it cannot swallow them.

A part that ends unexpectedly stops the whole daemon with an error: a daemon
silently running without its worker or API would look healthy and do nothing.

``settings.role`` narrows a process to the ``intake`` half (API, queue depth,
config reload) or the ``worker`` half (worker, health monitor, config
reload); ``reconcile daemon --workers N`` runs them as separate processes
(daemon.supervisor), woken through a pipe (daemon.wake).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import importlib
import importlib.util
import logging
import signal
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from reconciler.config import secret_places
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.daemon.wake import WakeSender, wake_on
from reconciler.dispatch.worker import Worker
from reconciler.mail.failover import HostSelector
from reconciler.mail.transport import Transport
from reconciler.runtime.configs import ConfigSource
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.settings import DaemonSettings
from reconciler.state.base import Store, StoreError

log = logging.getLogger(__name__)

API_MODULE = "reconciler.daemon.api"
HEALTH_MODULE = "reconciler.health"
STORE_RETRY_S = (0.5, 10.0)
DEPTH_INTERVAL_S = 5.0
ROLES = ("all", "intake", "worker")


class DaemonError(Exception):
    """The daemon could not start or a part of it failed; the message says which."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class Daemon:
    """``await Daemon(settings).run(stop)``; see the module doc.

    ``store``: an open store to use (and not close); by default the daemon
    opens ``settings.store_url``. ``transports``: replaces the SMTP transport
    (tests). ``api``/``health``: set False to leave those parts out even when
    installed. The parts are attributes once ``ready`` is set.
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
        self.store: Store | None = store
        self.config: ConfigSource | None = None
        self.worker: Worker | None = None
        self.api_server: Any = None  # uvicorn.Server when the API runs
        self.health: Any = None  # reconciler.health.HealthMonitor when it runs
        self.incoming: Any = None  # reconciler.incoming.service.IncomingParts when it runs
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop if stop is not None else asyncio.Event()
        store = self._given_store
        if store is None:
            store = await self._open_store()
        self.store = store
        try:
            with self._signals(stop):
                await self._run(store, stop)
        finally:
            if self._given_store is None:
                await asyncio.to_thread(store.close)

    async def _open_store(self) -> Store:
        from reconciler.state import open_store

        try:
            return await asyncio.to_thread(open_store, self.settings.store_url)
        except StoreError as exc:
            raise DaemonError(str(exc)) from None

    @contextlib.contextmanager
    def _signals(self, stop: asyncio.Event) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if self._handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self._on_signal, sig, stop)
                except (NotImplementedError, RuntimeError, ValueError):
                    continue  # not the main thread, or no signals on this platform
                installed.append(sig)
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    @staticmethod
    def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
        if not stop.is_set():
            log.info("%s received: stopping gracefully", sig.name)
        stop.set()

    async def _run(self, store: Store, stop: asyncio.Event) -> None:
        settings = self.settings
        self.config = ConfigSource(store)
        if not await self._first_config(stop):
            return
        role = settings.role
        if role not in ROLES:
            raise DaemonError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        sends = role in ("all", "worker")
        serves = role in ("all", "intake")
        transports = self._transports() if sends else {}
        if sends:
            self.worker = Worker(store, settings, self.config, transports, metrics=self.metrics)
        # Build the optional parts before anything runs: one that cannot be
        # built (an unresolvable API token) stops the start with nothing to undo.
        try:
            api = self._api(store) if self._want_api and serves else None
            health = self._health(store) if self._want_health and sends else None
            incoming = self._incoming(store) if settings.incoming and serves else None
        except Exception as exc:
            await _close_all(transports)
            raise DaemonError(f"cannot start: {exc}") from exc
        parts: dict[str, asyncio.Task[Any]] = {
            "config reload": asyncio.create_task(self._reload_loop(stop), name="config-reload"),
        }
        if self.worker is not None:
            parts["worker"] = asyncio.create_task(self._work(self.worker, stop), name="worker")
        if serves:
            parts["queue depth"] = asyncio.create_task(self._depth_loop(stop), name="queue-depth")
        if api is not None:
            parts["api"] = asyncio.create_task(self._serve(api), name="api")
        if health is not None:
            parts["health"] = asyncio.create_task(health.run(stop), name="health")
        for name, part in (incoming.tasks() if incoming is not None else {}).items():
            parts[name] = asyncio.create_task(part(stop), name=name)
        log.info("daemon %s running: store %s, config revision %s, parts: %s",
                 settings.worker_id, getattr(store, "location", "?"),
                 self.config.current.revision, ", ".join(parts),
                 extra={"worker_id": settings.worker_id, "role": role})
        self.ready.set()
        if self._freeze_gc:
            # Everything built so far (FastAPI, pydantic, SQLAlchemy, the config)
            # lives as long as the process: out of the collector's sight, the
            # collections that per-message garbage triggers no longer rescan it
            # (~0.2 ms of CPU per message in bench/dispatch.py). Only for a process
            # of its own: a host process (the tests) may still want those collected.
            gc.collect()
            gc.freeze()

        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({stopping, *parts.values()}, return_when=asyncio.FIRST_COMPLETED)
        failed = [(name, t) for name, t in parts.items() if t.done() and not stop.is_set()]
        stop.set()
        stopping.cancel()
        if self.api_server is not None:
            self.api_server.should_exit = True
        results = await asyncio.gather(*parts.values(), return_exceptions=True)
        await _close_all(transports)
        errors = [f"{name}: {r}" for name, r in zip(parts, results, strict=True)
                  if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
        if failed and not errors:
            errors = [f"{name} ended unexpectedly" for name, _ in failed]
        if errors:
            raise DaemonError("; ".join(errors))
        log.info("daemon %s stopped", settings.worker_id)

    async def _work(self, worker: Worker, stop: asyncio.Event) -> None:
        fd = self.settings.wake_fd
        if fd is None:
            await worker.run(stop)
            return
        # A separate intake process wakes this worker through the pipe.
        with wake_on(fd, worker.wake):
            await worker.run(stop)

    async def _first_config(self, stop: asyncio.Event) -> bool:
        """Load the live config before anything sends; False if stopped meanwhile."""
        assert self.config is not None
        pause = STORE_RETRY_S[0]
        while not stop.is_set():
            try:
                await self.config.refresh()
            except StoreError as exc:
                log.error("cannot read the live config, retrying in %.1fs: %s", pause, exc)
                await _wait(stop, pause)
                pause = min(pause * 2, STORE_RETRY_S[1])
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
        from reconciler.mail.graph.transport import GraphTransport
        from reconciler.mail.smtp.transport import SmtpTransport

        # One per daemon: it pools connections per server and shares the
        # selector with the health monitor.
        transports: dict[str, Transport] = {
            "smtp": SmtpTransport(ca_file=self.settings.ca_file, selector=self.selector,
                                  token_provider=self.token_provider)}
        # One per daemon too: Graph's 4-requests-per-mailbox limit is kept in it.
        transports["graph"] = GraphTransport(ca_file=self.settings.ca_file,
                                             token_provider=self.token_provider,
                                             proxies=self._proxy_for)
        # EWS threads and exchangelib accounts are per server inside it; it
        # shares the selector so EWS fails over and back like SMTP.
        from reconciler.mail.ews.transport import EwsTransport

        transports["ews"] = EwsTransport(ca_file=self.settings.ca_file, selector=self.selector,
                                         token_provider=self.token_provider,
                                         proxy_lookup=self._proxy_for)
        return transports

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

    def _api(self, store: Store) -> Any:
        if not _installed(API_MODULE):
            log.info("no HTTP API in this installation (%s not found)", API_MODULE)
            return None
        import uvicorn

        module = importlib.import_module(API_MODULE)
        assert self.config is not None
        app = module.create_api(store, self.settings, self.metrics, self.config.holder)
        intake = getattr(getattr(app, "state", None), "intake", None)
        if self.worker is not None and intake is not None:
            # Same process: new messages go to the worker directly when it has room,
            # and the intake wakes it only for those it stored queued.
            intake.hand_off_to(self.worker, self.worker.wake)
        elif self.settings.wake_fd is not None:
            # The workers are other processes.
            with contextlib.suppress(AttributeError):
                app.state.wake_worker = WakeSender(self.settings.wake_fd)
        config = uvicorn.Config(app, host=self.settings.listen_host,
                                port=self.settings.listen_port, log_config=None,
                                lifespan="on",
                                # One log line per request cost ~5% of the CPU per
                                # message; the API logs refusals and failures itself.
                                access_log=False)
        self.api_server = _uvicorn_server_class()(config)
        return self.api_server

    async def _serve(self, server: Any) -> None:
        try:
            await server.serve()
        except SystemExit:
            # uvicorn exits the process when it cannot bind; here that is one
            # failed part, reported like the others.
            raise DaemonError(
                f"the API could not listen on {self.settings.listen_host}:"
                f"{self.settings.listen_port} (see the log line before)") from None

    def _incoming(self, store: Store) -> Any:
        """Fetch loops per IncomingServer and the event sink (reconciler.incoming.service)."""
        from reconciler.incoming.service import incoming_parts
        from reconciler.runtime.notifier import AdminMail, Notifier

        assert self.config is not None
        notifier = Notifier(self.settings.notify_webhook,
                            mail=AdminMail(store, self.config.holder))
        self.incoming = incoming_parts(store, self.settings, notifier=notifier,
                                       token_provider=self.token_provider)
        return self.incoming

    def _health(self, store: Store) -> Any:
        if not _installed(HEALTH_MODULE):
            log.info("no health monitor in this installation (%s not found)", HEALTH_MODULE)
            return None
        module = importlib.import_module(HEALTH_MODULE)
        monitor_class = getattr(module, "HealthMonitor", None)
        if monitor_class is None:
            monitor_class = importlib.import_module(f"{HEALTH_MODULE}.monitor").HealthMonitor
        assert self.config is not None
        from reconciler.runtime.notifier import AdminMail, Notifier

        # Transitions are logged, posted to the webhook and mailed to the namespace's
        # adminNotifications.emails through the outbox.
        notifier = Notifier(self.settings.notify_webhook,
                            mail=AdminMail(store, self.config.holder))
        self.health = monitor_class(store, self.settings, self.metrics, self.config.holder,
                                    self.selector, notifier=notifier,
                                    token_provider=self.token_provider)
        return self.health


@functools.cache
def _uvicorn_server_class() -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # The daemon handles SIGTERM/SIGINT and sets should_exit itself.
            yield

    return Server


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
