"""Group commit for the intake API: many submissions, one transaction (SPEC O1).

Each accepted notification must be committed before it is acknowledged. One
transaction per request would cost a commit (an fsync) each; instead the
requests that arrive while a commit is running wait for the next one, which
stores all of them with ``outbox.enqueue_many``. At low load a request is
written at once (nothing to wait for); under load the batches grow by
themselves, so throughput rises without adding latency to a lone request.
An optional ``window`` holds the first request of a batch a little longer
for company.

The database work runs in threads of the committer's own, never on the event
loop, and not in the shared pool either: slow audit searches there cannot
hold up intake. Every waiting request is answered only after the commit that
stored it returned.

**Hand-off.** When the worker runs in this same process and has room, the
committer asks it (:class:`Handoff`) for leases before the write: those
messages are stored already leased to the worker, exactly as a claim would
leave them, and passed to it straight after the commit. That saves each one a
claim transaction (a second commit, and reading the row back) and the wait for
the worker to notice. The worker grants leases only while its queue is empty,
so nothing jumps ahead of older messages; whatever it cannot take is stored
queued and the worker is woken to claim it. If the daemon dies in between, the
lease runs out and the message is claimed like any other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

from reconciler.state.base import (
    EnqueueRequest,
    EnqueueResult,
    LeaseGrant,
    NotificationLike,
    Outbox,
    OutboxMessage,
    StoreError,
)

log = logging.getLogger(__name__)

MAX_BATCH = 256


@dataclass
class IntakeStats:
    """Counters for tuning and the bench: how much batching actually happened."""

    batches: int = 0
    messages: int = 0
    largest_batch: int = 0
    failed_batches: int = 0
    handed_off: int = 0  # stored leased and given straight to the worker


class Handoff(Protocol):
    """A worker in the intake's process that takes new messages without a claim."""

    def reserve(self, wanted: int) -> tuple[LeaseGrant | None, int]:
        """Leases for up to ``wanted`` messages about to be stored: (grant, how many)."""
        ...

    def adopt(self, messages: Sequence[tuple[OutboxMessage, NotificationLike]],
              unused: int) -> None:
        """The messages stored under the grant (with their notifications); ``unused``
        reserved slots were not used (duplicates, a failed write)."""
        ...


_Waiter = tuple[EnqueueRequest, "asyncio.Future[EnqueueResult]"]


class GroupCommitter:
    """Gathers concurrent :meth:`submit` calls into ``enqueue_many`` transactions.

    ``concurrency`` is how many transactions may be in flight at once. 1 suits
    SQLite (one writer anyway) and measured as well as 2-4 on PostgreSQL (a
    longer wait makes a bigger batch); more may help a PostgreSQL far away.
    Belongs to one event loop at a time.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        window: float = 0.0,
        max_batch: int = MAX_BATCH,
        concurrency: int = 1,
    ) -> None:
        if max_batch < 1 or concurrency < 1 or window < 0:
            raise ValueError("max_batch and concurrency must be >= 1, window >= 0")
        self._outbox = outbox
        self._window = window
        self._max_batch = max_batch
        self._concurrency = concurrency
        self._pending: list[_Waiter] = []
        self._in_flight = 0
        self._timer: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # strong refs until done
        self._threads = ThreadPoolExecutor(concurrency, thread_name_prefix="intake-writer")
        self._handoff: Handoff | None = None
        self._wake: Callable[[], None] | None = None
        self.stats = IntakeStats()

    def hand_off_to(self, handoff: Handoff, wake: Callable[[], None]) -> None:
        """Give new messages to ``handoff`` while it has room; call ``wake`` after a
        commit that stored any queued (so it claims them now, not at its next poll)."""
        self._handoff = handoff
        self._wake = wake

    async def submit(self, request: EnqueueRequest) -> EnqueueResult:
        """Store ``request``; returns once it is committed (durable).

        Raises what the store raised (:class:`StoreError` when it is down).
        A caller cancelled while waiting (client gone) does not un-store the
        message: its batch commits anyway and the idempotency key, if any,
        lets the client find it.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[EnqueueResult] = loop.create_future()
        self._pending.append((request, waiter))
        if len(self._pending) >= self._max_batch:
            self._flush(loop)
        elif self._timer is None and self._in_flight < self._concurrency:
            if self._window > 0:
                self._timer = loop.call_later(self._window, self._flush, loop)
            else:
                # call_soon, not now: requests parsed in this same loop turn join in.
                self._timer = loop.call_soon(self._flush, loop)
        return await waiter

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending and self._in_flight < self._concurrency:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._in_flight += 1
            task = loop.create_task(self._write(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _write(self, batch: list[_Waiter]) -> None:
        granted = 0
        try:
            requests = [request for request, _ in batch]
            if self._handoff is not None:
                grant, granted = self._handoff.reserve(len(requests))
                if granted:
                    requests[:granted] = [replace(r, lease=grant) for r in requests[:granted]]
            try:
                loop = asyncio.get_running_loop()
                results = await loop.run_in_executor(self._threads, self._store, requests)
            except asyncio.CancelledError:
                for _, waiter in batch:
                    waiter.cancel()
                raise
            except Exception as exc:
                self.stats.failed_batches += 1
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(exc)
                return
            self.stats.batches += 1
            self.stats.messages += len(batch)
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            for (_, waiter), result in zip(batch, results, strict=True):
                if waiter.done():
                    continue  # a cancelled caller: the message is stored regardless
                if isinstance(result, BaseException):
                    waiter.set_exception(result)
                else:
                    waiter.set_result(result)
            # After the answers: their callbacks are scheduled first, so the 202s go
            # out before the worker starts composing and sending these messages.
            granted = self._pass_on(requests, results, granted)
        finally:
            if granted and self._handoff is not None:
                self._handoff.adopt((), granted)  # the write failed: give the slots back
            self._in_flight -= 1
            if self._pending:
                # These waited while the last commit ran; no window for them.
                self._flush(asyncio.get_running_loop())

    def _pass_on(self, requests: Sequence[EnqueueRequest],
                 results: Sequence[EnqueueResult | BaseException], granted: int) -> int:
        """Hand the leased messages to the worker, wake it for queued ones; 0 (no
        reservation left to give back)."""
        adopted: list[tuple[OutboxMessage, NotificationLike]] = []
        queued = False
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, BaseException) or result.duplicate:
                continue
            if result.leased is not None:
                adopted.append((result.leased, request.notification))
            else:
                queued = True
        if self._handoff is not None and (adopted or granted):
            self._handoff.adopt(adopted, granted - len(adopted))
            self.stats.handed_off += len(adopted)
        if queued and self._wake is not None:
            self._wake()
        return 0

    def _store(self, requests: Sequence[EnqueueRequest]) -> list[EnqueueResult | BaseException]:
        """Runs in a worker thread. One transaction for the batch; if it fails
        for a reason other than the store being unreachable, each request is
        tried alone, so one bad submission cannot sink its neighbours."""
        try:
            return [*_in_key_order(self._outbox, requests)]
        except StoreError:
            raise  # unreachable or broken store: every request would fail the same way
        except Exception as exc:
            if len(requests) == 1:
                raise
            # The type only: a message could quote the notification, and bodies are not logged.
            log.warning("intake batch of %d failed (%s); storing them one by one",
                        len(requests), type(exc).__name__)
        out: list[EnqueueResult | BaseException] = []
        for request in requests:
            try:
                out.append(self._outbox.enqueue_many([request])[0])
            except Exception as exc:
                out.append(exc)
        return out

    async def drain(self) -> None:
        """Wait until every submitted request has been written (shutdown)."""
        while self._pending or self._tasks:
            if self._pending and self._in_flight < self._concurrency:
                self._flush(asyncio.get_running_loop())
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            else:
                await asyncio.sleep(0)

    async def aclose(self) -> None:
        """Drain, then stop the writer threads."""
        await self.drain()
        self._threads.shutdown(wait=False)


def _in_key_order(outbox: Outbox, requests: Sequence[EnqueueRequest]) -> list[EnqueueResult]:
    """``enqueue_many`` with the rows inserted in idempotency-key order.

    Two transactions inserting the same keys in opposite orders (two intake
    batches in flight, or two daemons sharing PostgreSQL) would each wait on
    the other's key: a deadlock, and a failed batch. In one global order they
    only queue. The sort is stable, so the first of repeated keys in a batch
    is still the one stored; results come back in request order.
    """
    order = sorted(range(len(requests)),
                   key=lambda i: (requests[i].namespace, requests[i].idempotency_key or ""))
    stored = outbox.enqueue_many([requests[i] for i in order])
    results: list[EnqueueResult | None] = [None] * len(requests)
    for position, index in enumerate(order):
        results[index] = stored[position]
    return [r for r in results if r is not None]
