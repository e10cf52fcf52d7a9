"""One IncomingServer's fetch loop (SPEC I1, I6, I7, I8); the runner starts and stops it.

One cycle::

    lease (one daemon per server) -> apply in progress? wait, then take the new config
    -> connect -> error folder full? stop fetching (notify once)
    -> for each mail (at most ``batch``): pipeline -> commit -> mark done | error folder
    -> IDLE (or the fetch interval) -> again

- **Durable first.** A mail's marker, audit lines, ticket event and Message-ID
  are written together, a fetch call's mails in one transaction (a group commit:
  SQLite syncs the disk on every commit), and only then marked done on the
  server. A crash in between leaves the mail unread there but done in the store,
  and the fetcher skips it. Message-IDs judged but not yet committed catch
  duplicates within the batch.
- **Error folder (I6).** A mail the pipeline could not handle at all goes there
  (IMAP, when enabled) after its outcome and sealed details are stored; with no
  marker written, a failed move means it is judged again next cycle. At
  ``stopFetchingAfter`` mails there the server stops until ``reconcile incoming retry``.
- **Connection failures (I7).** At ``failureNotifyThreshold`` failed sessions in a
  row the admins are notified once, and again when one works; the count and last
  error are the server's fetch state (``reconcile incoming status``).

The pipeline (CPU work, blocking store lookups) and every store call run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from reconciler.config.models.mail_settings import MailSettingsSpec
from reconciler.incoming import notices
from reconciler.incoming.pipeline.context import PipelineContext, require_directory
from reconciler.incoming.pipeline.event import PipelineResult
from reconciler.incoming.pipeline.run import process
from reconciler.incoming.servers import ServerConfig, proxy_of
from reconciler.incoming.store import JudgedMail
from reconciler.mail.fetcher import FetchedMail, Fetcher, FetchError
from reconciler.runtime.backoff import first_set
from reconciler.state.base import AuditStatus, StoreError
from reconciler.state.contract import ServerState, bare_id

if TYPE_CHECKING:
    from reconciler.incoming.runner import IncomingRunner

log = logging.getLogger(__name__)

PAUSED_APPLY = "an apply is changing the configuration"
CONFIG_PAUSE = "configuration: "
STORE_RETRY_S = 5.0
# Judged mails are committed together at the end of a fetch call, or earlier once
# their raw bytes reach this much: memory stays bounded with large attachments.
FLUSH_BYTES = 16 * 1024 * 1024
T = TypeVar("T")


class ServerLoop:
    """Fetches one IncomingServer until its config changes or the daemon stops."""

    def __init__(self, runner: IncomingRunner, config: ServerConfig,
                 daemon_stop: asyncio.Event) -> None:
        self.runner = runner
        self.config = config
        self.server = config.server
        self.namespace, self.name = config.id
        self.where = f"{self.namespace}/{self.name}"  # for log lines
        self.daemon_stop = daemon_stop
        self.stopping = asyncio.Event()
        # Inside runner.refresh (or waiting for it): a reload that stops this loop must
        # not wait for it, since this loop waits for that reload.
        self.refreshing = False
        self.fetcher: Fetcher | None = None
        self.context: PipelineContext | None = None
        self.cycles = 0
        self.processed = 0
        self.paused: str | None = None
        self.leading = False
        self._store = runner.incoming
        self._pending_ids: dict[str, tuple[str, str] | None] = {}

    @property
    def stopped(self) -> bool:
        return self.stopping.is_set() or self.daemon_stop.is_set()

    @property
    def interval(self) -> float:
        override = self.runner.options.interval_override
        return override if override is not None else self.server.spec.fetch_interval_minutes * 60

    async def run(self) -> None:
        try:
            self.context = self._build_context()
        except LookupError as exc:
            # A missing filter or spam filter must not be fetched around: wait for a fix.
            await self._set_paused(f"{CONFIG_PAUSE}{exc}")
            log.error("incoming server %s is not fetched: %s", self.where, exc)
            await self._sleep(None)
            return
        with contextlib.suppress(StoreError):  # an earlier revision's pause is over now
            state: ServerState = await self._mine(self._store.server_state)
            if (state.paused or "").startswith(CONFIG_PAUSE):
                await self._set_paused(None)
        try:
            while not self.stopped:
                try:
                    await self._cycle()
                except StoreError as exc:
                    log.error("incoming server %s: the store failed (%s); trying again "
                              "in %.0fs", self.where, exc, STORE_RETRY_S)
                    await self._close_fetcher()
                    await self._sleep(STORE_RETRY_S)
                finally:
                    self.cycles += 1
                    await self.runner.cycled()
        finally:
            await self._close_fetcher()
            if self.leading:
                with contextlib.suppress(Exception):
                    await self._mine(self._store.release, self.runner.owner)

    def _build_context(self) -> PipelineContext:
        namespace = self.namespace
        store = self._store
        pending = self._pending_ids  # judged in this batch, not committed yet

        def seen(message_id: str) -> bool:
            return bare_id(message_id) in pending or store.seen_message_id(namespace, message_id)

        def thread(message_ids: Sequence[str]) -> tuple[str, str] | None:
            for message_id in message_ids:
                found = pending.get(bare_id(message_id))
                if found is not None:
                    return found
            return store.thread_lookup(namespace, message_ids)

        context = PipelineContext.from_resources(
            self.server, self.config.resources, directory=self.runner.directory,
            seen_message_id=seen, thread_lookup=thread,
            sent_lookup=lambda message_id: store.sent_entries(namespace, message_id))
        require_directory(context)
        return context

    async def _mine(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call a store method about this server, in a thread (store calls block)."""
        return await asyncio.to_thread(method, self.namespace, self.name, *args, **kwargs)

    # -- one cycle -------------------------------------------------------------

    async def _cycle(self) -> None:
        options = self.runner.options
        self.leading = await self._mine(self._store.claim, self.runner.owner,
                                        lease_seconds=options.lease_seconds)
        if not self.leading:
            await self._close_fetcher()  # another daemon fetches this server
            await self._sleep(options.lease_seconds / 3)
            return
        if await self._apply_in_progress():
            await self._wait_out_apply()
            return
        try:
            fetched = await self._fetch_once()
        except FetchError as exc:
            await self._close_fetcher()
            await self._failed(exc)
            await self._sleep(self.interval)
            return
        if fetched is None:  # stopped by a full error folder
            await self._sleep(self.interval)
        elif fetched < options.batch and not self.stopped:
            await self._wait_for_new()

    async def _fetch_once(self) -> int | None:
        """Connect, check the error folder, process one batch; None when stopped by it."""
        fetcher = self.fetcher
        if fetcher is None:
            fetcher = self.fetcher = self.runner.fetcher_factory(
                self.server, token_provider=self.runner.token_provider,
                ca_file=self.runner.ca_file,
                proxy_lookup=lambda server: proxy_of(server, self.config.resources))
        await fetcher.connect()
        count = await self._error_folder_count(fetcher)
        limit = self.server.spec.error_folder.stop_fetching_after
        if count is not None and limit is not None and count >= limit:
            await self._succeeded(count)
            await self._stop_for_error_folder(count)
            return None
        if self.paused is not None:
            await self._set_paused(None, error_folder_count=count)
        processed = 0
        pending: list[tuple[FetchedMail, JudgedMail]] = []
        size = 0
        try:
            async for mail in fetcher.fetch(self._is_done, limit=self.runner.options.batch):
                pending.append((mail, await self._judge(fetcher, mail)))
                processed += 1
                size += len(mail.raw)
                if size >= FLUSH_BYTES or self.stopped:
                    await self._flush(fetcher, pending)
                    pending, size = [], 0
                if self.stopped:
                    break
        except FetchError:
            # The session broke: keep what was judged (durable, not yet marked done;
            # the markers keep it from being judged twice) and let the cycle count it.
            await self._flush(fetcher, pending, mark=False)
            raise
        await self._flush(fetcher, pending)
        if processed:
            count = await self._error_folder_count(fetcher)
        await self._succeeded(count)
        return processed

    async def _is_done(self, marker: str) -> bool:
        retention = self.runner.options.marker_retention_seconds
        if retention is None:
            return await self._mine(self._store.is_done, marker)
        refresh_before = datetime.now(UTC) - timedelta(seconds=retention / 2)
        return await self._mine(self._store.is_done_refreshing, marker,
                                refresh_before=refresh_before)

    async def _judge(self, fetcher: Fetcher, mail: FetchedMail) -> JudgedMail:
        assert self.context is not None
        result: PipelineResult = await asyncio.to_thread(
            process, mail.raw, self.context, received_at=mail.received_at)
        to_error = result.move_to_error_folder and self._has_error_folder(fetcher)
        if result.event is not None and result.message_id:
            ticket = result.event.ticket
            self._pending_ids[bare_id(result.message_id)] = (
                (ticket.module, ticket.number) if ticket is not None else None)
        return JudgedMail(mail.marker, result, mail.raw, to_error)

    async def _flush(self, fetcher: Fetcher, pending: list[tuple[FetchedMail, JudgedMail]], *,
                     mark: bool = True) -> None:
        """Commit the judged mails in one transaction, then tell the server about each."""
        if not pending:
            return
        recorded = await self._mine(self._store.record_many, [judged for _, judged in pending])
        self._pending_ids.clear()
        for (mail, outcome), done in zip(pending, recorded, strict=True):
            self.processed += 1
            # A bounce queued a delivery event (O14), a processed mail a ticket event.
            queued = done.event_id is not None or outcome.result.status == AuditStatus.BOUNCED
            if queued and self.runner.on_event is not None:
                self.runner.on_event()
            if outcome.result.notices and not done.duplicate_marker:
                await self._queue_notices(outcome.result, mail.marker)
        if not mark:
            return
        folder = self.server.spec.error_folder
        for mail, outcome in pending:
            result = outcome.result
            if not outcome.to_error_folder:
                await fetcher.mark_done(mail)
                continue
            await fetcher.move_to_error_folder(mail)
            log.warning("incoming server %s: mail %s moved to %s: %s", self.where, mail.marker,
                        folder.name, result.reason)
            if folder.notify:
                await self._notify(notices.moved_to_error_folder(
                    self.server, result.code, result.reason))

    def _has_error_folder(self, fetcher: Fetcher) -> bool:
        return self.server.spec.error_folder.enabled and fetcher.supports_error_folder

    async def _error_folder_count(self, fetcher: Fetcher) -> int | None:
        return await fetcher.error_folder_count() if self._has_error_folder(fetcher) else None

    # -- bookkeeping (I6, I7) ------------------------------------------------------

    async def _succeeded(self, error_folder_count: int | None) -> None:
        before: ServerState = await self._mine(self._store.fetch_succeeded,
                                               error_folder_count=error_folder_count)
        if before.failure_notified:
            await self._notify(notices.recovered(self.server, before.consecutive_failures))
        if before.consecutive_failures:
            log.info("incoming server %s fetches again after %d failure(s)",
                     self.where, before.consecutive_failures)

    async def _failed(self, exc: FetchError) -> None:
        state = await self._mine(self._store.fetch_failed, str(exc.kind), exc.user_text)
        threshold = self.server.spec.failure_notify_threshold
        log.warning("incoming server %s: fetching failed (%d in a row): %s", self.where,
                    state.consecutive_failures, exc.user_text)
        if state.consecutive_failures >= threshold and not state.failure_notified \
                and self._settings().incoming_notices.connection_failures:
            await self._notify(notices.unreachable(
                self.server, state.consecutive_failures, exc.message,
                str(exc.kind), exc.likely_fix or None))
            await self._mine(self._store.set_notified)

    async def _stop_for_error_folder(self, count: int) -> None:
        folder = self.server.spec.error_folder
        reason = (f"the error folder {folder.name} holds {count} mails "
                  f"(stopFetchingAfter {folder.stop_fetching_after})")
        before = await self._set_paused(reason, error_folder_count=count)
        if before is None or before.paused != reason:
            log.warning("incoming server %s stopped fetching: %s", self.where, reason)
            await self._notify(notices.stopped(self.server, count))

    async def _set_paused(self, reason: str | None, *,
                          error_folder_count: int | None = None) -> ServerState | None:
        self.paused = reason
        try:
            return await self._mine(self._store.set_paused, reason,
                                    error_folder_count=error_folder_count)
        except StoreError as exc:
            log.error("incoming server %s: cannot record its state: %s", self.where, exc)
            return None

    def _settings(self) -> MailSettingsSpec:
        return self.context.settings if self.context is not None else MailSettingsSpec()

    async def _notify(self, transition: notices.IncomingTransition) -> None:
        notifier = self.runner.notifier
        if notifier is None:
            log.warning("%s", transition.summary())
            return
        try:
            await notifier.notify(transition)
        except Exception:  # a notification must never stop fetching
            log.exception("incoming: notification %s failed", transition.event)

    async def _queue_notices(self, result: PipelineResult, marker: str) -> None:
        """Stripped attachments (I5): tell the sender and the namespace's admins, by mail."""
        settings = self._settings()
        if not settings.incoming_notices.stripped_attachments:
            return  # switched off: the audit still names what was stripped
        admins = list(settings.admin_notifications.emails)
        requests = notices.stripped_attachment_mails(result.notices, self.namespace, self.name,
                                                     marker, admins)
        if not requests:
            return
        try:
            await asyncio.to_thread(self.runner.store.outbox.enqueue_many, requests)
        except Exception as exc:
            log.error("incoming server %s: notice about stripped attachments not queued: "
                      "%s", self.where, exc)

    # -- waiting -----------------------------------------------------------------

    async def _apply_in_progress(self) -> bool:
        lock = await asyncio.to_thread(self.runner.store.current_lock)
        return lock is not None and lock.operation == "apply"

    async def _wait_out_apply(self) -> None:
        await self._close_fetcher()  # the apply may change host, folder or credentials
        previous = self.paused
        await self._set_paused(PAUSED_APPLY)
        log.info("incoming server %s: fetching paused while an apply runs", self.where)
        while not self.stopped and await self._apply_in_progress():
            self.cycles += 1  # a look at the lock counts as a (fetch-less) cycle
            await self.runner.cycled()
            await self._sleep(self.runner.options.pause_poll_seconds)
        await self._set_paused(None if previous == PAUSED_APPLY else previous)
        if not self.stopped:
            # Take the applied revision now rather than at the next reload tick, so
            # not one fetch runs with the configuration the apply replaced.
            self.refreshing = True
            try:
                await self.runner.refresh(self.daemon_stop)
            finally:
                self.refreshing = False

    async def _wait_for_new(self) -> None:
        fetcher = self.fetcher
        if fetcher is None:
            return
        waiting = asyncio.create_task(fetcher.wait_for_new(self.interval))
        stopped = asyncio.create_task(self._sleep(None))
        try:
            await asyncio.wait({waiting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not waiting.done():
                waiting.cancel()
                with contextlib.suppress(BaseException):
                    await waiting
        exc = waiting.exception() if not waiting.cancelled() else None
        if isinstance(exc, FetchError):
            await self._close_fetcher()  # the next cycle reconnects and counts it
        elif exc is not None:
            raise exc

    async def _sleep(self, seconds: float | None) -> None:
        """Sleep, or until stopped (``None``: until stopped)."""
        await first_set(self.stopping, self.daemon_stop, timeout=seconds)

    async def _close_fetcher(self) -> None:
        fetcher, self.fetcher = self.fetcher, None
        if fetcher is not None:
            await fetcher.aclose()
