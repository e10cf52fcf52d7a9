"""The health monitor (SPEC O6, O9, X4): probe every enabled server periodically,
keep its status, steer failover, and notify on transitions.

Each cycle the leader probes the main host and the alternate host (if any) of
every enabled server of the live config, a bounded number at a time. Then:

- the :class:`HostSelector` learns the main host's state: down when it cannot
  be reached (the transport's failover rule), healthy again when every check
  passes, so traffic returns to the main host without a restart (O6);
- the store gets a :class:`HealthRecord` per server, merged into its status
  (P7: never spec, never drift); the server's state is the state of the host
  sends go to first;
- ``server_up`` is set per server;
- transitions (compared with the stored record, so a restart or a new leader
  does not re-announce a known outage) go to the :class:`Notifier`.

With several daemons on one PostgreSQL store only the holder of the leader
lock probes (X4); the others read the leader's records each cycle and apply
them to their own selectors and metrics, so every daemon fails over and back
together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from reconciler.config.desired import ResourceKey
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.health import record as rec
from reconciler.health.diagnose import likely_fix
from reconciler.health.probes import cannot_reach, endpoint_of, probe_server, supports
from reconciler.mail.failover import Endpoint, HostSelector
from reconciler.mail.probe_options import ProbeOptions
from reconciler.mail.steps import ProbeReport
from reconciler.oauth.source import TokenProvider
from reconciler.runtime.fallback import Reachability
from reconciler.runtime.live_config import ConfigHolder
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.notifier import (
    FAILBACK,
    FAILOVER,
    RECOVERED,
    UNREACHABLE,
    Notifier,
    Transition,
)
from reconciler.runtime.settings import DaemonSettings
from reconciler.state.base import Store
from reconciler.state.contract import Leadership

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8
# The role whose leader alone probes when daemons share a store (``store.leases``).
LEADER_ROLE = "health leader"


@dataclass(frozen=True)
class ServerCheck:
    """One server's probes in one cycle and the record made of them."""

    key: ResourceKey
    server: OutgoingServer
    main: ProbeReport
    alternate: ProbeReport | None
    record: rec.HealthRecord | None = None


@dataclass(frozen=True)
class Cycle:
    leader: bool
    checks: dict[ResourceKey, ServerCheck] = field(default_factory=dict)
    transitions: tuple[Transition, ...] = ()


class HealthMonitor:
    def __init__(
        self,
        store: Store,
        settings: DaemonSettings,
        metrics: DaemonMetrics,
        config: ConfigHolder,
        selector: HostSelector,
        notifier: Notifier | None = None,
        *,
        token_provider: TokenProvider | None = None,
        leadership: Leadership | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        probe_options: ProbeOptions | None = None,
        reachability: Reachability | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics
        self._config = config
        self._selector = selector
        self._notifier = notifier or Notifier(settings.notify_webhook)
        self._leadership = leadership
        self._limit = asyncio.Semaphore(max(concurrency, 1))
        self._options = probe_options or ProbeOptions(ca_file=settings.ca_file,
                                                      token_provider=token_provider)
        if self._options.proxy_lookup is None:  # the proxies of the revision being checked
            self._options.proxy_lookup = lambda server: config.current.proxy_for(server)
        self._exported: set[tuple[str, str]] = set()
        self.reachability = reachability or Reachability()  # read by dispatch (O15)

    async def run(self, stop: asyncio.Event) -> None:
        """Check every ``health_interval_seconds`` until ``stop`` is set."""
        try:
            while not stop.is_set():
                try:
                    await self.probe_once()
                except Exception:  # one bad cycle must not end health checking
                    log.exception("health check cycle failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._settings.health_interval_seconds)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._leadership is not None:
            await asyncio.to_thread(self._leadership.release)

    async def probe_once(self) -> Cycle:
        """One cycle: probe and record as the leader, or follow the leader's records."""
        if self._leadership is None:
            self._leadership = self._store.leases.leader(LEADER_ROLE)
        leading = await asyncio.to_thread(self._leadership.acquire)
        servers = self._servers()
        if not leading:
            await self._follow(servers)
            return Cycle(leader=False)
        checks = await asyncio.gather(*(self._check(key, s) for key, s in servers.items()))
        for check in checks:
            self._steer(check)
        stamped = [self._with_active(c) for c in checks]
        recorded, transitions = await asyncio.to_thread(self._record, stamped)
        self._export({c.key: c.record for c in recorded if c.record is not None})
        await asyncio.gather(*(self._notifier.notify(t) for t in transitions))
        return Cycle(True, {c.key: c for c in recorded}, tuple(transitions))

    # -- probing -------------------------------------------------------------

    def _servers(self) -> dict[ResourceKey, OutgoingServer]:
        found: dict[ResourceKey, OutgoingServer] = {}
        for namespace in self._config.current.namespaces.values():
            for server in namespace.servers.values():
                if not server.spec.enabled or not supports(server):
                    continue  # protocols without a check are reported as not checked
                try:
                    endpoint_of(server)
                except ValueError:
                    continue  # readiness reports an incomplete server at send time
                key = ResourceKey(server.kind, server.metadata.namespace, server.metadata.name)
                found[key] = server
        return found

    async def _check(self, key: ResourceKey, server: OutgoingServer) -> ServerCheck:
        has_alternate = bool(server.spec.alternate_host)
        main, alternate = await asyncio.gather(
            self._probe(server, alternate=False),
            self._probe(server, alternate=True) if has_alternate else _none(),
        )
        return ServerCheck(key, server, main, alternate)

    async def _probe(self, server: OutgoingServer, *, alternate: bool) -> ProbeReport:
        async with self._limit:
            return await probe_server(server, alternate=alternate, options=self._options)

    def _steer(self, check: ServerCheck) -> None:
        main = check.main.endpoint
        assert main is not None
        if check.main.ok:
            self._selector.mark_healthy(main.host, main.port)
        elif cannot_reach(check.main):
            self._selector.mark_down(main, check.main.error or "unreachable")

    def _with_active(self, check: ServerCheck) -> ServerCheck:
        """Attach a record (without history yet) saying which host sends use now."""
        try:
            active = self._selector.active(check.server.spec)
        except ValueError:  # no host of its own to fail over between (Graph: an endpoint URL)
            assert check.main.endpoint is not None
            active = check.main.endpoint
        report = check.alternate if active.alternate and check.alternate else check.main
        failed = report.failed
        hosts = {rec.MAIN: _host(check.main)}
        if check.alternate is not None:
            hosts[rec.ALTERNATE] = _host(check.alternate)
        endpoint = report.endpoint or active
        hint = likely_fix(failed, check.server, endpoint) if failed else ""
        record = rec.HealthRecord(
            state=rec.REACHABLE if report.ok else rec.UNREACHABLE,
            last_checked=report.checked_at,
            last_change=report.checked_at,
            active_host=rec.ALTERNATE if active.alternate else rec.MAIN,
            hosts=hosts,
            last_error=report.error,
            failed_step=str(failed.step) if failed else None,
            hint=hint or None,
            checked_by=self._settings.worker_id,
        )
        return replace(check, record=record)

    # -- the store (runs in a worker thread) ----------------------------------

    def _record(self, checks: Iterable[ServerCheck]) -> tuple[list[ServerCheck],
                                                              list[Transition]]:
        done: list[ServerCheck] = []
        transitions: list[Transition] = []
        for check in checks:
            assert check.record is not None
            status = self._store.status_get(check.key)
            before = rec.read(status)
            record = check.record
            if before is not None and before.state == record.state:
                record = replace(record, last_change=before.last_change)
            self._store.status_put(check.key, rec.merged(status, record))
            transition = _transition(check.key, before, record)
            if transition is not None:
                transitions.append(transition)
            done.append(replace(check, record=record))
        return done, transitions

    def _read(self, keys: Iterable[ResourceKey]) -> dict[ResourceKey, rec.HealthRecord]:
        records = {key: rec.read(self._store.status_get(key)) for key in keys}
        return {key: record for key, record in records.items() if record is not None}

    # -- following the leader ------------------------------------------------

    async def _follow(self, servers: dict[ResourceKey, OutgoingServer]) -> None:
        records = await asyncio.to_thread(self._read, servers.keys())
        for key, server in servers.items():
            record = records.get(key)
            main = record.hosts.get(rec.MAIN) if record else None
            endpoint = endpoint_of(server)
            if main is None or main.address != endpoint.address:
                continue  # no record yet, or it is about a host the spec no longer names
            if main.reachable:
                self._selector.mark_healthy(endpoint.host, endpoint.port)
            elif main.cannot_reach:
                self._selector.mark_down(endpoint, main.error or "unreachable")
        self._export({k: r for k, r in records.items() if k in servers})

    # -- metrics -------------------------------------------------------------

    def _export(self, records: dict[ResourceKey, rec.HealthRecord]) -> None:
        exported: set[tuple[str, str]] = set()
        self.reachability.replace({(k.namespace, k.name): r.last_change
                                   for k, r in records.items() if all_down(r)})
        for key, record in records.items():
            labels = (key.namespace, key.name)
            self._metrics.server_up.labels(*labels).set(1.0 if record.reachable else 0.0)
            exported.add(labels)
        for labels in self._exported - exported:  # removed or disabled since
            with contextlib.suppress(KeyError):
                self._metrics.server_up.remove(*labels)
        self._exported = exported


def all_down(record: rec.HealthRecord) -> bool:
    """Every host Unreachable: the state of the active one, and no other answering."""
    return not record.reachable and not any(h.reachable for h in record.hosts.values())


async def _none() -> None:
    return None


def _host(report: ProbeReport) -> rec.HostHealth:
    endpoint: Endpoint | None = report.endpoint
    failed = report.failed
    return rec.HostHealth(
        address=endpoint.address if endpoint else "",
        state=rec.REACHABLE if report.ok else rec.UNREACHABLE,
        error=report.error,
        step=str(failed.step) if failed else None,
        failure=str(failed.failure) if failed and failed.failure else None,
        cannot_reach=cannot_reach(report),
    )


def _transition(key: ResourceKey, before: rec.HealthRecord | None,
                after: rec.HealthRecord) -> Transition | None:
    old = before.state if before is not None else rec.UNKNOWN
    event = None
    if after.state == rec.UNREACHABLE and old != rec.UNREACHABLE:
        event = UNREACHABLE
    elif after.state == rec.REACHABLE and old == rec.UNREACHABLE:
        event = RECOVERED
    elif before is not None and before.active_host != after.active_host:
        # Same state, other host: mail still flows, but an admin should know why.
        event = FAILOVER if after.active_host == rec.ALTERNATE else FAILBACK
    if event is None:
        return None
    active = after.hosts.get(after.active_host)
    main = after.hosts.get(rec.MAIN)
    error, step, hint = after.last_error, after.failed_step, after.hint
    if event in (FAILOVER, FAILBACK):  # about the main host, which is not the active one
        error, step, hint = (main.error, main.step, None) if main else (None, None, None)
    return Transition(
        key=key, event=event, old_state=old, new_state=after.state,
        at=datetime.now(UTC), error=error, failed_step=step,
        hint=hint, active_host=after.active_host,
        address=(main.address if event == FAILBACK and main else
                 active.address if active else None),
    )
