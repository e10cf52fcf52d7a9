"""The send loop: outbox -> route -> filter -> compose -> transport -> audit
(SPEC O1-O4, O6-O8, O12; X4).

One :class:`Worker` per daemon claims due messages in batches (leased to
``settings.worker_id``) and runs each as its own task; sends queue per server
in :mod:`lanes`, and :class:`~reconciler.dispatch.group_commit.GroupCommit`
writes the results, many per transaction. How an attempt ends is
:mod:`reconciler.dispatch.attempt`.

Decisions:

- **Routing (O2, O12).** A message without a routing snapshot is routed with
  the config live when its attempt starts. The route is recorded
  (``Outbox.route``) only before a retry is scheduled, the point where a later
  apply could change how it is sent; a message that ends in its first attempt
  carries revision and server in its audit rows instead, free in the group
  commit, where recording every route up front would cost one transaction per
  message. Later attempts use the config as of the recorded revision.
- **Disabling wins over the snapshot.** ``enabled: false`` is the admin's stop
  button: a retry routed to a server disabled since fails (SEND_FAILED "disabled").
- **Message-ID.** From the idempotency key (compose), else from the store's
  lineage and the outbox id: every attempt carries the same Message-ID, so a
  copy sent again after a crash or an ambiguous timeout is recognisable.
- **Attempts** count claims: a message over ``maxAttempts`` without results
  (it keeps killing or stalling its daemon) is failed instead of sent again.
- **Stop.** New claims stop; sends in flight get ``shutdown_grace_seconds``;
  queued results are written; leases still held are released, so another
  daemon (or the next start) takes them at once, not after the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.dispatch.attempt import Attempt, Finished, NotSent, TryLater, read_result
from reconciler.dispatch.compose import compose
from reconciler.dispatch.filters import FilterResult, filter_notification
from reconciler.dispatch.group_commit import GroupCommit
from reconciler.dispatch.lanes import Lanes, lane_width
from reconciler.dispatch.oversize import refuses
from reconciler.dispatch.readiness import server_problems
from reconciler.mail.envelope import Envelope, Notification, plain_errors
from reconciler.mail.outcome import NotSentReason
from reconciler.mail.transport import Transport
from reconciler.runtime.backoff import backoff_seconds, first_set
from reconciler.runtime.fallback import Reachability, primary_fallback
from reconciler.runtime.live_config import ConfigSource
from reconciler.runtime.metrics import DaemonMetrics
from reconciler.runtime.namespace import NamespaceConfig
from reconciler.runtime.settings import DaemonSettings
from reconciler.state.base import (
    AuditStatus,
    LeaseGrant,
    NotificationLike,
    OutboxMessage,
    OutboxState,
    Store,
    StoreError,
    UnknownMessage,
)

log = logging.getLogger(__name__)

STORE_RETRY_S = (0.5, 10.0)  # pause after failed claims, doubling up to the second


class Worker:
    def __init__(self, store: Store, settings: DaemonSettings, config: ConfigSource,
                 transports: Mapping[str, Transport], *, metrics: DaemonMetrics | None = None,
                 max_in_flight: int | None = None, reachability: Reachability | None = None
                 ) -> None:
        self._outbox = store.outbox
        self._health = reachability or Reachability()  # written by the health monitor
        self._settings = settings
        self.owner = settings.worker_id  # the outbox leases' owner
        self._config = config
        self._transports = dict(transports)
        self._metrics = metrics
        self._lanes = Lanes()
        self._batch = max(1, settings.claim_batch)
        self._max_in_flight = max_in_flight or 2 * self._batch
        self.committer = GroupCommit(self._outbox, self.owner)
        self._tasks: set[asyncio.Task[None]] = set()
        self._leased: set[int] = set()  # claimed and not yet recorded: renewed while held
        self._room = asyncio.Event()
        self._wake = asyncio.Event()
        self.stopping = False  # True once a stop has begun: no new sends start
        # Hand-off from the intake (daemon.intake.Handoff): slots promised to messages
        # being stored leased to us, and whether the queue was empty at the last claim
        # (leases are granted only then, so new messages never overtake queued ones).
        self._reserved = 0
        self._drained = False
        self._lineage = store.lineage

    def wake(self) -> None:
        """Claim now instead of after the poll interval (e.g. right after an intake)."""
        self._wake.set()

    # -- hand-off from the intake in this process (daemon.intake.Handoff) ---------

    def reserve(self, wanted: int) -> tuple[LeaseGrant | None, int]:
        if self.stopping or not self._drained or self._config.current.revision <= 0:
            return None, 0
        room = self._max_in_flight - len(self._tasks) - self._reserved
        granted = max(0, min(wanted, room))
        if granted < wanted:
            # The rest are stored queued: claim them before taking new ones directly.
            self._drained = False
        if not granted:
            return None, 0
        self._reserved += granted
        return LeaseGrant(self.owner, self._settings.lease_seconds), granted

    def adopt(self, messages: Sequence[tuple[OutboxMessage, NotificationLike]],
              unused: int) -> None:
        self._reserved -= len(messages) + unused
        if self.stopping:
            return  # still leased to us: released with the rest once reservations settle
        for msg, notification in messages:
            self._start(msg, notification if isinstance(notification, Notification) else None)

    # -- the loop -------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        committer = asyncio.create_task(self.committer.run(), name="group-commit")
        renewer = asyncio.create_task(self._renew_loop(), name="lease-renewal")
        try:
            await self._claim_loop(stop)
        finally:
            await self._shutdown(committer, renewer)

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        failed = 0  # claims failed in a row
        waiting_for_config = False
        while not stop.is_set():
            if self._config.current.revision <= 0:
                if not waiting_for_config:
                    log.info("no configuration has been applied yet; not sending until one is")
                    waiting_for_config = True
                await self._idle(stop, self._settings.poll_interval_seconds)
                continue
            waiting_for_config = False
            room = self._max_in_flight - len(self._tasks)
            if room < min(self._batch, self._max_in_flight):
                # Wait for a group of slots rather than claiming one message at a time.
                self._room.clear()
                await self._idle(stop, None, self._room)
                continue
            limit = min(room, self._batch)
            try:
                batch = await asyncio.to_thread(
                    self._outbox.claim, self.owner, limit, self._settings.lease_seconds)
            except StoreError as exc:
                failed += 1
                pause = backoff_seconds(failed, *STORE_RETRY_S, jitter=0.0)
                log.error("cannot claim outbox messages, retrying in %.1fs: %s", pause, exc)
                await self._idle(stop, pause)
                continue
            failed = 0
            for msg in batch:
                self._start(msg)
            self._drained = len(batch) < limit
            if self._drained:
                await self._idle(stop, self._settings.poll_interval_seconds, self._wake)

    def _start(self, msg: OutboxMessage, parsed: Notification | None = None) -> None:
        self._leased.add(msg.id)
        task = asyncio.create_task(self._handle(msg, parsed), name=f"outbox-{msg.id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    async def _idle(self, stop: asyncio.Event, timeout: float | None,
                    *others: asyncio.Event) -> None:
        await first_set(stop, *others, timeout=timeout)
        self._wake.clear()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._room.set()

    async def _renew_loop(self) -> None:
        lease = self._settings.lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            ids = sorted(self._leased)
            if not ids:
                continue
            try:
                renewed = await asyncio.to_thread(self._outbox.renew, self.owner, ids, lease)
            except StoreError as exc:
                log.error("cannot renew %d leases: %s", len(ids), exc)
                continue
            except Exception:
                log.exception("renewing %d leases failed", len(ids))
                continue
            lost = (set(ids) - set(renewed)) & self._leased  # still ours to finish
            if lost:
                log.warning("leases of outbox messages %s ran out before they could be renewed; "
                            "another daemon may send them too", sorted(lost),
                            extra={"outbox_ids": sorted(lost)})

    async def _shutdown(self, committer: asyncio.Task[None], renewer: asyncio.Task[None]) -> None:
        self.stopping = True
        grace = self._settings.shutdown_grace_seconds
        try:
            if self._tasks:
                log.info("stopping: waiting up to %.0fs for %d messages in flight",
                         grace, len(self._tasks))
                _, late = await asyncio.wait(set(self._tasks), timeout=grace)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            # Wait for intake writes holding our leases, so the release below covers them.
            deadline = time.monotonic() + grace
            while self._reserved > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            self.committer.close()
            try:
                await asyncio.wait_for(asyncio.shield(committer), timeout=max(grace, 1.0))
            except TimeoutError:
                log.error("stopping: %d results could not be recorded; those messages will "
                          "be sent again", self.committer.backlog)
                committer.cancel()
            except Exception:
                log.exception("stopping: recording results failed; unrecorded messages "
                              "will be sent again")
            try:
                released = await asyncio.to_thread(self._outbox.release, self.owner)
            except StoreError as exc:
                log.error("stopping: cannot release leases, they expire within %.0fs: %s",
                          self._settings.lease_seconds, exc)
            else:
                if released:
                    log.info("stopping: released %d unsent messages for the next daemon",
                             released)
            self._leased.clear()
        finally:
            for task in (renewer, committer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- one message ------------------------------------------------------------

    async def _handle(self, msg: OutboxMessage, parsed: Notification | None = None) -> None:
        # Cancelled (stop after the grace period) or None (stopping before the
        # send started): the message stays leased and is released with the rest.
        attempt = Attempt(msg)
        try:
            # A hand-off from the intake comes parsed already; attachment bytes
            # are still read from the store when the send starts, as for a claim.
            notification = (parsed if parsed is not None and not msg.attachments
                            else _without_attachment_bytes(msg))
            attempt.recipients = tuple(dict.fromkeys(m.email for _, m in
                                                     notification.recipients()))
            ns, server = await self._routed(attempt, notification)
            server = self._fallback(attempt, ns, server)
            attempt.server = server.metadata.name
            finished = await self._send(attempt, notification, ns, server)
        except NotSent as stop:
            finished = attempt.not_sent(stop)
        except Exception as exc:
            log.exception("outbox %s: unexpected error", msg.id, extra={"outbox_id": msg.id})
            finished = Attempt(msg).retry_later(f"internal error: {type(exc).__name__}: {exc}")
        if finished is None:
            return
        try:
            recorded = await self.committer.submit(finished.completion, finished.audit)
        finally:
            self._leased.discard(msg.id)  # written (or lost) either way: nothing to renew
        self._count(msg, finished, recorded)

    def _count(self, msg: OutboxMessage, finished: Finished, recorded: bool) -> None:
        if self._metrics is None:
            return
        self._metrics.labelled(self._metrics.sends, msg.namespace, finished.server or "-",
                               str(finished.outcome)).inc()
        if recorded and finished.completion.state == OutboxState.SENT:
            latency = (datetime.now(UTC) - msg.created_at).total_seconds()
            self._metrics.delivery_seconds.observe(max(latency, 0.0))

    async def _with_attachments(self, msg: OutboxMessage, light: Notification) -> Notification:
        """The full notification; attachment bytes are read only when a send is about to
        start, so messages waiting in a lane do not hold them in memory."""
        if not msg.attachments:
            return light
        try:
            payload = await asyncio.to_thread(self._outbox.notification, msg.id)
        except (ValueError, UnknownMessage) as exc:
            raise NotSent(_unusable(exc)) from None
        return _parsed(payload)

    async def _routed(self, attempt: Attempt,
                      notification: Notification) -> tuple[NamespaceConfig, OutgoingServer]:
        msg = attempt.msg
        current = self._config.current
        if msg.routing is None:
            attempt.revision = current.revision
            ns = current.namespaces.get(msg.namespace)
            if ns is None:
                raise NotSent(f"namespace {msg.namespace} has no configuration at revision "
                              f"{current.revision}", NotSentReason.NO_SERVER)
            decision = ns.route(notification.module, notification.context)
            attempt.decision = decision.to_json()
            if decision.server is None:
                raise NotSent(decision.reason, NotSentReason.NO_SERVER)
            if log.isEnabledFor(logging.DEBUG):  # spares the extra dict per message
                log.debug("outbox %s routed to %s", msg.id, decision.reason,
                          extra={"outbox_id": msg.id, "server": decision.server_name,
                                 "config_revision": current.revision})
            return ns, decision.server

        routing = msg.routing
        attempt.revision = routing.config_revision
        attempt.server = routing.server
        try:
            config = await self._config.at(routing.config_revision)
        except StoreError as exc:
            # The store is down or the revision is unknown: try again later
            # rather than sending with a config the message was not routed with.
            raise TryLater(f"cannot load config revision {routing.config_revision}: "
                           f"{exc}") from None
        ns = config.namespaces.get(msg.namespace)
        server = ns.servers.get(routing.server) if ns is not None else None
        if ns is None or server is None:
            raise NotSent(f"server {routing.server} this message was routed to is not in "
                          f"namespace {msg.namespace} at revision {routing.config_revision}",
                          NotSentReason.NO_SERVER)
        now_ns = current.namespaces.get(msg.namespace)
        now_server = now_ns.servers.get(routing.server) if now_ns is not None else None
        if now_server is not None and not now_server.spec.enabled and server.spec.enabled:
            raise NotSent(f"server {routing.server} was disabled at revision "
                          f"{current.revision}, after this message was routed to it",
                          NotSentReason.SERVER_DISABLED)
        return ns, server

    def _fallback(self, attempt: Attempt, ns: NamespaceConfig,
                  server: OutgoingServer) -> OutgoingServer:
        """The namespace's primary when ``server`` has been down too long (O15)."""
        fallback = primary_fallback(ns, server, self._health)
        if fallback is None:
            return server
        attempt.fallback = fallback.details()
        log.info("outbox %s: %s", attempt.msg.id, fallback.reason,
                 extra={"outbox_id": attempt.msg.id, "server": fallback.primary.metadata.name})
        return fallback.primary

    async def _send(self, attempt: Attempt, notification: Notification, ns: NamespaceConfig,
                    server: OutgoingServer) -> Finished | None:
        msg = attempt.msg
        problems = server_problems(server)
        if problems:
            raise NotSent("; ".join(p.detail for p in problems), problems[0].reason)
        transport = self._transports.get(str(server.spec.protocol))
        if transport is None:
            raise NotSent(f"server {server.metadata.name} uses protocol "
                          f"{server.spec.protocol}, which this daemon cannot send with yet")
        policy = ns.retry_policy(server)
        if msg.attempts > policy.max_attempts:
            raise NotSent(f"gave up after {msg.attempts} attempts; the last ones never "
                          "finished (the daemon stopped or hung while sending)")
        recipients = self._filtered(attempt, notification, ns, server)

        lane = (msg.namespace, server.metadata.name)
        async with self._lanes.slot(lane, lane_width(transport, server)):
            if self.stopping:
                return None
            full = await self._with_attachments(msg, notification)
            envelope = self._compose(attempt, full, server, recipients)
            started = time.perf_counter()
            result = await transport.send(envelope, server)
            elapsed = time.perf_counter() - started
        if self._metrics is not None:
            self._metrics.labelled(self._metrics.send_seconds,
                                   server.metadata.name).observe(elapsed)
        finished = read_result(attempt, envelope, result, policy)
        if finished.completion.state == OutboxState.RETRY_WAIT:
            await self._keep_routing(attempt)
        return finished

    def _filtered(self, attempt: Attempt, notification: Notification, ns: NamespaceConfig,
                  server: OutgoingServer) -> FilterResult:
        try:
            recipient_filter = ns.recipient_filter(server)
        except LookupError as exc:
            raise NotSent(str(exc), NotSentReason.SERVER_INCOMPLETE) from None
        result = filter_notification(notification, recipient_filter)
        for ignored in result.ignored:
            attempt.audit.append(attempt.entry(
                AuditStatus.SEND_IGNORED, ignored.reason, recipient=ignored.mailbox.email,
                details={"filter": ignored.filter, "filterType": str(ignored.filter_type),
                         "entry": ignored.entry, "field": ignored.field}))
        if result.empty:
            why = ("every recipient was filtered out" if result.ignored
                   else "the notification has no recipients")
            attempt.recipients = ()
            raise NotSent(why, NotSentReason.NO_RECIPIENTS, OutboxState.IGNORED)
        return result

    def _compose(self, attempt: Attempt, notification: Notification, server: OutgoingServer,
                 recipients: FilterResult) -> Envelope:
        try:
            envelope = compose(notification, server, recipients,
                               message_seed=f"{self._lineage}\0{attempt.msg.id}")
        except ValueError as exc:
            raise NotSent(f"cannot compose the message: {exc}") from None
        if envelope.dropped_attachments and refuses(server):
            # Intake refuses these up front; this one was routed elsewhere there, or the
            # server was switched to refuse since. Sending it without them is what the
            # admin said not to do.
            dropped = "; ".join(f"{d.name!r}: {d.reason}" for d in envelope.dropped_attachments)
            raise NotSent(f"{dropped}; server {server.metadata.name} refuses oversize "
                          "attachments (attachments.oversize: refuse)")
        attempt.message_id = envelope.message_id
        attempt.recipients = envelope.rcpt_to
        return envelope

    async def _keep_routing(self, attempt: Attempt) -> None:
        """Record the routing before the first retry is scheduled (O12)."""
        msg = attempt.msg
        snapshot = attempt.routing()
        if snapshot is None:
            return
        try:
            await asyncio.to_thread(self._outbox.route, msg.id, self.owner, snapshot,
                                    attempt.decision)
        except StoreError as exc:
            # LeaseLost: the completion will tell; any other: the retry is routed afresh.
            log.warning("outbox %s: routing not recorded: %s", msg.id, exc)


def _without_attachment_bytes(msg: OutboxMessage) -> Notification:
    """The notification from the claimed row (which carries attachment names, not bytes):
    enough to route, filter and check the server."""
    return _parsed({**msg.payload, "attachments": []} if msg.attachments else msg.payload)


def _parsed(payload: Mapping[str, Any]) -> Notification:
    try:
        return Notification.model_validate(payload)
    except ValueError as exc:  # pydantic's ValidationError is one
        raise NotSent(_unusable(exc)) from None


def _unusable(exc: Exception) -> str:
    # The fields and what is wrong with them, not pydantic's dump of the stored values.
    why = plain_errors(exc) if isinstance(exc, ValidationError) else str(exc)
    return f"the stored notification is not usable: {why}"
