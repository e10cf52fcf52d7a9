"""SmtpTransport with and without ESMTP PIPELINING (RFC 2920), against real servers.

Every scenario runs once against a server that announces PIPELINING and once
against one that does not, and the two results must be the same (outcome,
failure, detail, per-recipient results): pipelining may change how many round
trips a message takes, never what is reported. The servers are aiosmtpd (which
reads pipelined commands in order but leaves PIPELINING out of its EHLO reply,
so an EHLO hook adds it here) and Postfix's smtp-sink (announces PIPELINING
unless told ``-p``; ``-Q`` answers 421 and hangs up, ``-q`` hangs up without an
answer, ``-A`` refuses the message right after 354).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
import uvloop
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from peers.smtp import (
    HOST,
    Mode,
    PeerCerts,
    Received,
    RecordingHandler,
    free_port,
    server_spec,
)
from peers.smtp_sink import SmtpSink

from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.dispatch.compose import compose
from reconciler.dispatch.filters import filter_notification
from reconciler.mail.envelope import Envelope as MailEnvelope
from reconciler.mail.envelope import Notification
from reconciler.mail.outcome import Failure, Outcome, SendResult
from reconciler.mail.smtp.transport import SmtpTransport

PIPELINING_TRACE = "pipelining MAIL FROM"


class PipeliningHandler(RecordingHandler):
    """RecordingHandler whose server announces PIPELINING (aiosmtpd's documented EHLO hook;
    with it, aiosmtpd leaves recording the client's name to the hook)."""

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


@dataclass
class Peer:
    handler: RecordingHandler
    port: int
    mode: Mode
    pipelining: bool

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def server(self, **spec: Any) -> OutgoingServer:
        return server_spec(self.port, self.mode, **spec)


PeerMaker = Callable[..., Peer]


@pytest.fixture
def make_peer(certs: PeerCerts) -> Iterator[PeerMaker]:
    running: list[tuple[Controller, RecordingHandler]] = []

    def make(pipelining: bool, mode: Mode = "plain") -> Peer:
        handler = PipeliningHandler() if pipelining else RecordingHandler()
        port = free_port()
        kwargs: dict[str, Any] = {}
        if mode == "starttls":
            kwargs.update(tls_context=certs.server_context(), require_starttls=True)
        if mode == "tls":
            kwargs["ssl_context"] = certs.server_context()
        controller = Controller(handler, hostname=HOST, port=port, server_hostname="peer.test",
                                ready_timeout=120.0, **kwargs)
        controller.start()
        running.append((controller, handler))
        return Peer(handler, port, mode, pipelining)

    yield make
    for controller, handler in running:
        handler.release.set()
        controller.stop()


def notification(**kw: Any) -> Notification:
    body: dict[str, Any] = {"module": "request", "to": ["Jane <jane@corp.example>"],
                            "subject": "Ticket ##RE-1## updated", "text_body": "hello"}
    body.update(kw)
    return Notification.model_validate(body)


def envelope_for(server: OutgoingServer, **kw: Any) -> MailEnvelope:
    n = notification(**kw)
    return compose(n, server, filter_notification(n, None))


def transport(certs: PeerCerts) -> SmtpTransport:
    return SmtpTransport(ca_file=certs.ca_file, local_hostname="client.test", connect_timeout=30.0)


def summary(result: SendResult) -> tuple[object, ...]:
    """All of a result but the host (the two peers listen on different ports)."""
    return (result.outcome, result.failure, result.detail, result.recipients,
            result.server_reply)


def traced(caplog: pytest.LogCaptureFixture) -> bool:
    return any(PIPELINING_TRACE in r.getMessage() for r in caplog.records)


# -- the same results with and without PIPELINING (aiosmtpd) -------------------

Steer = Callable[[RecordingHandler], None]


def refuse_recipients(**replies: str) -> Steer:
    def steer(handler: RecordingHandler) -> None:
        handler.recipient_replies = {f"{k}@corp.example": v for k, v in replies.items()}
    return steer


def refuse_mail(reply: str) -> Steer:
    def steer(handler: RecordingHandler) -> None:
        handler.mail_reply = reply
    return steer


def refuse_data(reply: str) -> Steer:
    def steer(handler: RecordingHandler) -> None:
        handler.data_reply = reply
    return steer


THREE = {"to": ["jane@corp.example", "gone@corp.example"], "cc": ["full@corp.example"]}
TWO = {"to": ["gone@corp.example", "full@corp.example"]}

SCENARIOS: dict[str, tuple[Steer, dict[str, Any], Outcome, Failure | None, bool]] = {
    # name: (how the server answers, the notification, outcome, failure, connection kept)
    "all accepted": (refuse_recipients(), THREE, Outcome.SENT, None, True),
    "one refused, one deferred": (
        refuse_recipients(gone="550 5.1.1 No such user", full="452 4.2.2 Mailbox full"),
        THREE, Outcome.SENT, None, True),
    "multi-line refusal": (
        refuse_recipients(gone="550-5.1.1 No such user here\r\n550 5.1.1 try another"),
        THREE, Outcome.SENT, None, True),
    "every recipient refused, permanently": (
        refuse_recipients(gone="550 5.1.1 unknown", full="553 5.1.3 bad"),
        TWO, Outcome.PERMANENT, Failure.RECIPIENTS, True),
    "every recipient refused, one for now": (
        refuse_recipients(gone="550 5.1.1 unknown", full="450 4.2.1 busy"),
        TWO, Outcome.TRANSIENT, Failure.RECIPIENTS, True),
    "MAIL deferred": (refuse_mail("451 4.3.0 Try again later"), THREE, Outcome.TRANSIENT,
                      Failure.REJECTED, True),
    "MAIL refused": (refuse_mail("550 5.7.1 Sender not allowed"), THREE, Outcome.PERMANENT,
                     Failure.REJECTED, True),
    "MAIL 421": (refuse_mail("421 4.3.2 Service shutting down"), THREE, Outcome.TRANSIENT,
                 Failure.REJECTED, False),
    "RCPT 421 before the last": (refuse_recipients(gone="421 4.3.2 Shutting down"), THREE,
                                 Outcome.TRANSIENT, Failure.CONNECT, False),
    "RCPT 421 on the last": (refuse_recipients(full="421 4.3.2 Shutting down"), THREE,
                             Outcome.TRANSIENT, Failure.CONNECT, False),
    "message deferred": (refuse_data("451 4.3.0 Queue full"), THREE, Outcome.TRANSIENT,
                         Failure.REJECTED, True),
    "message refused": (refuse_data("554 5.7.1 Message rejected as spam"), THREE,
                        Outcome.PERMANENT, Failure.REJECTED, True),
}


async def send_and_follow_up(peer: Peer, certs: PeerCerts, steer: Steer,
                             kw: dict[str, Any]) -> tuple[SendResult, SendResult, int]:
    """The steered send, then a plain one on the same transport: the result of both and
    how many connections they took."""
    server = peer.server()
    t = transport(certs)
    try:
        steer(peer.handler)
        first = await t.send(envelope_for(server, **kw), server)
        refuse_recipients()(peer.handler)
        peer.handler.mail_reply = peer.handler.data_reply = None
        second = await t.send(envelope_for(server), server)
        return first, second, t.pool_stats()[f"{HOST}:{peer.port}"].opened
    finally:
        await t.aclose()


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_pipelined_and_one_at_a_time_report_the_same(
    name: str, make_peer: PeerMaker, certs: PeerCerts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="reconciler.mail.smtp.transport")
    caplog.set_level(logging.DEBUG, logger="reconciler.mail.trace")
    steer, kw, outcome, failure, kept = SCENARIOS[name]
    plain_first, plain_second, plain_opened = await send_and_follow_up(
        make_peer(pipelining=False), certs, steer, kw)
    assert not traced(caplog)
    piped_first, piped_second, piped_opened = await send_and_follow_up(
        make_peer(pipelining=True), certs, steer, kw)
    assert traced(caplog)

    assert summary(piped_first) == summary(plain_first)
    assert (piped_first.outcome, piped_first.failure) == (outcome, failure), piped_first.detail
    # The session is left in step: the next message goes out on the same connection,
    # unless the server said 421 (then on a new one).
    assert piped_second.outcome == plain_second.outcome == Outcome.SENT
    assert piped_opened == plain_opened == (1 if kept else 2)


async def test_per_recipient_results_when_some_are_refused(
    make_peer: PeerMaker, certs: PeerCerts
) -> None:
    peer = make_peer(pipelining=True)
    result, _, _ = await send_and_follow_up(
        peer, certs, refuse_recipients(gone="550 5.1.1 No such user",
                                       full="452 4.2.2 Mailbox full"), THREE)
    assert result.detail == "accepted for 1 of 3 recipients"
    assert [(r.address, r.outcome, r.code) for r in result.recipients] == [
        ("jane@corp.example", Outcome.SENT, 250),
        ("gone@corp.example", Outcome.PERMANENT, 550),
        ("full@corp.example", Outcome.TRANSIENT, 452),
    ]
    assert "No such user" in result.recipients[1].reason
    assert [m.rcpt_tos for m in peer.messages] == [["jane@corp.example"], ["jane@corp.example"]]


async def test_deadline_while_waiting_for_the_message_reply(
    make_peer: PeerMaker, certs: PeerCerts
) -> None:
    details = []
    for pipelining in (False, True):
        peer = make_peer(pipelining=pipelining)
        peer.handler.hang_on_data = True
        t = transport(certs)
        server = peer.server(timeoutSeconds=0.5)
        result = await t.send(envelope_for(server), server)
        await t.aclose()
        assert (result.outcome, result.failure) == (Outcome.TRANSIENT, Failure.TIMEOUT)
        details.append(result.detail)
    assert details[0] == details[1] == ("deadline of 0.5s exceeded while sending DATA; "
                                        "the server may have accepted the message")


async def test_command_timeout_of_a_pooled_connection(
    make_peer: PeerMaker, certs: PeerCerts
) -> None:
    """A connection keeps the command timeout it was opened with (the pool key has no
    timeout), so a later send with a longer deadline meets the command timeout first."""
    details = []
    for pipelining in (False, True):
        peer = make_peer(pipelining=pipelining)
        t = transport(certs)
        quick = peer.server(timeoutSeconds=0.5)
        assert (await t.send(envelope_for(quick), quick)).outcome == Outcome.SENT
        peer.handler.hang_on_data = True
        patient = peer.server(timeoutSeconds=30)
        result = await t.send(envelope_for(patient), patient)
        await t.aclose()
        peer.handler.release.set()
        assert (result.outcome, result.failure) == (Outcome.TRANSIENT, Failure.TIMEOUT)
        details.append(result.detail)
    assert details[0] == details[1]
    assert details[1].startswith("timed out while sending DATA")
    assert details[1].endswith("the server may have accepted the message")


# -- what arrives, byte for byte ----------------------------------------------


TRICKY = (b"From: helpdesk@desk.example\r\nSubject: dots\r\n\r\n"
          b".leading dot\r\n.\r\n..two dots\r\nbare lf\nbare cr\rmid.dle\r\n\r\n.\n.last")
ARRIVES = (b"From: helpdesk@desk.example\r\nSubject: dots\r\n\r\n"
           b".leading dot\r\n.\r\n..two dots\r\nbare lf\r\nbare cr\r\nmid.dle\r\n\r\n.\r\n"
           b".last\r\n")


@pytest.mark.parametrize("pipelining", [False, True])
async def test_dots_and_bare_line_ends_arrive_as_sent(
    pipelining: bool, make_peer: PeerMaker, certs: PeerCerts
) -> None:
    peer = make_peer(pipelining=pipelining)
    server = peer.server()
    t = transport(certs)
    try:
        envelope = envelope_for(server)
        assert (await t.send(replace(envelope, content=TRICKY), server)).outcome == Outcome.SENT
        composed = [
            envelope_for(server, text_body=".first\n.\n..second\nlast."),  # written as bytes
            envelope_for(server, text_body=".Grüße\n.\n",  # the email package's path
                         attachments=[{"name": "a.bin", "data": b".\r\n.\n" * 40}]),
        ]
        for env in composed:
            assert (await t.send(env, server)).outcome == Outcome.SENT
    finally:
        await t.aclose()
    assert [m.data for m in peer.messages] == [ARRIVES, *(env.as_bytes() for env in composed)]


# -- several messages on one connection, TLS, uvloop ---------------------------


async def several_in_a_row(peer: Peer, certs: PeerCerts, count: int = 5) -> int:
    """``count`` messages to two recipients each; the connections they took."""
    server = peer.server()
    t = transport(certs)
    try:
        for i in range(count):
            env = envelope_for(server, subject=f"message {i}", cc=["ops@corp.example"])
            result = await t.send(env, server)
            assert result.outcome == Outcome.SENT, result.detail
            assert result.detail == "accepted for 2 of 2 recipients"
        return t.pool_stats()[f"{HOST}:{peer.port}"].opened
    finally:
        await t.aclose()


@pytest.mark.parametrize("mode", ["plain", "starttls", "tls"])
async def test_several_messages_in_a_row_on_one_connection(
    mode: Mode, make_peer: PeerMaker, certs: PeerCerts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="reconciler.mail.smtp.transport")
    caplog.set_level(logging.DEBUG, logger="reconciler.mail.trace")
    peer = make_peer(pipelining=True, mode=mode)
    assert await several_in_a_row(peer, certs) == 1
    assert traced(caplog)
    assert [m.message["Subject"] for m in peer.messages] == [f"message {i}" for i in range(5)]
    assert all(m.tls is (mode != "plain") for m in peer.messages)


@pytest.mark.parametrize("mode", ["plain", "starttls", "tls"])
def test_pipelining_on_uvloop(mode: Mode, make_peer: PeerMaker, certs: PeerCerts) -> None:
    """The daemon runs on uvloop, whose transports are not asyncio's."""
    peer = make_peer(pipelining=True, mode=mode)
    peer.handler.recipient_replies = {"gone@corp.example": "550 5.1.1 No such user"}

    async def run() -> tuple[int, SendResult]:
        server = peer.server()
        t = transport(certs)
        try:
            refused = await t.send(envelope_for(server, to=["gone@corp.example"]), server)
            return await several_in_a_row(peer, certs, count=3), refused
        finally:
            await t.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        opened, refused = runner.run(run())
    assert opened == 1
    assert refused.failure == Failure.RECIPIENTS
    assert len(peer.messages) == 3


# -- smtp-sink: a Postfix server's answers and hang-ups ------------------------


async def sink_results(sink: SmtpSink, options: list[str], certs: PeerCerts,
                       caplog: pytest.LogCaptureFixture) -> list[tuple[object, ...]]:
    """Send with and without PIPELINING (-p) under the same faults; the two summaries."""
    summaries = []
    for extra in ([], ["-p"]):
        caplog.clear()
        await asyncio.to_thread(sink.restart, [*options, *extra])
        server = server_spec(sink.port)
        t = transport(certs)
        try:
            env = envelope_for(server, cc=["ops@corp.example"])
            summaries.append(summary(await t.send(env, server)))
        finally:
            await t.aclose()
        assert traced(caplog) == (not extra)
    return summaries


@pytest.mark.parametrize(("options", "outcome", "failure", "detail"), [
    ([], Outcome.SENT, None, "accepted for 2 of 2 recipients"),
    (["-Q", "MAIL"], Outcome.TRANSIENT, Failure.REJECTED, "421 4.0.0 Server closing connection"
     " (while sending MAIL FROM)"),
    (["-Q", "RCPT"], Outcome.TRANSIENT, Failure.CONNECT,
     "connection lost while sending RCPT TO (Server not connected)"),
    (["-Q", "DATA"], Outcome.TRANSIENT, Failure.REJECTED, "421 4.0.0 Server closing connection"
     " (while sending DATA)"),
    (["-q", "MAIL"], Outcome.TRANSIENT, Failure.CONNECT,
     "connection lost while sending MAIL FROM (Unexpected EOF received)"),
    (["-q", "RCPT"], Outcome.TRANSIENT, Failure.CONNECT,
     "connection lost while sending RCPT TO (Unexpected EOF received)"),
    (["-q", "DATA"], Outcome.TRANSIENT, Failure.CONNECT,
     "connection lost while sending DATA (Unexpected EOF received); "
     "the server may have accepted the message"),
    (["-q", "."], Outcome.TRANSIENT, Failure.CONNECT,
     "connection lost while sending DATA (Unexpected EOF received); "
     "the server may have accepted the message"),
])
async def test_smtp_sink_faults(
    options: list[str], outcome: Outcome, failure: Failure | None, detail: str,
    smtp_sink: SmtpSink, certs: PeerCerts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="reconciler.mail.smtp.transport")
    caplog.set_level(logging.DEBUG, logger="reconciler.mail.trace")
    piped, one_at_a_time = await sink_results(smtp_sink, options, certs, caplog)
    assert piped == one_at_a_time
    assert piped[:3] == (outcome, failure, detail)


async def test_smtp_sink_several_messages_on_one_connection(
    smtp_sink: SmtpSink, certs: PeerCerts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="reconciler.mail.smtp.transport")
    caplog.set_level(logging.DEBUG, logger="reconciler.mail.trace")
    server = server_spec(smtp_sink.port)
    t = transport(certs)
    try:
        results = [await t.send(envelope_for(server, subject=f"m{i}", cc=["ops@corp.example"]),
                                server) for i in range(20)]
        stats = t.pool_stats()[f"{HOST}:{smtp_sink.port}"]
    finally:
        await t.aclose()
    assert [r.outcome for r in results] == [Outcome.SENT] * 20
    assert (stats.opened, stats.reused) == (1, 19)
    assert traced(caplog)


async def test_smtp_sink_refusing_right_after_354(
    smtp_sink: SmtpSink, certs: PeerCerts
) -> None:
    """``-A 0``: 354, then at once 550 and no more reading. Pipelined, the 550 is read
    and reported; one command at a time, aiosmtplib drops a reply that arrives before
    it waits for one, and sees only the connection close (so the two differ here)."""
    await asyncio.to_thread(smtp_sink.restart, ["-A", "0"])
    server = server_spec(smtp_sink.port)
    t = transport(certs)
    try:
        result = await t.send(envelope_for(server), server)
    finally:
        await t.aclose()
    assert (result.outcome, result.failure) == (Outcome.PERMANENT, Failure.REJECTED)
    assert result.detail == "550 This violates SMTP (while sending DATA)"
