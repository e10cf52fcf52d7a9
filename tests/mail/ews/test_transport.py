"""EWS transport against a real EWS SOAP endpoint over HTTPS (tests/peers/ews_server.py)."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from dispatch.kit import PASSWORD, USER, basic_auth
from peers.connect_proxy import ConnectProxy
from peers.ews_server import EwsPeer, ews_server
from peers.smtp import PeerCerts, free_port
from peers.tokens import Tokens

from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.config.models.proxy_server import ProxyServerSpec
from reconciler.dispatch.compose import compose
from reconciler.dispatch.filters import filter_notification
from reconciler.mail.envelope import Envelope, Notification
from reconciler.mail.ews.transport import EwsTransport
from reconciler.mail.outcome import Failure, Outcome
from reconciler.oauth.source import TokenError

TOKEN = "eyJ0eXAi.ews-access-token-never-logged"


@pytest.fixture
def ews(certs: PeerCerts) -> Iterator[EwsPeer]:
    with EwsPeer(certs, user=USER, password=PASSWORD, tokens={TOKEN}) as peer:
        yield peer


def envelope(server: OutgoingServer, **fields: Any) -> Envelope:
    body: dict[str, Any] = {"module": "request", "to": ["Jane Roe <jane@corp.example>"],
                            "subject": "Ticket #42 updated", "text_body": "Status: resolved\n"}
    body.update(fields)
    notification = Notification.model_validate(body)
    return compose(notification, server, filter_notification(notification, None))


def oauth(grant: str = "authorizationCode") -> dict[str, Any]:
    return {"type": "oauth2", "provider": "microsoft", "grant": grant, "clientId": "app-1",
            "tenant": "corp.example"}


async def send(transport: EwsTransport, env: Envelope, server: OutgoingServer) -> Any:
    try:
        return await transport.send(env, server)
    finally:
        await transport.aclose()


# -- sending ------------------------------------------------------------------------------


async def test_basic_auth_send_and_save_copy(ews: EwsPeer, certs: PeerCerts) -> None:
    server = ews.server(auth=basic_auth())
    env = envelope(server, cc=["ops@corp.example"], bcc=["audit@corp.example"],
                   html_body="<p>Status: <b>resolved</b></p>")
    result = await send(EwsTransport(ca_file=certs.ca_file), env, server)

    assert result.outcome == Outcome.SENT, result.detail
    assert result.accepted == ("jane@corp.example", "ops@corp.example", "audit@corp.example")
    assert "Sent Items" in result.detail
    [sent] = ews.sent
    assert sent.disposition == "SendAndSaveCopy" and sent.saved_to == "sentitems"
    assert sent.subject == "Ticket #42 updated"
    assert sent.body_type == "HTML" and "<b>resolved</b>" in (sent.body or "")
    assert [(a.email, a.name) for a in sent.to] == [("jane@corp.example", "Jane Roe")]
    assert [a.email for a in sent.cc] == ["ops@corp.example"]
    assert [a.email for a in sent.bcc] == ["audit@corp.example"]
    assert sent.author is not None
    assert (sent.author.email, sent.author.name) == ("helpdesk@desk.example", "IT Help Desk")
    assert [a.email for a in sent.reply_to] == ["support@desk.example"]
    assert sent.internet_message_id == env.message_id
    assert sent.mailbox == "helpdesk@desk.example" and sent.impersonated is None
    assert {r.auth for r in ews.requests if r.status == 200} == {"basic"}


async def test_send_only_keeps_no_copy_and_needs_no_folder(ews: EwsPeer,
                                                           certs: PeerCerts) -> None:
    server = ews.server(auth=basic_auth(), saveToSentItems=False)
    result = await send(EwsTransport(ca_file=certs.ca_file), envelope(server), server)

    assert result.outcome == Outcome.SENT, result.detail
    [sent] = ews.sent
    assert sent.disposition == "SendOnly" and sent.saved_to is None
    assert sent.body_type == "Text" and (sent.body or "").splitlines() == ["Status: resolved"]
    assert "GetFolder" not in ews.operations()


async def test_the_account_is_reused_between_sends(ews: EwsPeer, certs: PeerCerts) -> None:
    server = ews.server(auth=basic_auth())
    transport = EwsTransport(ca_file=certs.ca_file)
    try:
        assert (await transport.send(envelope(server), server)).outcome == Outcome.SENT
        before = len(ews.requests)
        assert (await transport.send(envelope(server), server)).outcome == Outcome.SENT
    finally:
        await transport.aclose()
    # No second auth probe, version probe or folder lookup: one CreateItem.
    assert [r.operation for r in ews.requests[before:]] == ["CreateItem"]


async def test_attachments_arrive_whole(ews: EwsPeer, certs: PeerCerts) -> None:
    server = ews.server(auth=basic_auth())
    report = bytes(range(256)) * 40
    env = envelope(server, attachments=[
        {"name": "report.pdf", "content_type": "application/pdf", "data": report},
        {"name": "notes.txt", "content_type": "text/plain", "data": b"line 1\nline 2\n"},
    ])
    result = await send(EwsTransport(ca_file=certs.ca_file), env, server)

    assert result.outcome == Outcome.SENT, result.detail
    [sent] = ews.sent
    assert [(a.name, a.content_type, a.data) for a in sent.attachments] == [
        ("report.pdf", "application/pdf", report),
        ("notes.txt", "text/plain", b"line 1\nline 2\n"),
    ]


async def test_reply_threading_headers_are_kept(ews: EwsPeer, certs: PeerCerts) -> None:
    server = ews.server(auth=basic_auth())
    env = envelope(server, headers={"In-Reply-To": "<req-41@desk.example>",
                                    "References": "<req-40@desk.example> <req-41@desk.example>"})
    result = await send(EwsTransport(ca_file=certs.ca_file), env, server)

    assert result.outcome == Outcome.SENT, result.detail
    [sent] = ews.sent
    assert sent.in_reply_to == "<req-41@desk.example>"
    assert sent.references == "<req-40@desk.example> <req-41@desk.example>"


async def test_oauth_bearer_token_from_the_provider(ews: EwsPeer, certs: PeerCerts) -> None:
    server = ews.server(auth=oauth())
    transport = EwsTransport(ca_file=certs.ca_file, token_provider=lambda s: TOKEN)
    result = await send(transport, envelope(server), server)

    assert result.outcome == Outcome.SENT, result.detail
    assert {r.auth for r in ews.requests} == {"bearer"}
    assert ews.sent[0].impersonated is None  # delegated: the signed-in mailbox itself


async def test_app_only_token_impersonates_the_mailbox(ews: EwsPeer, certs: PeerCerts) -> None:
    server = ews.server(auth=oauth("clientCredentials"), mailbox="servicedesk@desk.example")
    transport = EwsTransport(ca_file=certs.ca_file, token_provider=lambda s: TOKEN)
    result = await send(transport, envelope(server), server)

    assert result.outcome == Outcome.SENT, result.detail
    assert ews.sent[0].impersonated == "servicedesk@desk.example"
    assert ews.sent[0].mailbox == "servicedesk@desk.example"


async def test_refused_token_is_invalidated_and_a_new_one_used_once(
        ews: EwsPeer, certs: PeerCerts) -> None:
    tokens = Tokens("expired-token-abc", TOKEN)
    server = ews.server(auth=oauth())
    result = await send(EwsTransport(ca_file=certs.ca_file, token_provider=tokens),
                        envelope(server), server)

    assert result.outcome == Outcome.SENT, result.detail
    assert tokens.invalidated == ["expired-token-abc"]
    assert len(ews.sent) == 1


async def test_a_token_refused_twice_is_an_auth_failure(ews: EwsPeer, certs: PeerCerts) -> None:
    tokens = Tokens("revoked-token-xyz")
    server = ews.server(auth=oauth())
    result = await send(EwsTransport(ca_file=certs.ca_file, token_provider=tokens),
                        envelope(server), server)

    assert result.outcome == Outcome.PERMANENT and result.failure == Failure.AUTH
    assert "401" in result.detail
    assert tokens.invalidated == ["revoked-token-xyz"]
    assert "revoked-token-xyz" not in result.detail


async def test_token_provider_failures_follow_their_permanence(ews: EwsPeer,
                                                               certs: PeerCerts) -> None:
    def revoked(server: Any) -> str:
        raise TokenError("the grant was revoked; run reconcile auth login", permanent=True)

    def down(server: Any) -> str:
        raise TokenError("login.microsoftonline.com did not answer")

    server = ews.server(auth=oauth())
    first = await send(EwsTransport(ca_file=certs.ca_file, token_provider=revoked),
                       envelope(server), server)
    second = await send(EwsTransport(ca_file=certs.ca_file, token_provider=down),
                        envelope(server), server)
    assert (first.outcome, first.failure) == (Outcome.PERMANENT, Failure.AUTH)
    assert "reconcile auth login" in first.detail
    assert (second.outcome, second.failure) == (Outcome.TRANSIENT, Failure.AUTH)
    assert ews.requests == []


# -- the server pushing back ------------------------------------------------------------


async def test_server_busy_back_off_then_success(ews: EwsPeer, certs: PeerCerts) -> None:
    server = ews.server(auth=basic_auth())
    ews.fail_next("CreateItem", "busy", back_off_ms=50)
    result = await send(EwsTransport(ca_file=certs.ca_file), envelope(server), server)

    assert result.outcome == Outcome.SENT, result.detail
    assert ews.operations().count("CreateItem") == 2
    assert len(ews.sent) == 1


async def test_http_503_with_retry_after_then_success(ews: EwsPeer, certs: PeerCerts) -> None:
    server = ews.server(auth=basic_auth())
    ews.fail_next("CreateItem", "http503", retry_after="1")
    result = await send(EwsTransport(ca_file=certs.ca_file), envelope(server), server)

    assert result.outcome == Outcome.SENT, result.detail
    assert [r.status for r in ews.requests if r.operation == "CreateItem"] == [503, 200]


async def test_http_503_with_a_retry_after_date_in_the_unknown_zone(
        ews: EwsPeer, certs: PeerCerts) -> None:
    # "-0000" (RFC 5322: zone unknown, read as UTC) once made the Retry-After reader raise
    # TypeError, so the send ended as an unexpected error instead of waiting and retrying.
    when = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=1)
    retry_after = format_datetime(when)
    assert retry_after.endswith("-0000")
    server = ews.server(auth=basic_auth())
    ews.fail_next("CreateItem", "http503", retry_after=retry_after)
    result = await send(EwsTransport(ca_file=certs.ca_file), envelope(server), server)

    assert result.outcome == Outcome.SENT, result.detail
    assert [r.status for r in ews.requests if r.operation == "CreateItem"] == [503, 200]


async def test_a_back_off_longer_than_the_deadline_is_left_to_the_retry_schedule(
        ews: EwsPeer, certs: PeerCerts) -> None:
    server = ews.server(auth=basic_auth())
    ews.fail_next("CreateItem", "busy", back_off_ms=600_000)
    result = await send(EwsTransport(ca_file=certs.ca_file), envelope(server), server)

    assert result.outcome == Outcome.TRANSIENT
    assert "ErrorServerBusy" in result.detail and "600s" in result.detail
    assert ews.operations().count("CreateItem") == 1 and ews.sent == []


@pytest.mark.parametrize(("code", "failure"), [
    ("ErrorMessageSizeExceeded", Failure.REJECTED),
    ("ErrorAccessDenied", Failure.AUTH),
    ("ErrorSendAsDenied", Failure.REJECTED),
])
async def test_permanent_errors_fail_at_once_with_the_response_code(
        ews: EwsPeer, certs: PeerCerts, code: str, failure: Failure) -> None:
    server = ews.server(auth=basic_auth())
    ews.fail_next("CreateItem", "error", code)
    result = await send(EwsTransport(ca_file=certs.ca_file), envelope(server), server)

    assert (result.outcome, result.failure) == (Outcome.PERMANENT, failure)
    assert code in result.detail
    assert ews.operations().count("CreateItem") == 1


async def test_invalid_recipients_are_refused_per_recipient(ews: EwsPeer,
                                                            certs: PeerCerts) -> None:
    server = ews.server(auth=basic_auth())
    ews.refuse("ghost@corp.example")
    env = envelope(server, to=["jane@corp.example", "ghost@corp.example"])
    result = await send(EwsTransport(ca_file=certs.ca_file), env, server)

    assert (result.outcome, result.failure) == (Outcome.PERMANENT, Failure.RECIPIENTS)
    assert "ErrorInvalidRecipients" in result.detail
    assert [(r.address, r.outcome, r.reason) for r in result.refused] == [
        ("jane@corp.example", Outcome.PERMANENT, "ErrorInvalidRecipients"),
        ("ghost@corp.example", Outcome.PERMANENT, "ErrorInvalidRecipients"),
    ]
    assert ews.sent == []


async def test_wrong_password_is_an_auth_failure(ews: EwsPeer, certs: PeerCerts,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EWS_WRONG_PASSWORD", "not-the-password-7731")
    server = ews.server(auth=basic_auth("EWS_WRONG_PASSWORD"))
    result = await send(EwsTransport(ca_file=certs.ca_file), envelope(server), server)

    assert (result.outcome, result.failure) == (Outcome.PERMANENT, Failure.AUTH)
    assert "401" in result.detail
    assert "not-the-password-7731" not in result.detail
    assert ews.operations().count("CreateItem") == 0


async def test_untrusted_certificate_is_permanent(ews: EwsPeer) -> None:
    server = ews.server(auth=basic_auth())
    result = await send(EwsTransport(), envelope(server), server)

    assert (result.outcome, result.failure) == (Outcome.PERMANENT, Failure.TLS_VERIFY)
    assert "not trusted" in result.detail
    assert ews.sent == []


async def test_unreachable_main_host_fails_over_to_the_alternate(ews: EwsPeer,
                                                                 certs: PeerCerts) -> None:
    closed = free_port()
    server = ews_server(closed, auth=basic_auth(), alternateHost="127.0.0.1",
                        alternatePort=ews.port)
    transport = EwsTransport(ca_file=certs.ca_file)
    result = await send(transport, envelope(server), server)

    assert result.outcome == Outcome.SENT, result.detail
    assert result.used_alternate and result.host == f"127.0.0.1:{ews.port}"
    assert f"localhost:{closed}" in result.detail
    assert transport.selector.is_down("localhost", closed)


async def test_nothing_listening_is_transient(certs: PeerCerts) -> None:
    server = ews_server(free_port(), auth=basic_auth())
    result = await send(EwsTransport(ca_file=certs.ca_file), envelope(server), server)
    assert (result.outcome, result.failure) == (Outcome.TRANSIENT, Failure.CONNECT)
    assert "refused" in result.detail


async def test_deadline_while_the_server_holds_the_request(ews: EwsPeer,
                                                           certs: PeerCerts) -> None:
    server = ews.server(auth=basic_auth(), timeoutSeconds=1)
    transport = EwsTransport(ca_file=certs.ca_file)
    try:
        # Warm up first: the deadline should hit CreateItem, not the version probe.
        assert (await transport.send(envelope(server), server)).outcome == Outcome.SENT
        with ews.hold():
            result = await transport.send(envelope(server), server)
    finally:
        await transport.aclose()
    assert (result.outcome, result.failure) == (Outcome.TRANSIENT, Failure.TIMEOUT)
    assert "may have sent" in result.detail


# -- the event loop and secrets -----------------------------------------------------------


async def test_the_event_loop_keeps_running_during_a_slow_call(ews: EwsPeer,
                                                               certs: PeerCerts) -> None:
    server = ews.server(auth=basic_auth())
    transport = EwsTransport(ca_file=certs.ca_file)
    ticks = 0
    try:
        with ews.hold() as release:
            sending = asyncio.create_task(transport.send(envelope(server), server))
            # The peer now holds CreateItem; waiting for that happens off the loop too.
            assert await asyncio.to_thread(ews.arrived.wait, 10)
            for _ in range(100):
                await asyncio.sleep(0)
                ticks += 1
            assert not sending.done()
            release.set()
            result = await sending
    finally:
        await transport.aclose()
    assert ticks == 100
    assert result.outcome == Outcome.SENT, result.detail


async def test_password_and_token_never_reach_results_or_logs(
        ews: EwsPeer, certs: PeerCerts, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "Wr0ng-pa55word-for-ews-9"
    monkeypatch.setenv("EWS_WRONG_PASSWORD", wrong)
    caplog.set_level(logging.DEBUG)  # exchangelib logs request headers at DEBUG
    results = []
    for auth, provider in [(basic_auth(), None), (basic_auth("EWS_WRONG_PASSWORD"), None),
                           (oauth(), lambda s: TOKEN), (oauth(), lambda s: "refused-" + TOKEN)]:
        server = ews.server(auth=auth, debug=True)  # the protocol trace is redacted too
        transport = EwsTransport(ca_file=certs.ca_file, token_provider=provider)
        results.append(await send(transport, envelope(server), server))
        results.append(await transport.probe(server))
    assert [getattr(r, "outcome", None) for r in results[::2]] == [
        Outcome.SENT, Outcome.PERMANENT, Outcome.SENT, Outcome.PERMANENT]
    traced = [r.getMessage() for r in caplog.records
              if r.name == "reconciler.mail.trace" and r.levelno == logging.INFO]
    assert any(line.endswith("/EWS/Exchange.asmx CreateItem") for line in traced), traced
    assert any("< 401" in line for line in traced)
    seen = caplog.text + " ".join(repr(r) for r in results)
    for secret in (PASSWORD, wrong, TOKEN):
        forms = {secret, base64.b64encode(secret.encode()).decode(),
                 base64.b64encode(f"{USER}:{secret}".encode()).decode()}
        for form in forms:
            assert form not in seen


# -- probe ---------------------------------------------------------------------------------


async def test_probe_says_reachable_or_why_not(ews: EwsPeer, certs: PeerCerts,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EWS_WRONG_PASSWORD", "nope")
    good = await EwsTransport(ca_file=certs.ca_file).probe(ews.server(auth=basic_auth()))
    bad = await EwsTransport(ca_file=certs.ca_file).probe(
        ews.server(auth=basic_auth("EWS_WRONG_PASSWORD")))
    assert good.reachable, good.detail
    assert not bad.reachable and bad.failure == Failure.AUTH and "401" in bad.detail
    assert ews.sent == []


async def test_exchange_online_is_warned_about_once(certs: PeerCerts,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    spec = {"email": "helpdesk@desk.example", "replyTo": "support@desk.example",
            "protocol": "ews", "host": "outlook.office365.com", "auth": basic_auth()}
    server = OutgoingServer.model_validate({"apiVersion": "reconciler.dev/v1",
                                            "kind": "OutgoingServer",
                                            "metadata": {"name": "eo", "namespace": "default"},
                                            "spec": spec})
    transport = EwsTransport(ca_file=certs.ca_file)
    with caplog.at_level(logging.WARNING, logger="reconciler"):
        transport.warn_exchange_online(server)
        transport.warn_exchange_online(server)
    warnings = [r for r in caplog.records if "Exchange Online" in r.getMessage()]
    assert len(warnings) == 1 and "October 2026" in warnings[0].getMessage()


# -- proxy ----------------------------------------------------------------------------------


async def test_sends_through_the_configured_proxy(ews: EwsPeer, certs: PeerCerts,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    proxy_secret = "pr0xy-s3cret/with:odd@chars"
    monkeypatch.setenv("EWS_PROXY_PASSWORD", proxy_secret)
    caplog.set_level(logging.DEBUG)
    proxy = ConnectProxy()
    spec = ProxyServerSpec.model_validate({
        "type": "http", "host": "127.0.0.1", "port": proxy.port, "username": "relay",
        "password": {"secretRef": "env:EWS_PROXY_PASSWORD"}})
    server = ews.server(auth=basic_auth(), proxy="corp-proxy")
    try:
        transport = EwsTransport(ca_file=certs.ca_file, proxy_lookup=lambda s: spec)
        result = await send(transport, envelope(server), server)
    finally:
        proxy.close()
    assert result.outcome == Outcome.SENT, result.detail
    assert proxy.tunnels and set(proxy.tunnels) == {f"localhost:{ews.port}"}
    expected = "Basic " + base64.b64encode(f"relay:{proxy_secret}".encode()).decode()
    assert set(proxy.proxy_auth) == {expected}
    assert proxy_secret not in caplog.text and expected not in caplog.text


async def test_a_proxy_that_cannot_be_looked_up_is_not_bypassed(ews: EwsPeer,
                                                                certs: PeerCerts) -> None:
    server = ews.server(auth=basic_auth(), proxy="corp-proxy")
    result = await send(EwsTransport(ca_file=certs.ca_file), envelope(server), server)
    assert (result.outcome, result.failure) == (Outcome.PERMANENT, Failure.CONFIG)
    assert "corp-proxy" in result.detail
    assert ews.requests == []
