"""A mailbox slot's turnaround (mail.graph.slots): the next queued request leaves before
the send that was answered goes on, and an answer its send no longer waits for is
dropped without upsetting the slot.

The client here is a stand-in for the HTTP client with aiohttp's timing on Python 3.11:
the request line is buffered when the request starts and the bytes leave from a task of
their own, on a later turn of the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from reconciler.mail.graph.client import GraphAnswer
from reconciler.mail.graph.slots import MailboxSlots

ACCEPTED = GraphAnswer(202, {}, b"", "Accepted")


class WriterTaskClient:
    """Answers each request when the test says so; records when its bytes left."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.answers: dict[str, asyncio.Future[GraphAnswer]] = {}
        self.written: dict[str, asyncio.Event] = {}
        self._writers: set[asyncio.Task[None]] = set()
        self.after_answer: dict[str, Callable[[], object]] = {}  # on the loop's next turn

    async def request(self, method: str, url: str, content: bytes | None,
                      headers: Mapping[str, str], timeout: float) -> GraphAnswer:
        answer = self.answers[url] = asyncio.get_running_loop().create_future()
        self.written.setdefault(url, asyncio.Event())
        writer = asyncio.create_task(self._write(url))
        self._writers.add(writer)
        writer.add_done_callback(self._writers.discard)
        got = await answer
        if url in self.after_answer:
            asyncio.get_running_loop().call_soon(self.after_answer[url])
        return got

    async def _write(self, url: str) -> None:
        self.events.append(f"written {url}")
        self.written[url].set()

    async def aclose(self) -> None:
        return None


async def test_the_next_request_leaves_before_the_answered_send_goes_on() -> None:
    slots = MailboxSlots(1)
    client = WriterTaskClient()
    client.written["u2"] = asyncio.Event()

    async def send(url: str) -> None:
        answer = await slots.request(client, "POST", url, b"{}", {}, 5.0)
        assert answer.status_code == 202
        client.events.append(f"answered {url}")

    try:
        first = asyncio.create_task(send("u1"))
        second = asyncio.create_task(send("u2"))
        while "u1" not in client.answers:
            await asyncio.sleep(0)
        client.answers["u1"].set_result(ACCEPTED)
        await asyncio.wait_for(client.written["u2"].wait(), 5)
        await asyncio.wait_for(first, 5)
        # The slot is Graph's again before the first send's result is worked on.
        assert client.events.index("written u2") < client.events.index("answered u1"), \
            client.events
        client.answers["u2"].set_result(ACCEPTED)
        await asyncio.wait_for(second, 5)
        assert slots.in_flight == 0 and slots.max_in_flight == 1
    finally:
        await slots.aclose()


async def test_an_answer_for_a_send_that_gave_up_meanwhile_is_dropped() -> None:
    # The send's deadline passes after its answer was read and before it was handed over:
    # the answer goes nowhere, nothing is reported to the loop, the slot goes on.
    slots = MailboxSlots(1)
    client = WriterTaskClient()
    problems: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: problems.append(context))
    try:
        first = asyncio.create_task(slots.request(client, "POST", "u1", b"{}", {}, 5.0))
        client.after_answer["u1"] = first.cancel  # after the answer was read, before hand-over
        while "u1" not in client.answers:
            await asyncio.sleep(0)
        # Queued behind it, so the answer is handed over on the next turn.
        second = asyncio.create_task(slots.request(client, "POST", "u2", b"{}", {}, 5.0))
        await asyncio.sleep(0)
        client.answers["u1"].set_result(ACCEPTED)
        await asyncio.wait([first], timeout=5)
        while "u2" not in client.answers:
            await asyncio.sleep(0)
        client.answers["u2"].set_result(ACCEPTED)
        assert (await asyncio.wait_for(second, 5)).status_code == 202
        assert first.cancelled()
        assert problems == []
        assert slots.in_flight == 0
    finally:
        loop.set_exception_handler(None)
        await slots.aclose()
