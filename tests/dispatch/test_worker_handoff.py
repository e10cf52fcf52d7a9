"""The intake handing new messages straight to the worker of its own process
(daemon.intake ``Handoff``): stored already leased, sent without a claim, never ahead
of queued messages, and released on a stop like any claimed message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from daemon.app_kit import (
    CountingSink,
    RunningWorker,
    audit_of,
    commit,
    enqueue,
    note,
    running_worker,
    sent,
    settings,
    smtp_server,
    until,
)
from peers.smtp import SmtpPeer

from reconciler.daemon.intake import GroupCommitter
from reconciler.state import SqlStore
from reconciler.state.base import EnqueueRequest, EnqueueResult, OutboxState

PeerFactory = Callable[..., SmtpPeer]


def _request(i: int, key: str | None = None) -> EnqueueRequest:
    return EnqueueRequest(note(f"user{i}@corp.example", subject=f"note {i}"), "default", key)


@asynccontextmanager
async def _intake_and_worker(store: SqlStore, *args: Any, **kw: Any
                             ) -> AsyncIterator[tuple[GroupCommitter, RunningWorker]]:
    """A running worker (``running_worker``'s arguments) and an intake committer handing
    off to it, as the daemon wires them in one process; drained before the worker stops."""
    async with running_worker(store, *args, **kw) as running:
        committer = GroupCommitter(store.outbox)
        committer.hand_off_to(running.worker, running.worker.wake)
        try:
            yield committer, running
        finally:
            await committer.aclose()


async def test_new_messages_are_sent_without_a_claim_when_the_worker_has_room(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    peer = peer_factory("plain")
    commit(store, smtp_server("main", peer.port, primary=True))
    async with _intake_and_worker(store) as (committer, running):
        # The first claim finds the queue empty; from then on the worker takes
        # new messages directly.
        first = await committer.submit(_request(0))
        await sent(store, first.id)
        results = await asyncio.gather(*(committer.submit(_request(i)) for i in range(1, 6)))
        for result in results:
            assert result.leased is not None
            assert result.leased.lease_owner == running.worker.owner
            await sent(store, result.id)
    assert committer.stats.handed_off >= 5
    for result in results:
        message = store.outbox.get(result.id)
        assert message is not None and message.attempts == 1  # counted like a claim
        [row] = audit_of(store, result.id)
        assert (row.status, row.attempt, row.recipient) == (
            "SENT", 1, f"user{results.index(result) + 1}@corp.example")
    assert len(peer.messages) == 6


async def test_a_duplicate_key_gives_its_reserved_slot_back(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    peer = peer_factory("plain")
    commit(store, smtp_server("main", peer.port, primary=True))
    async with _intake_and_worker(store) as (committer, running):
        await sent(store, (await committer.submit(_request(0, "ticket-1"))).id)
        again = await committer.submit(_request(0, "ticket-1"))
        assert again.duplicate and again.leased is None
        # Nothing stays promised: the whole room is free for the next messages.
        assert running.worker.reserve(1_000)[1] == 2 * settings().claim_batch
    assert len(peer.messages) == 1


async def test_new_messages_wait_behind_queued_ones(store: SqlStore) -> None:
    with CountingSink(delay=0.05) as sink:
        await _behind_the_queue(store, sink)
    order = [a.rcpt_tos[0] for a in sink.arrivals()]
    assert order[-1] == "user99@corp.example", order


async def _behind_the_queue(store: SqlStore, sink: CountingSink) -> None:
    commit(store, smtp_server("main", sink.port, primary=True, maxConcurrency=1))
    backlog = [enqueue(store, note(f"old{i}@corp.example")) for i in range(6)]
    # Two in flight at most: the first claim takes a full batch, so the queue is not
    # known to be empty and the intake stores the new message queued, behind the rest.
    async with _intake_and_worker(store, settings(claim_batch=2), max_in_flight=2) as (
            committer, _):
        await until(lambda: sink.count() >= 1, "the backlog to start")
        late: EnqueueResult = await committer.submit(_request(99))
        assert late.leased is None
        for outbox_id in (*backlog, late.id):
            await sent(store, outbox_id)


async def test_a_stop_releases_messages_stored_for_the_worker_meanwhile(
    store: SqlStore, peer_factory: PeerFactory
) -> None:
    peer = peer_factory("plain")
    commit(store, smtp_server("main", peer.port, primary=True))
    async with running_worker(store) as running:
        await sent(store, enqueue(store, note("first@corp.example")))
        grant, granted = running.worker.reserve(1)
        assert grant is not None and granted == 1
        halting = asyncio.create_task(running.halt())
        await asyncio.sleep(0.1)
        assert not halting.done()  # the stop waits for the reserved lease
        [stored] = await asyncio.to_thread(
            store.outbox.enqueue_many, [EnqueueRequest(note("late@corp.example"), "default",
                                                       lease=grant)])
        assert stored.leased is not None
        running.worker.adopt([(stored.leased, None)], 0)  # type: ignore[list-item]
        await halting
    message = store.outbox.get(stored.id)
    assert message is not None
    # Given back as if never claimed: the next daemon sends it at once.
    assert (message.state, message.attempts, message.lease_owner) == (
        OutboxState.QUEUED, 0, None)
    assert len(peer.messages) == 1
