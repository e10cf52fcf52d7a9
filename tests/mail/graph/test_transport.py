"""The Graph transport against a local Graph (tests/peers/graph_server.py) over HTTPS:
what sendMail receives, large attachments through upload sessions, the per-mailbox
limit, throttling, token refresh, permanent failures and secrets (SPEC O5, O7)."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from peers.connect_proxy import ConnectProxy, Socks5Proxy
from peers.graph_server import TOKEN, GraphPeer, graph_peers
from peers.smtp import PeerCerts
from peers.tokens import Tokens

from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.dispatch.compose import compose
from reconciler.dispatch.filters import filter_notification
from reconciler.mail.envelope import Envelope, Notification
from reconciler.mail.graph.transport import GraphTransport
from reconciler.mail.outcome import Failure, Outcome, SendResult
from reconciler.oauth.source import TokenError
from reconciler.runtime.backoff import retry_after_seconds as retry_after

STALE = "stale-token-Zq8wXc1-do-not-log"


@pytest.fixture
def graph(certs: PeerCerts) -> Iterator[Callable[..., GraphPeer]]:
    with graph_peers(certs) as make:
        yield make


def transport(certs: PeerCerts, tokens: Any = None, **kw: Any) -> GraphTransport:
    return GraphTransport(ca_file=certs.ca_file, token_provider=tokens or Tokens(TOKEN), **kw)


def envelope(server: OutgoingServer, **fields: Any) -> Envelope:
    body: dict[str, Any] = {"module": "request", "to": ["Jane Doe <jane@corp.example>"],
                            "subject": "Request ##RE-7## updated", "textBody": "hello"}
    body.update(fields)
    notification = Notification.model_validate(body)
    return compose(notification, server, filter_notification(notification, None))


async def send_once(t: GraphTransport, server: OutgoingServer) -> SendResult:
    """One plain message through ``t``, which is closed afterwards."""
    try:
        return await t.send(envelope(server), server)
    finally:
        await t.aclose()


async def test_send_mail_carries_the_message_as_graph_json(graph, certs) -> None:
    peer = graph()
    server = peer.server(saveToSentItems=False)
    t = transport(certs)
    try:
        result = await t.send(envelope(
            server, cc=["ops@corp.example"], bcc=["audit@corp.example"],
            htmlBody="<p>hello</p>", headers={"X-Ticket": "RE-7"},
            attachments=[{"name": "log.txt", "contentType": "text/plain", "data": b"line\n"}],
        ), server)
    finally:
        await t.aclose()
    assert result.outcome == Outcome.SENT, result.detail
    assert result.server_reply.startswith("202 Accepted request-id ")
    assert result.accepted == ("jane@corp.example", "ops@corp.example", "audit@corp.example")
    [mail] = peer.sent
    assert mail.via == "json" and mail.save_to_sent_items is False
    assert mail.subject == "Request ##RE-7## updated"
    assert mail.addresses("to") == ["jane@corp.example"]
    assert mail.message["toRecipients"][0]["emailAddress"]["name"] == "Jane Doe"
    assert mail.addresses("cc") == ["ops@corp.example"]
    assert mail.addresses("bcc") == ["audit@corp.example"]
    assert mail.addresses("replyTo") == ["support@corp.example"]
    assert mail.message["from"] == {"emailAddress": {"address": "desk@corp.example",
                                                     "name": "IT Help Desk"}}
    assert mail.message["body"] == {"contentType": "html",
                                    "content": "<html><body>\n<p>hello</p>\n</body></html>\n"}
    assert mail.message["internetMessageHeaders"] == [{"name": "X-Ticket", "value": "RE-7"}]
    assert mail.message["internetMessageId"].endswith("@corp.example>")
    assert mail.attachments == {"log.txt": b"line\n"}


async def test_threading_headers_go_out_as_mime_with_bcc(graph, certs) -> None:
    peer = graph()
    server = peer.server()
    t = transport(certs)
    try:
        result = await t.send(envelope(server, bcc=["audit@corp.example"],
                                       headers={"In-Reply-To": "<abc@corp.example>"}), server)
    finally:
        await t.aclose()
    assert result.outcome == Outcome.SENT, result.detail
    [mail] = peer.sent
    assert mail.via == "mime"
    assert mail.mime is not None and mail.mime["In-Reply-To"] == "<abc@corp.example>"
    assert mail.addresses("bcc") == ["audit@corp.example"]
    assert mail.subject == "Request ##RE-7## updated"


async def test_large_attachment_goes_through_an_upload_session(graph, certs) -> None:
    peer = graph()
    server = peer.server()
    big = bytes(range(256)) * (5 * 1024 * 4)  # 5 MiB
    small = b"small attachment"
    t = transport(certs)
    try:
        result = await t.send(envelope(server, attachments=[
            {"name": "dump.bin", "data": big}, {"name": "note.txt", "data": small}]), server)
    finally:
        await t.aclose()
    assert result.outcome == Outcome.SENT, result.detail
    [mail] = peer.sent
    assert mail.via == "draft"
    assert mail.attachments == {"dump.bin": big, "note.txt": small}
    puts = [r for r in peer.requests if r[0] == "PUT"]
    assert len(puts) == 2  # 5 MiB in chunks of 3.75 MiB
    assert not any(state.drafts for state in peer.mailboxes.values())
    assert "upload-secret" not in result.detail + result.server_reply


async def test_requests_in_flight_never_exceed_the_mailbox_limit(graph, certs) -> None:
    peer = graph(max_concurrent=3, service_time=0.02)
    server = peer.server(maxConcurrency=3)
    t = transport(certs)
    try:
        results = await asyncio.gather(*(t.send(envelope(server, subject=f"n{i}"), server)
                                         for i in range(24)))
    finally:
        await t.aclose()
    assert [r.outcome for r in results] == [Outcome.SENT] * 24
    assert peer.throttled == 0  # the peer never had to refuse one
    assert peer.max_in_flight["desk@corp.example"] == 3
    assert len(peer.sent) == 24


async def test_throttling_is_waited_out_with_retry_after(graph, certs) -> None:
    peer = graph(retry_after="0")
    server = peer.server()
    peer.fail_next(429, "ApplicationThrottled", "Application is over its limit.", times=2,
                   retry_after="0")
    peer.fail_next(503, "ServiceUnavailable", "Try later.", retry_after="0")
    t = transport(certs)
    try:
        result = await t.send(envelope(server), server)
        stats = t.mailbox_stats()
    finally:
        await t.aclose()
    assert result.outcome == Outcome.SENT, result.detail
    assert "429 ApplicationThrottled Retry-After 0s" in result.detail
    assert len(peer.sent) == 1
    assert peer.status_counts() == {429: 2, 503: 1, 202: 1}
    assert next(iter(stats.values())).throttled == 3


async def test_throttling_past_the_deadline_is_transient(graph, certs) -> None:
    peer = graph()
    # Past the Retry-After, yet long enough for a slow request on a busy machine.
    server = peer.server(timeoutSeconds=60)
    peer.fail_next(429, "ApplicationThrottled", "Slow down.", retry_after="120")
    t = transport(certs)
    result = await send_once(t, server)
    assert result.outcome == Outcome.TRANSIENT
    assert result.failure == Failure.REJECTED
    assert "429 ApplicationThrottled: Slow down." in result.detail
    assert peer.sent == []


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert retry_after("7") == 7.0
    assert retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True),
                       now=now) == 30.0
    assert retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True),
                       now=now) == 0.0
    assert retry_after("soon") is None
    assert retry_after(None) is None


async def test_a_refused_token_is_refreshed_once(graph, certs, caplog) -> None:
    peer = graph()
    server = peer.server()
    tokens = Tokens(STALE, TOKEN)
    t = transport(certs, tokens)
    caplog.set_level(logging.DEBUG)
    result = await send_once(t, server)
    assert result.outcome == Outcome.SENT, result.detail
    assert tokens.invalidated == [STALE]
    assert peer.tokens_seen == [STALE, TOKEN]
    assert STALE not in caplog.text and TOKEN not in caplog.text


async def test_a_token_refused_twice_fails_for_good_without_showing_it(
        graph, certs, caplog) -> None:
    peer = graph()
    server = peer.server()
    tokens = Tokens(STALE, STALE)
    t = transport(certs, tokens)
    caplog.set_level(logging.DEBUG)
    result = await send_once(t, server)
    assert result.outcome == Outcome.PERMANENT
    assert result.failure == Failure.AUTH
    assert "401 InvalidAuthenticationToken" in result.detail
    assert "even with a freshly fetched token" in result.detail
    assert tokens.invalidated == [STALE]  # once, not in a loop
    everything = result.detail + result.server_reply + caplog.text + repr(result)
    assert STALE not in everything


@pytest.mark.parametrize(("status", "code", "failure", "words"), [
    (400, "ErrorInvalidRecipients", Failure.RECIPIENTS, "Graph refused the request"),
    (403, "ErrorAccessDenied", Failure.AUTH, "Mail.Send"),
    (404, "ErrorInvalidUser", Failure.CONFIG, "spec.mailbox"),
])
async def test_permanent_answers_fail_at_once_with_the_code(graph, certs, status, code,
                                                            failure, words) -> None:
    peer = graph()
    server = peer.server()
    peer.fail_next(status, code, "The server says no.")
    t = transport(certs)
    result = await send_once(t, server)
    assert result.outcome == Outcome.PERMANENT
    assert result.failure == failure
    assert f"{status} {code}: The server says no." in result.detail
    assert words in result.detail
    assert peer.status_counts() == {status: 1}  # not retried inside the send


async def test_unknown_and_forbidden_mailboxes(graph, certs) -> None:
    peer = graph(mailboxes=("desk@corp.example", "hr@corp.example"),
                 forbidden=("hr@corp.example",))
    t = transport(certs)
    try:
        missing = await t.send(envelope(peer.server(mailbox="nobody@corp.example")),
                               peer.server(mailbox="nobody@corp.example"))
        forbidden = await t.send(envelope(peer.server(mailbox="hr@corp.example")),
                                 peer.server(mailbox="hr@corp.example"))
    finally:
        await t.aclose()
    assert (missing.outcome, missing.failure) == (Outcome.PERMANENT, Failure.CONFIG)
    assert "ErrorInvalidUser" in missing.detail
    assert (forbidden.outcome, forbidden.failure) == (Outcome.PERMANENT, Failure.AUTH)
    assert "ErrorAccessDenied" in forbidden.detail


async def test_untrusted_certificate_is_permanent(graph, certs, stranger_certs) -> None:
    peer = graph()
    server = peer.server()
    t = GraphTransport(ca_file=stranger_certs.ca_file, token_provider=Tokens(TOKEN))
    result = await send_once(t, server)
    assert (result.outcome, result.failure) == (Outcome.PERMANENT, Failure.TLS_VERIFY)
    assert peer.sent == []


async def test_nothing_listening_is_transient(graph, certs) -> None:
    peer = graph()
    server = peer.server()
    peer.stop()
    t = transport(certs)
    result = await send_once(t, server)
    assert (result.outcome, result.failure) == (Outcome.TRANSIENT, Failure.CONNECT)


async def test_token_problems(graph, certs) -> None:
    peer = graph()
    server = peer.server()

    async def revoked(_: Any) -> str:
        raise TokenError("the grant was revoked; run reconcile auth login", permanent=True)

    t = GraphTransport(ca_file=certs.ca_file, token_provider=revoked)
    none = GraphTransport(ca_file=certs.ca_file)
    try:
        failed = await t.send(envelope(server), server)
        missing = await none.send(envelope(server), server)
    finally:
        await t.aclose()
        await none.aclose()
    assert (failed.outcome, failed.failure) == (Outcome.PERMANENT, Failure.AUTH)
    assert "grant was revoked" in failed.detail
    assert (missing.outcome, missing.failure) == (Outcome.PERMANENT, Failure.CONFIG)
    assert peer.requests == []


async def test_probe_reads_the_mailbox(graph, certs) -> None:
    peer = graph()
    t = transport(certs)
    try:
        good = await t.probe(peer.server())
        missing = await t.probe(peer.server(mailbox="nobody@corp.example"))
    finally:
        await t.aclose()
    assert good.reachable, good.detail
    assert not missing.reachable and missing.step == "api"
    assert "ErrorInvalidUser" in missing.detail


async def test_a_send_past_its_deadline_frees_its_slot_for_the_next(certs) -> None:
    # The request is cancelled on the wire; Graph may still have accepted it, so the
    # result says so, and the mailbox's one slot must be usable again at once.
    with graph_peers(certs) as make:
        peer = make(service_time=1.5)
        server = peer.server(timeoutSeconds=1, maxConcurrency=1)
        t = transport(certs)
        try:
            first = await t.send(envelope(server), server)
            assert first.outcome == Outcome.TRANSIENT, first
            assert "may have accepted" in first.detail, first.detail
            peer.service_time = 0.0
            results = await asyncio.gather(*(t.send(envelope(server), server) for _ in range(5)))
            assert all(r.outcome == Outcome.SENT for r in results), results
            [stats] = t.mailbox_stats().values()
            assert stats.in_flight == 0 and stats.max_in_flight == 1, stats
        finally:
            await t.aclose()


@pytest.mark.parametrize("kind", ["http", "https", "socks5"])
async def test_a_server_behind_a_proxy_is_sent_through_it(graph, certs, kind: str,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    secret = "gr4ph-pr0xy-s3cret"
    monkeypatch.setenv("GRAPH_PROXY_PASSWORD", secret)
    caplog.set_level(logging.DEBUG)
    peer = graph()
    proxy = (Socks5Proxy() if kind == "socks5"
             else ConnectProxy(certs.server_context() if kind == "https" else None))
    spec = ProxyServerSpec.model_validate({
        "type": kind, "host": "127.0.0.1", "port": proxy.port, "username": "relay",
        "password": {"secretRef": "env:GRAPH_PROXY_PASSWORD"}})
    server = peer.server(proxy="corp-proxy")
    try:
        result = await send_once(transport(certs, proxy_lookup=lambda s: spec), server)
    finally:
        proxy.close()
    assert result.outcome == Outcome.SENT, result.detail
    assert len(peer.sent) == 1
    assert set(proxy.tunnels) == {f"127.0.0.1:{peer.port}"}
    login = f"relay:{secret}"
    expected = "Basic " + base64.b64encode(login.encode()).decode() if kind != "socks5" else login
    assert set(proxy.proxy_auth) == {expected}
    assert secret not in caplog.text and expected not in caplog.text
    assert secret not in result.detail


@pytest.mark.parametrize("kind", ["http", "socks5"])
async def test_a_proxy_that_refuses_the_tunnel_is_named_in_the_failure(graph, certs,
                                                                       kind: str) -> None:
    peer = graph()
    proxy = ConnectProxy() if kind == "http" else Socks5Proxy()
    spec = ProxyServerSpec.model_validate({"type": kind, "host": "127.0.0.1",
                                           "port": proxy.port})
    # The test proxies tunnel only to 127.0.0.1 and localhost.
    server = peer.server(proxy="corp-proxy", graphEndpoint=f"https://127.0.0.2:{peer.port}")
    try:
        result = await send_once(transport(certs, proxy_lookup=lambda s: spec), server)
    finally:
        proxy.close()
    assert result.outcome == Outcome.TRANSIENT, result.detail
    assert result.failure == Failure.CONNECT
    assert "the proxy refused the connection to 127.0.0.2" in result.detail, result.detail
    assert peer.sent == []
