"""Group commit of send results (DESIGN "Daemon concurrency").

Every finished message needs its outbox row updated and its audit rows written,
durably. One transaction per message would make the store's commit latency (an
fsync) the daemon's throughput limit, so results are written with one
``Outbox.complete_many`` call per group: those that arrive while a group is being
written become the next one, and the first result of a group lingers ``linger``
seconds (5 ms) for company. Nobody waits on a result the way a client waits on
intake (the mail is already delivered), and on SQLite every group takes turns
with intake's writes for the one write lock: the linger cut the daemon's CPU per
message by about a tenth in ``bench/dispatch.py``. A sender waits for its group's
commit, so "finished" means "recorded"; a stop writes what is queued at once.

A store failure loses no results: the group is written again after a pause, in
order, until it succeeds or the committer is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.runtime.backoff import backoff_seconds
from reconciler.state.base import AuditEntry, Completion, Outbox, StoreError

log = logging.getLogger(__name__)

MAX_GROUP = 500
LINGER_S = 0.02
RETRY_PAUSE_S = (0.2, 5.0)  # first and longest pause after failed writes in a row


@dataclass(slots=True)
class _Pending:
    completion: Completion
    audit: Sequence[AuditEntry]
    done: asyncio.Future[bool]


@dataclass(slots=True)
class CommitStats:
    lost: int = 0  # results not recorded: the lease had been taken over
    failures: int = 0  # writes the store refused (and that were tried again)


class GroupCommit:
    """Writes results of ``owner``'s leased messages in groups; ``run`` is its task."""

    def __init__(self, outbox: Outbox, owner: str, *, linger: float = LINGER_S) -> None:
        self._outbox = outbox
        self._owner = owner
        self._linger = linger
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self.stats = CommitStats()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def submit(self, completion: Completion, audit: Sequence[AuditEntry] = ()) -> bool:
        """Queue one result and wait until it is written: True when recorded; False when
        the lease had been taken over (nothing written for the message; its audit rows
        were, since the attempt happened). A cancelled waiter's result is still written."""
        if self._closed.is_set():
            raise RuntimeError("the committer is closed")
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(completion, tuple(audit), done))
        self._wake.set()
        return await asyncio.shield(done)

    def close(self) -> None:
        """Write what is queued, then let ``run`` return."""
        self._closed.set()
        self._wake.set()

    async def run(self) -> None:
        try:
            await self._write_until_closed()
        finally:
            # Cancelled with results still queued (a forced stop): their senders
            # must not wait for ever; the messages stay leased and are sent again.
            for p in self._pending:
                if not p.done.done():
                    p.done.cancel()

    async def _write_until_closed(self) -> None:
        while True:
            await self._wake.wait()
            if self._linger and not self._closed.is_set() and len(self._pending) < MAX_GROUP:
                with contextlib.suppress(TimeoutError):
                    # Woken early by close(): write at once.
                    await asyncio.wait_for(self._closed.wait(), self._linger)
            self._wake.clear()
            failed = 0  # writes failed in a row
            while self._pending:
                group = self._pending[:MAX_GROUP]
                try:
                    result = await asyncio.to_thread(
                        self._outbox.complete_many, self._owner, [p.completion for p in group],
                        audit=[entry for p in group for entry in p.audit])
                except StoreError as exc:
                    self.stats.failures += 1
                    failed += 1
                    pause = backoff_seconds(failed, *RETRY_PAUSE_S, jitter=0.0)
                    log.error("cannot record %d send results, retrying in %.1fs: %s",
                              len(group), pause, exc)
                    await asyncio.sleep(pause)
                    continue
                failed = 0
                del self._pending[: len(group)]
                lost = set(result.lost)
                self.stats.lost += len(lost)
                if lost:
                    log.warning("leases of outbox messages %s were taken over before their "
                                "results were recorded; another daemon will send them again",
                                sorted(lost), extra={"outbox_ids": sorted(lost)})
                for p in group:
                    if not p.done.done():
                        p.done.set_result(p.completion.id not in lost)
            if self._closed.is_set():
                return
