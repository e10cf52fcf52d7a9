"""At most ``size`` Graph requests in flight per mailbox (Graph allows 4), and the
counters that show the limit was kept (``GraphTransport.mailbox_stats``, the bench).

A request holds its mailbox slot only while it is on the wire: a send waiting out a
``Retry-After`` (``client.GraphSession``) holds none, so the mailbox's other requests
keep going.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.mail.graph.client import GraphAnswer, HttpClient


@dataclass(slots=True)
class _Queued:
    answer: asyncio.Future[GraphAnswer]
    client: HttpClient
    method: str
    url: str
    content: bytes | None
    headers: dict[str, str]
    timeout: float


class MailboxSlots:
    """The in-flight limit of one mailbox, and the counters that show it was kept.

    ``size`` sender tasks, each one request at a time, take requests from one queue in
    order. A sender that reads an answer writes the next queued request in the same
    step; with a semaphore the freed slot went to a waiting send that the busy event
    loop woke a few ms later, and Graph's pace in a surge was 70/s of 80/s (75/s this
    way, docs/dispatch.md)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_flight = 0
        self.max_in_flight = 0
        self.throttled = 0  # 429/503/504 answers with a Retry-After that was waited out
        self._queue: asyncio.Queue[_Queued] | None = None
        self._senders: list[asyncio.Task[None]] = []
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def request(self, client: HttpClient, method: str, url: str, content: bytes | None,
                      headers: dict[str, str], timeout: float) -> GraphAnswer:
        """One request within the limit; cancelling the caller cancels the request."""
        loop = asyncio.get_running_loop()
        if self._queue is None:  # on the loop of the first send: tasks are loop-bound
            self._loop = loop
            self._queue = asyncio.Queue()
            self._senders = [asyncio.create_task(self._sender(), name=f"graph-sender-{i}")
                             for i in range(self.size)]
        elif loop is not self._loop:
            raise RuntimeError("a GraphTransport belongs to the event loop of its first send")
        answer: asyncio.Future[GraphAnswer] = loop.create_future()
        self._queue.put_nowait(_Queued(answer, client, method, url, content, headers, timeout))
        return await answer

    async def _sender(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        current: list[_Queued] = []  # the request this sender has on the wire

        def abandon(answer: asyncio.Future[GraphAnswer]) -> None:
            # The send gave up (its deadline): stop its request, not the next one.
            if answer.cancelled() and current and current[0].answer is answer:
                task.cancel()

        while True:
            try:
                await self._serve(current, abandon)
            except asyncio.CancelledError:
                if self._closing:
                    raise
                task.uncancel()  # that request is dropped; the sender goes on

    async def _serve(self, current: list[_Queued],
                     abandon: Callable[[asyncio.Future[GraphAnswer]], None]) -> None:
        assert self._queue is not None
        item = await self._queue.get()
        if item.answer.done():  # its send was cancelled while it waited
            return
        current.append(item)
        item.answer.add_done_callback(abandon)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        handed = False
        try:
            result = await item.client.request(item.method, item.url, item.content,
                                               item.headers, item.timeout)
        except Exception as exc:  # the send classifies it
            if not item.answer.done():
                item.answer.set_exception(exc)
        else:
            if self._queue.empty():
                _hand_over(item.answer, result)
            else:
                # Handed over on the loop's next turn, behind the next request: aiohttp
                # writes a request body from a task of its own (Python < 3.12 has no eager
                # tasks), and an answer set now would wake the send first, so its result,
                # its lane and whatever that wakes ran before the next request left (~0.2
                # ms a cycle in a surge, for one more turn of the loop: ~0.04 ms of CPU).
                asyncio.get_running_loop().call_soon(_hand_over, item.answer, result)
            handed = True
        finally:
            self.in_flight -= 1
            current.clear()
            item.answer.remove_done_callback(abandon)
            if not handed and not item.answer.done():  # the sender is closing under it
                item.answer.cancel()

    async def aclose(self) -> None:
        self._closing = True
        senders, self._senders = self._senders, []
        for sender in senders:
            sender.cancel()
        await asyncio.gather(*senders, return_exceptions=True)


def _hand_over(answer: asyncio.Future[GraphAnswer], result: GraphAnswer) -> None:
    if not answer.done():  # not given up by its send meanwhile
        answer.set_result(result)


@dataclass(frozen=True, slots=True)
class MailboxStats:
    size: int
    in_flight: int
    max_in_flight: int
    throttled: int
